"""``fleetbench submit / watch / runs / cancel / artifacts`` end to end: each command a
subprocess, against a ``fleetbench serve --port 0`` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from client_support import sha256

from tests.conftest import FleetDir
from tests.server_support import DEADLINE_S, ROOT, ServeProcess, fast_fleet, slow_fleet, start_serve


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLEETBENCH_SERVER", "FLEETBENCH_AUTH_TOKEN")}
    env["COLUMNS"] = "250"  # wide enough that rich never shortens a run id
    env.update(extra)
    return env


async def fleetbench(*args: str, **env: str) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetbench", *args, cwd=ROOT, env=_environment(**env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE_S * 2)
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    process = await start_serve(tmp_path)
    try:
        yield process
    finally:
        await process.kill()


async def test_submit_watch_runs_artifacts(fleet_dir: FleetDir, serve: ServeProcess,
                                           tmp_path: Path) -> None:
    server = ("--server", serve.address)
    manifest = str(fast_fleet(fleet_dir).write())

    submitted = await fleetbench("submit", manifest, *server, "--label", "team=sim", "--json")
    assert submitted.code == 0, submitted.err
    started = submitted.json()
    assert started["created"] is True
    run_id = started["run"]["run_id"]
    assert started["run"]["labels"] == {"team": "sim"}
    assert started["run"]["progress"]["planned"] == 32

    again = await fleetbench("submit", manifest, *server, "--watch")
    assert again.code == 0, again.err
    assert f"run {run_id} already exists" in again.out
    assert f"run {run_id}: COMPLETED, 32/32 tests done" in again.out

    watched = await fleetbench("watch", run_id, *server)
    assert watched.code == 0, watched.err
    assert "Results by provider" in watched.out or "COMPLETED" in watched.out
    assert f"run {run_id}: COMPLETED" in watched.out

    listed = await fleetbench("runs", *server, "--json")
    assert listed.code == 0, listed.err
    assert [r["run_id"] for r in listed.json()] == [run_id]
    table = await fleetbench("runs", "--fleet", "test-fleet", "--status", "completed",
                             FLEETBENCH_SERVER=serve.address)  # the address from the env
    assert table.code == 0, table.err
    assert run_id in table.out
    none = await fleetbench("runs", *server, "--status", "running", "--json")
    assert none.json() == []

    dest = tmp_path / "downloaded"
    downloaded = await fleetbench("artifacts", run_id, *server, "--dest", str(dest), "--json")
    assert downloaded.code == 0, downloaded.err
    files = downloaded.json()
    assert {"fleet_results.json", "results.jsonl", "manifest.json"} <= {f["name"] for f in files}
    for entry in files:
        assert sha256(Path(entry["path"])) == entry["sha256"]
        assert Path(entry["path"]).parent == dest

    plain = await fleetbench("artifacts", run_id, *server, "--dest", str(tmp_path / "again"),
                             "--name", "results.jsonl")
    assert plain.code == 0, plain.err
    assert "results.jsonl" in plain.out
    assert [p.name for p in (tmp_path / "again").iterdir()] == ["results.jsonl"]


async def test_submit_watch_follows_live_and_cancel(fleet_dir: FleetDir, serve: ServeProcess,
                                                    ) -> None:
    server = ("--server", serve.address)
    manifest = str(slow_fleet(fleet_dir, latency_ms=20).write())

    watched = await fleetbench("submit", manifest, *server, "--run-key", "live", "--watch")
    assert watched.code == 0, watched.err
    assert "created run" in watched.out
    assert "COMPLETED, 32/32 tests done" in watched.out
    assert "simulated:fast" in watched.out  # the provider table

    slow = str(slow_fleet(fleet_dir, latency_ms=500).write("slow.json"))
    submitted = await fleetbench("submit", slow, *server, "--json")
    run_id = submitted.json()["run"]["run_id"]
    cancelled = await fleetbench("cancel", run_id, *server, "--reason", "enough")
    assert cancelled.code == 0, cancelled.err
    assert f"run {run_id}: CANCELLED" in cancelled.out
    watched = await fleetbench("watch", run_id, *server)
    assert watched.code == 130, watched.err
    assert "CANCELLED" in watched.out
    as_json = await fleetbench("cancel", run_id, *server, "--json")
    assert as_json.json()["error_message"] == "enough"  # an ended run stays as it was


async def test_errors_and_their_exit_codes(fleet_dir: FleetDir, serve: ServeProcess) -> None:
    server = ("--server", serve.address)
    fleet_dir.manifest["version"] = "2.0"
    fleet_dir.manifest["repositories"][1]["repo_id"] = "api-gateway"
    bad = await fleetbench("submit", str(fleet_dir.write()), *server)
    assert bad.code == 2
    assert "error: version:" in bad.err
    assert "error: repositories[1].repo_id:" in bad.err
    assert "Traceback" not in bad.err

    unknown = await fleetbench("watch", "nope-000000000000", *server)
    assert unknown.code == 2
    assert "NOT_FOUND" in unknown.err

    nowhere = await fleetbench("runs", "--server", "127.0.0.1:1")
    assert nowhere.code == 4
    assert "cannot reach the fleetbench server at 127.0.0.1:1" in nowhere.err


async def test_token_and_environment(fleet_dir: FleetDir, tmp_path: Path) -> None:
    serve = await start_serve(tmp_path, env={"FLEETBENCH_AUTH_TOKEN": "s3cret"})
    try:
        refused = await fleetbench("runs", "--server", serve.address)
        assert refused.code == 4
        assert "UNAUTHENTICATED" in refused.err
        wrong = await fleetbench("runs", "--server", serve.address, "--token", "nope")
        assert wrong.code == 4
        flagged = await fleetbench("runs", "--server", serve.address, "--token", "s3cret",
                                   "--json")
        assert flagged.code == 0, flagged.err
        manifest = str(fast_fleet(fleet_dir).write())
        from_env = await fleetbench("submit", manifest, "--watch", "--json",
                                    FLEETBENCH_SERVER=serve.address,
                                    FLEETBENCH_AUTH_TOKEN="s3cret")
        assert from_env.code == 0, from_env.err
        assert from_env.json()["run"]["status"] == "RUN_STATUS_COMPLETED"
    finally:
        await serve.kill()
