"""The export worker: a real ``python -m fleetbench._exportworker`` process writing a run's
artifacts while it executes, compared with the in-process export of the same stored run.

Runs are small here; ``export_worker_min_tests`` forces the worker path (the default
threshold is thousands of tests). Nothing of ours is mocked: processes, pipes and the run
store are real, and every wait is bounded by a deadline or a pipe event.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetbench._export import run_info_from_json, run_info_to_json
from fleetbench._exportworker import EXIT_ABANDONED
from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore
from fleetbench.events import TestFinished
from fleetbench.plugin import (
    ExporterSpec,
    Provider,
    ProviderSpec,
    RunInfo,
    hookimpl,
)
from fleetbench.records import (
    ProviderRequest,
    ProviderResponse,
    RunStatus,
    Summary,
    TestResult,
    Usage,
)

from .conftest import FleetDir

ALWAYS = 0  # export_worker_min_tests that puts every run on the worker path
NEVER = 10**9
BYTE_IDENTICAL = ("results.jsonl", "providers.csv", "categories.csv", "repositories.csv")
TIMESTAMPS = {"timestamp", "finished_at", "total_duration_ms"}
DEADLINE_S = 60


async def _run(fleet: FleetDir, host: PluginHost, state: Path, **kwargs: Any) -> RunOutcome:
    prepared = prepare_file(fleet.write(), host=host, cache_dir=state.parent / "cache")
    with RunStore(state) as store:
        return await execute_run(prepared, host=host, store=store, **kwargs)


def _reopen(state: Path, run_id: str) -> None:
    """Make a finished run runnable again, so that the next start only re-exports it."""
    with RunStore(state) as store:
        store.set_status(run_id, RunStatus.INTERRUPTED)


def _artifacts(outcome: RunOutcome) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in outcome.artifacts}


def _without(data: Any, keys: set[str]) -> Any:
    """``data`` without ``keys`` at any depth."""
    if isinstance(data, dict):
        return {k: _without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, keys) for v in data]
    return data


def _warnings(document: bytes) -> list[str]:
    """The run's warnings minus the client-lag one, which depends on the machine."""
    return [w for w in json.loads(document)["metadata"]["warnings"] if "bottleneck" not in w]


def _assert_same_export(by_worker: dict[str, bytes], in_process: dict[str, bytes]) -> None:
    assert set(by_worker) == set(in_process)
    for name in BYTE_IDENTICAL:
        assert by_worker[name] == in_process[name], name
    assert _warnings(by_worker["fleet_results.json"]) == \
        _warnings(in_process["fleet_results.json"])
    first, second = (_without(json.loads(a["fleet_results.json"]), TIMESTAMPS | {"warnings"})
                     for a in (by_worker, in_process))
    assert first == second


