"""``--executor`` on ``fleetbench run`` and ``fleetbench serve``: a driver process and a
gRPC server that run their fleets on the session's Ray cluster."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleetbench_client import AsyncFleetBenchClient
from ray_support import KEY, NODE_KEY_ENV, fake_vendor_entry, live_actors, write_fleet

from fleetbench._manifest import manifest_problems
from fleetbench._plugins import PluginHost
from fleetbench._server._app import FleetBenchServer
from fleetbench._server._config import ServerConfig
from fleetbench.testing import FakeVendorServer


def _fleetbench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetbench", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=300)


def test_fleetbench_run_executor_ray_runs_on_the_cluster_ray_address_names(
        ray_cluster: str, tmp_path: Path) -> None:
    provider = {"id": "simulated:s", "params": {"seed": 5, "latency_ms": 5, "accuracy": 0.8}}
    path = write_fleet(tmp_path, [provider], tests=20, global_settings={"ray_actors": 2})
    env = {**os.environ, "FLEETBENCH_STATE_DIR": str(tmp_path / "state"),
           "FLEETBENCH_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ray_cluster}
    done = _fleetbench("run", "--json", "--executor", "ray", str(path), env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed"
    assert report["fleet"]["total"] == 20
    local = _fleetbench("run", "--json", "--executor", "local", str(path), env=env)
    assert json.loads(local.stdout)["created"] is False  # same run id: it is the same run

    keyless = write_fleet(tmp_path / "keyless", [fake_vendor_entry(
        "http://127.0.0.1:9/v1", api_key_env="FLEETBENCH_DRIVER_ONLY_KEY")])
    failed = _fleetbench("run", "--quiet", "--executor", "ray", str(keyless),
                         env={**env, "FLEETBENCH_DRIVER_ONLY_KEY": KEY})
    assert failed.returncode == 1
    # Every actor lacks the key; whichever reports first names itself.
    assert re.match(r"error: actor \d+ failed on node 127\.0\.0\.1: ManifestError: "
                    r"providers\[0\]\.api_key_env: environment variable "
                    r"FLEETBENCH_DRIVER_ONLY_KEY is not set", failed.stderr), failed.stderr
    assert "Traceback" not in failed.stderr

    unknown = _fleetbench("run", "--executor", "rey", str(path), env=env)
    assert unknown.returncode == 2
    assert "--executor: unknown executor 'rey'; did you mean 'ray'?" in unknown.stderr
    serve = _fleetbench("serve", "--executor", "rey", "--port", "0", env=env)
    assert serve.returncode == 2
    assert "unknown executor 'rey'" in serve.stderr


def test_a_killed_driver_takes_its_actors_along_and_the_run_resumes(
        ray_cluster: str, tmp_path: Path) -> None:
    provider = {"id": "simulated:s", "concurrency": 2,
                "params": {"seed": 6, "latency_ms": 50, "output_tokens": 5}}
    path = write_fleet(tmp_path, [provider], tests=60, fleet_id="ray-crash",
                       global_settings={"ray_actors": 2})
    env = {**os.environ, "FLEETBENCH_STATE_DIR": str(tmp_path / "state"),
           "FLEETBENCH_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ray_cluster}
    child = subprocess.Popen(
        [sys.executable, "-m", "fleetbench", "run", "--quiet", "--executor", "ray",
         str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = tmp_path / "state" / "runs.sqlite3"
    deadline = time.monotonic() + 60
    done = 0
    while done < 6:
        assert child.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline, "no results stored within 60 s"
        if database.exists():
            with contextlib.suppress(sqlite3.OperationalError), \
                    sqlite3.connect(database) as conn:  # the schema may not exist yet
                done = conn.execute("SELECT count(*) FROM results").fetchone()[0]
        time.sleep(0.05)
    assert live_actors("ray-crash-")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    while live_actors("ray-crash-"):  # Ray ends the dead driver's actors
        assert time.monotonic() < deadline + 30, "the dead driver's actors live on"
        time.sleep(0.05)
    resumed = _fleetbench("run", "--json", "--executor", "ray", str(path), env=env)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    rows = [json.loads(line) for line in
            (Path(report["output_dir"]) / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["key"] for r in rows}) == 60 == report["fleet"]["total"]


def test_a_ray_client_address_runs_the_fleet_through_ray_client(
        ray_cluster: str, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the Ray Client server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "ray.util.client.server", "--mode", "legacy", "--host",
         "127.0.0.1", "--port", str(port), "--address", ray_cluster],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_listening(port)
        provider = {"id": "simulated:s", "params": {"seed": 5, "latency_ms": 5}}
        path = write_fleet(tmp_path, [provider], tests=20, global_settings={
            "ray_actors": 2, "ray_address": f"ray://127.0.0.1:{port}"})
        env = {**os.environ, "FLEETBENCH_STATE_DIR": str(tmp_path / "state"),
               "FLEETBENCH_CACHE_DIR": str(tmp_path / "cache")}
        done = _fleetbench("run", "--json", "--executor", "ray", str(path), env=env)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["fleet"]["passed"]) == ("completed", 20)
    assert not any("event-loop lag" in w for w in report["warnings"])  # timed in the actors
    assert done.stderr == ""


def _wait_until_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")
        time.sleep(0.1)


@pytest.mark.usefixtures("ray_cluster")
async def test_fleetbench_serve_executor_ray_runs_every_fleet_on_ray(
        host: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NODE_KEY_ENV, KEY)  # the server (the driver) checks the key too
    config = ServerConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", port=0,
                          data_roots=(tmp_path,), shutdown_grace_s=5.0, executor="ray")
    async with FakeVendorServer("openai", latency_ms=100, api_key=KEY) as vendor:
        path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url, concurrency=2)],
                           tests=8)
        server = FleetBenchServer(config, host=host)
        await server.start()
        try:
            async with AsyncFleetBenchClient(server.address) as client:
                started = await client.start_run(path)
                await vendor.wait_for_requests(1)
                assert live_actors()  # the requests come from the run's Ray actors
                run = await client.wait(started.run.run_id, timeout_s=60)
        finally:
            await server.stop(grace_s=2.0)
    assert run.progress.done == 8
    assert vendor.requests == 8


@pytest.mark.parametrize(("settings", "location", "message"), [
    ({"ray_address": "http://head:8265"}, "global_settings.ray_address",
     "'http://head:8265' is not a Ray address: use 'auto', 'local', 'ray://host:port' or "
     "'host:port'"),
    ({"ray_actors": 0}, "global_settings.ray_actors", "greater than or equal to 1"),
])
def test_ray_settings_are_validated_with_their_location(
        tmp_path: Path, settings: dict[str, object], location: str, message: str) -> None:
    path = write_fleet(tmp_path, [{"id": "simulated:s"}], global_settings=settings)
    manifest, problems = manifest_problems(json.loads(path.read_text()))
    assert manifest is None
    assert [p.location for p in problems] == [location]
    assert message in problems[0].message


def test_ray_addresses_of_every_documented_form_are_accepted(tmp_path: Path) -> None:
    for address in ("auto", "local", "ray://head.example:10001", "10.0.0.5:6379",
                    "ray://[::1]:10001"):
        path = write_fleet(tmp_path, [{"id": "simulated:s"}],
                           global_settings={"ray_address": address})
        manifest, problems = manifest_problems(json.loads(path.read_text()))
        assert problems == []
        assert manifest is not None
        assert manifest.global_settings.ray_address == address