def _debris(folder: Path) -> list[str]:
    """Temporary files and spool folders exporters leave when they do not finish."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ same artifacts


async def test_the_worker_writes_what_the_in_process_export_writes(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 1},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "simulated:slow", "params": {"zero_latency": True, "seed": 2, "accuracy": 0.5,
                                            "error_rate": 0.2}}]
    fleet_dir.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
    state = tmp_path / "state"
    by_worker = await _run(fleet_dir, host, state, export_worker_min_tests=ALWAYS)
    assert by_worker.status is RunStatus.COMPLETED
    assert not [w for w in by_worker.warnings if "export worker" in w]
    worker_files = _artifacts(by_worker)
    assert len(worker_files["results.jsonl"].splitlines()) == 32
    _reopen(state, by_worker.run_id)
    in_process = await _run(fleet_dir, host, state, export_worker_min_tests=NEVER)
    counts = [(o.summary.fleet.total, o.summary.fleet.passed, o.summary.fleet.error)
              for o in (by_worker, in_process)]
    assert counts[0] == counts[1]
    _assert_same_export(worker_files, _artifacts(in_process))
    assert _debris(by_worker.output_dir) == []


# ------------------------------------------------- a cancelled run, then its resume


class _Gated(Provider):
    """Answers at once, except the tests in ``held``, which wait for ``release``."""

    held: set[str] = set()
    release: asyncio.Event | None = None

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        cls = type(self)
        if request.test_key in cls.held and cls.release is not None:
            await cls.release.wait()
        return ProviderResponse(request.expected or "ok", Usage(3, 2), "stop")


class _CancelAfter:
    """Cancels the run once ``count`` results were published."""

    def __init__(self, cancel: asyncio.Event, count: int) -> None:
        self.cancel, self.count, self.seen = cancel, count, 0

    async def handle(self, events: Sequence[Any]) -> None:
        self.seen += sum(isinstance(e, TestFinished) for e in events)
        if self.seen >= self.count:
            self.cancel.set()


@pytest.fixture
def gated_host() -> PluginHost:
    _Gated.held, _Gated.release = set(), None

    @hookimpl
    def fleetbench_register_providers() -> list[ProviderSpec]:
        return [ProviderSpec("gated", _Gated)]

    plugin = SimpleNamespace(FLEETBENCH_PLUGIN_API_VERSION=1,
                             fleetbench_register_providers=fleetbench_register_providers)
    return load_plugins(env={}, extra_plugins=[("gated", plugin)])


async def test_a_cancelled_run_exports_every_stored_result_across_its_gaps(
        fleet_dir: FleetDir, gated_host: PluginHost, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [{"id": "gated:m", "concurrency": 4}]
    fleet_dir.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
    state = tmp_path / "state"
    plan = prepare_file(fleet_dir.write(), host=gated_host, cache_dir=tmp_path / "cache").plan
    _Gated.held, _Gated.release = {plan.items[0].key}, asyncio.Event()  # never released
    cancel = asyncio.Event()
    cancelled = await _run(fleet_dir, gated_host, state, cancel=cancel,
                           subscribers=[("stop", _CancelAfter(cancel, 6))],
                           export_worker_min_tests=ALWAYS)
    assert cancelled.status is RunStatus.CANCELLED
    with RunStore(state) as store:
        stored = [r.key for r in store.iter_results_in_plan_order(cancelled.run_id)]
    assert plan.items[0].key not in stored  # a gap before every stored result
    lines = cancelled.output_dir.joinpath("results.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == stored
    assert len(stored) == cancelled.summary.fleet.total >= 6
    document = json.loads(cancelled.output_dir.joinpath("fleet_results.json").read_bytes())
    assert (document["status"], document["metadata"]["warnings"][-1]) == \
        ("cancelled", "cancelled")
    assert _debris(cancelled.output_dir) == []

    # The resume starts its worker with results already stored.
    _Gated.held = set()
    resumed = await _run(fleet_dir, gated_host, state, export_worker_min_tests=ALWAYS)
    assert (resumed.status, resumed.summary.fleet.total) == (RunStatus.COMPLETED, 16)
    worker_files = _artifacts(resumed)
    _reopen(state, resumed.run_id)
    in_process = await _run(fleet_dir, gated_host, state, export_worker_min_tests=NEVER)
    _assert_same_export(worker_files, _artifacts(in_process))


# ------------------------------------------------------- a failing worker, a dead run


class _Memo:
    """An exporter only the run's process has (registered here, not as an entry point),
    so the worker cannot build it. Records the runs it is given."""

    runs: list[tuple[str, RunInfo]] = []

    def open(self, run: RunInfo) -> None:
        self.runs.append(("open", run))

    def write(self, result: TestResult) -> None:
        pass

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        self.runs.append(("finalize", run))
        path = run.output_dir / "memo.txt"
        path.write_text(f"{run.status} {summary.fleet.total}\n")
        return [path]


async def test_a_worker_failing_to_start_becomes_a_warning_and_the_export_is_done_in_process(
        fleet_dir: FleetDir, tmp_path: Path) -> None:
    @hookimpl
    def fleetbench_register_exporters() -> list[ExporterSpec]:
        return [ExporterSpec("memo", _Memo)]

    _Memo.runs = []
    plugin = SimpleNamespace(FLEETBENCH_PLUGIN_API_VERSION=1,
                             fleetbench_register_exporters=fleetbench_register_exporters)
    host = load_plugins(env={}, extra_plugins=[("memo", plugin)])
    fleet_dir.manifest["providers"] = [{"id": "simulated:fast",
                                        "params": {"zero_latency": True}}]
    fleet_dir.manifest["output"].update(formats=["jsonl", "memo"], generate_reports=False)
    outcome = await _run(fleet_dir, host, tmp_path / "state", export_worker_min_tests=ALWAYS)
    assert outcome.status is RunStatus.COMPLETED
    # The worker fails before it opens its exporters: the run notices before executing.
    (warning,) = [w for w in outcome.warnings if "export worker did not start" in w]
    assert "exporter 'memo' is not installed" in warning
    assert {p.name for p in outcome.artifacts} == {"manifest.json", "results.jsonl",
                                                   "memo.txt"}
    assert outcome.output_dir.joinpath("memo.txt").read_text() == "completed 16\n"
    (_, opened), (_, final) = _Memo.runs
    assert (opened.status, opened.finished_at) == ("running", None)
    assert final.status == "completed"
    assert final.finished_at is not None
    assert warning in final.warnings
    assert _debris(outcome.output_dir) == []


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
async def test_a_worker_dying_mid_run_becomes_a_warning_and_the_export_is_done_in_process(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    killed: list[int] = []

    class Killer:
        """Kills the export worker (started and ready before any test ran) at the first
        results."""

        async def handle(self, events: Sequence[Any]) -> None:
            if not killed and any(isinstance(e, TestFinished) for e in events):
                for pid in _worker_pids(state):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    fleet_dir.manifest["providers"] = [{"id": "simulated:fast",
                                        "params": {"zero_latency": True}}]
    fleet_dir.manifest["output"].update(formats=["jsonl"], generate_reports=False)
    outcome = await _run(fleet_dir, host, state, export_worker_min_tests=ALWAYS,
                         subscribers=[("killer", Killer())])
    assert len(killed) == 1
    assert outcome.status is RunStatus.COMPLETED
    (warning,) = [w for w in outcome.warnings if "export worker failed" in w]
    assert "exported in-process" in warning
    lines = outcome.output_dir.joinpath("results.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(16))
    assert _debris(outcome.output_dir) == []


def _open_message(output_dir: Path, run_id: str) -> bytes:
    run = RunInfo(run_id=run_id, fleet_id="test-fleet", status="running", output_dir=output_dir,
                  manifest={}, created_at="2025-03-01T10:00:00Z", started_at=None,
                  finished_at=None, planned=32, save_responses=True, pricing_version=None)
    assert run_info_from_json(run_info_to_json(run)) == run
    message = {"open": run_info_to_json(run), "exporters": ["json", "jsonl", "csv"]}
    return json.dumps(message).encode() + b"\n"


def test_the_worker_abandons_the_export_when_its_input_ends(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [{"id": p, "params": {"zero_latency": True}}
                                       for p in ("simulated:fast", "simulated:slow")]
    state = tmp_path / "state"
    stored = asyncio.run(_run(fleet_dir, host, state))
    output = tmp_path / "abandoned"
    with subprocess.Popen(
            [sys.executable, "-m", "fleetbench._exportworker", "--state-dir", str(state),
             "--run-id", stored.run_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL) as worker:
        assert worker.stdin is not None
        assert worker.stdout is not None
        try:
            worker.stdin.write(_open_message(output, stored.run_id))
            worker.stdin.flush()
            # Ready (exporters open), then its first catch-up writes every stored result
            # (the run is complete there).
            assert json.loads(worker.stdout.readline()) == {"exported": 0}
            assert json.loads(worker.stdout.readline()) == {"exported": 32}
            assert _debris(output)  # a temporary results.jsonl, fleet_results.json's spool
            worker.stdin.close()  # what the run's process dying looks like from here
            assert worker.wait(timeout=DEADLINE_S) == EXIT_ABANDONED
        finally:
            if worker.poll() is None:
                worker.kill()
    assert os.listdir(output) == []  # no artifact, no temporary file


def _worker_pids(state: Path) -> list[int]:
    """Live export workers of the run store in ``state`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = entry.joinpath("cmdline").read_bytes().split(b"\0")
            status = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # it ended meanwhile
        if b"fleetbench._exportworker" in command and str(state).encode() in command \
                and status != "Z":
            pids.append(int(entry.name))
    return pids


def _wait_until_gone(pid: int, deadline: float) -> None:
    """Wait for a process that is not our child to end: on its pidfd, which becomes
    readable when it exits (or by polling /proc where pidfds are missing)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd support: poll
        while time.monotonic() < deadline and pid in _worker_pids(Path("/")):
            pass
        return
    try:
        select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)


def _stored_results(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database) as conn:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # the schema may not exist yet
        return 0


_RUNNER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from fleetbench._plugins import load_plugins
    from fleetbench._prepare import prepare_file
    from fleetbench._runner import execute_run
    from fleetbench._store import RunStore

    async def main(manifest: str, state: str) -> None:
        host = load_plugins(env={})
        prepared = prepare_file(Path(manifest), host=host, cache_dir=Path(state) / "cache")
        with RunStore(Path(state)) as store:
            await execute_run(prepared, host=host, store=store, export_worker_min_tests=0)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_the_worker_of_a_killed_run_exits_without_leaving_anything(
        fleet_dir: FleetDir, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [
        {"id": "simulated:steady", "concurrency": 4,
         "params": {"latency_ms": 15, "output_tokens": 5}}]
    fleet_dir.manifest["scenario_profiles"]["coding"]["repeat"] = 8
    fleet_dir.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
    state = tmp_path / "state"
    run = subprocess.Popen([sys.executable, "-c", _RUNNER, str(fleet_dir.write()), str(state)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + DEADLINE_S
    workers: list[int] = []
    while time.monotonic() < deadline and not (workers and
                                               _stored_results(state / "runs.sqlite3") >= 20):
        assert run.poll() is None, "the run ended before it was killed"
        workers = _worker_pids(state)
    run.send_signal(signal.SIGKILL)
    _, stderr = run.communicate(timeout=DEADLINE_S)
    assert len(workers) == 1, stderr
    _wait_until_gone(workers[0], deadline)
    assert _worker_pids(state) == [], "the worker outlived its run"
    (output,) = (tmp_path / "out").iterdir()
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "run.json"]


# ------------------------------------------------------------------ fair scheduling


async def test_instant_tests_finish_close_to_plan_order(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    # The worker can write a result only once every earlier one in plan order is stored;
    # if one provider's workers ran far ahead of another's, it would wait until the end.
    fleet_dir.manifest["providers"] = [
        {"id": f"simulated:m{n}", "concurrency": 4, "params": {"zero_latency": True}}
        for n in range(2)]
    fleet_dir.manifest["scenario_profiles"]["coding"]["repeat"] = 20
    order: list[int] = []

    class Order:
        async def handle(self, events: Sequence[Any]) -> None:
            order.extend(e.result.item.index for e in events if isinstance(e, TestFinished))

    outcome = await _run(fleet_dir, host, tmp_path / "state", subscribers=[("o", Order())])
    assert sorted(order) == list(range(outcome.summary.fleet.total))
    assert max(abs(finished - index) for finished, index in enumerate(order)) <= 2 * 8


def test_run_info_round_trips_through_json(tmp_path: Path) -> None:
    run = RunInfo(run_id="r", fleet_id="f", status="completed", output_dir=tmp_path,
                  manifest={"a": [1, 2.5, None]}, created_at="c", started_at="s",
                  finished_at="e", planned=3, save_responses=False, pricing_version="p",
                  repositories={"repo": {"team": "x"}}, plugins={"p": "1"},
                  warnings=("w1", "w2"))
    assert run_info_from_json(json.loads(json.dumps(run_info_to_json(run)))) == run
    assert replace(run, warnings=["w1", "w2"]) != run  # warnings come back as a tuple
    with pytest.raises(ValueError, match="not a run"):
        run_info_from_json({"run_id": "r"})
