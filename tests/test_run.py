"""The run engine end to end: executor, bus, store, aggregator and exporters together."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._serialize import result_from_dict
from fleetbench._store import RunStore
from fleetbench.errors import ManifestError, RateLimitedError, TransientProviderError
from fleetbench.plugin import Provider, ProviderSpec, SubscriberSpec, hookimpl
from fleetbench.records import ProviderRequest, ProviderResponse, RunStatus, Status, Usage

from .conftest import FleetDir

TIMING_FIELDS = {"queue_ms", "latency_ms", "ttft_ms", "itl_ms", "total_ms", "started_at",
                 "finished_at"}


def _zero_latency(fleet: FleetDir, **params: Any) -> None:
    fleet.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 1, **params},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "simulated:slow", "params": {"zero_latency": True, "seed": 2, "accuracy": 0.5,
                                            **params}},
    ]
    fleet.manifest["output"]["formats"] = ["json", "jsonl", "csv"]


async def _run(fleet: FleetDir, host: PluginHost, tmp_path: Path, **kwargs: Any) -> RunOutcome:
    prepared = prepare_file(fleet.write(), host=host, cache_dir=tmp_path / "cache")
    with RunStore(tmp_path / "state") as store:
        return await execute_run(prepared, host=host, store=store, **kwargs)


def _jsonl(outcome: RunOutcome) -> list[dict[str, Any]]:
    text = (outcome.output_dir / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


async def test_a_run_writes_every_artifact_with_one_result_per_test(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    outcome = await _run(fleet_dir, host, tmp_path)
    assert outcome.status is RunStatus.COMPLETED
    assert outcome.created
    names = {p.name for p in outcome.artifacts}
    assert {"fleet_results.json", "results.jsonl", "fleet_summary.csv", "repositories.csv",
            "providers.csv", "categories.csv", "manifest.json"} <= names
    rows = _jsonl(outcome)
    assert [r["index"] for r in rows] == list(range(32))  # plan order, every test once
    run_json = json.loads((outcome.output_dir / "run.json").read_text())
    assert (run_json["status"], run_json["done"], run_json["planned"]) == ("completed", 32, 32)
    assert outcome.output_dir.parent == tmp_path / "out"  # base_dir is relative to the manifest


async def test_aggregates_recomputed_from_results_jsonl_match_the_summary(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    _zero_latency(fleet_dir, error_rate=0.1)
    outcome = await _run(fleet_dir, host, tmp_path)
    results = [result_from_dict(r) for r in _jsonl(outcome)]
    fleet = outcome.summary.fleet
    assert fleet.total == len(results) == 32
    assert fleet.passed == sum(r.status is Status.PASSED for r in results)
    assert fleet.error == sum(r.status is Status.ERROR for r in results)
    for key, stats in outcome.summary.by_provider.items():
        mine = [r for r in results if r.item.provider_key == key]
        assert stats.total == len(mine)
        assert stats.output_tokens == sum(r.usage.output_tokens for r in mine if r.usage)
        latencies = sorted(r.latency_ms for r in mine if r.latency_ms is not None)
        if latencies:
            assert stats.latency_ms.max == latencies[-1]
            assert stats.latency_ms.min == latencies[0]
    priced = outcome.summary.by_provider["simulated:fast"]
    assert priced.cost_usd == pytest.approx(sum(
        r.cost_usd or 0 for r in results if r.item.provider_key == "simulated:fast"))
    assert outcome.summary.by_provider["simulated:slow"].unpriced_tests > 0
    assert any("no price known for simulated:slow" in w for w in outcome.warnings)


async def test_evaluators_decide_pass_and_fail(fleet_dir: FleetDir, host: PluginHost,
                                               tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    outcome = await _run(fleet_dir, host, tmp_path)
    rows = _jsonl(outcome)
    fast = [r for r in rows if r["provider"] == "simulated" and r["model"] == "fast"
            and r["expected"] is not None]
    assert fast
    assert all(r["status"] == "passed" for r in fast)
    slow = [r for r in rows if r["model"] == "slow" and r["expected"] is not None]
    assert {r["status"] for r in slow} == {"passed", "failed"}  # accuracy 0.5
    failed = next(r for r in slow if r["status"] == "failed")
    assert failed["verdicts"][0]["evaluator"] == "contains"
    assert failed["verdicts"][0]["passed"] is False


async def test_a_completed_run_is_not_executed_twice(fleet_dir: FleetDir, host: PluginHost,
                                                     tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    first = await _run(fleet_dir, host, tmp_path)
    second = await _run(fleet_dir, host, tmp_path)
    assert (second.run_id, second.created, second.status) == (first.run_id, False,
                                                              RunStatus.COMPLETED)
    assert second.summary.fleet.total == 32


async def test_two_runs_of_the_same_inputs_give_the_same_artifacts(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    first = await _run(fleet_dir, host, tmp_path / "a")
    second = await _run(fleet_dir, host, tmp_path / "b")

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]

    assert strip(_jsonl(first)) == strip(_jsonl(second))
    for name in ("providers.csv", "categories.csv", "manifest.json"):
        assert (first.output_dir / name).read_text() == (second.output_dir / name).read_text()


# --------------------------------------------------------------- limits, retries, failure


class _Probe(Provider):
    """A provider that records concurrency and fails on a script."""

    in_flight = 0
    max_in_flight = 0
    calls: list[tuple[str, int, float]] = []
    script: dict[tuple[str, int], Exception] = {}
    delay_s = 0.01

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        cls = type(self)
        cls.calls.append((request.test_key, request.attempt, time.perf_counter()))
        cls.in_flight += 1
        cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        try:
            await asyncio.sleep(cls.delay_s)
            failure = cls.script.get((request.test_key.rsplit("/", 1)[-1], request.attempt))
            if failure is not None:
                raise failure
            return ProviderResponse(request.expected or "ok", Usage(3, 2), "stop")
        finally:
            cls.in_flight -= 1


@pytest.fixture
def probe_host() -> PluginHost:
    _Probe.in_flight = _Probe.max_in_flight = 0
    _Probe.calls, _Probe.script, _Probe.delay_s = [], {}, 0.01

    @hookimpl
    def fleetbench_register_providers() -> list[ProviderSpec]:
        return [ProviderSpec("probe", _Probe)]

    plugin = SimpleNamespace(FLEETBENCH_PLUGIN_API_VERSION=1,
                             fleetbench_register_providers=fleetbench_register_providers)
    return load_plugins(env={}, extra_plugins=[("probe", plugin)])


def _probe_fleet(fleet: FleetDir, **entry: Any) -> None:
    fleet.manifest["providers"] = [{"id": "probe:m", **entry}]
    fleet.manifest["output"]["formats"] = ["jsonl"]


async def test_provider_concurrency_is_never_exceeded(fleet_dir: FleetDir,
                                                      probe_host: PluginHost,
                                                      tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, concurrency=3)
    fleet_dir.manifest["scenario_profiles"]["coding"]["concurrency"] = 10
    outcome = await _run(fleet_dir, probe_host, tmp_path)
    assert outcome.summary.fleet.total == 16
    assert _Probe.max_in_flight == 3


async def test_scenario_concurrency_and_global_cap_hold(fleet_dir: FleetDir,
                                                        probe_host: PluginHost,
                                                        tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, concurrency=20)
    fleet_dir.manifest["repositories"] = [fleet_dir.manifest["repositories"][0]]
    fleet_dir.manifest["repositories"][0]["scenarios"] = ["coding"]
    fleet_dir.manifest["scenario_profiles"]["coding"]["concurrency"] = 2
    await _run(fleet_dir, probe_host, tmp_path / "a")
    assert _Probe.max_in_flight == 2
    _Probe.max_in_flight = 0
    fleet_dir.manifest["scenario_profiles"]["coding"]["concurrency"] = 20
    fleet_dir.manifest["global_settings"] = {"max_in_flight": 4}
    await _run(fleet_dir, probe_host, tmp_path / "b")
    assert _Probe.max_in_flight == 4


async def test_retry_after_is_honoured(fleet_dir: FleetDir, probe_host: PluginHost,
                                       tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, max_retries=2)
    _Probe.script = {("r-1", 1): RateLimitedError("slow down", status_code=429,
                                                  retry_after_s=0.3)}
    outcome = await _run(fleet_dir, probe_host, tmp_path)
    attempts = [(a, t) for key, a, t in _Probe.calls if key.endswith("/r-1")]
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[1][1] - attempts[0][1] >= 0.3  # waited at least the hint
    row = next(r for r in _jsonl(outcome) if r["test_id"] == "r-1")
    assert (row["status"], row["retries"]) == ("passed", 1)
    assert row["total_ms"] >= 300 > row["latency_ms"]  # backoff is not latency


async def test_non_retryable_errors_are_not_retried_and_retries_are_bounded(
        fleet_dir: FleetDir, probe_host: PluginHost, tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, max_retries=2)
    _Probe.script = {("r-1", n): TransientProviderError("500") for n in (1, 2, 3)}
    _Probe.script[("r-2", 1)] = RateLimitedError("quota", retry_after_s=0.01)
    _Probe.script[("code-0", 1)] = ValueError("a bug in the plugin")
    outcome = await _run(fleet_dir, probe_host, tmp_path)
    rows = {r["key"].split("/", 1)[1]: r for r in _jsonl(outcome)}
    assert (rows["reasoning/probe:m/r-1"]["status"], rows["reasoning/probe:m/r-1"]["retries"]) \
        == ("error", 2)
    assert rows["reasoning/probe:m/r-1"]["error_kind"] == "transient"
    assert rows["reasoning/probe:m/r-2"]["status"] == "passed"
    assert rows["coding/probe:m/code-0"]["status"] == "error"
    assert rows["coding/probe:m/code-0"]["retries"] == 0


async def test_test_timeout_gives_status_timeout(fleet_dir: FleetDir, probe_host: PluginHost,
                                                 tmp_path: Path) -> None:
    _probe_fleet(fleet_dir)
    _Probe.delay_s = 5
    fleet_dir.manifest["repositories"] = [{"repo_id": "api", "path": "repos/api",
                                           "scenarios": ["reasoning"]}]
    fleet_dir.manifest["global_settings"] = {"test_timeout_seconds": 0.05}
    outcome = await _run(fleet_dir, probe_host, tmp_path)
    assert {r["status"] for r in _jsonl(outcome)} == {"timeout"}
    assert outcome.summary.fleet.timeout == 4


async def test_continue_on_failure_false_stops_at_the_first_error(
        fleet_dir: FleetDir, probe_host: PluginHost, tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, max_retries=0, concurrency=1)
    _Probe.script = {("code-1", 1): TransientProviderError("boom")}
    fleet_dir.manifest["global_settings"] = {"continue_on_failure": False}
    outcome = await _run(fleet_dir, probe_host, tmp_path)
    assert outcome.status is RunStatus.FAILED
    assert "code-1" in (outcome.error or "")
    assert 0 < outcome.summary.fleet.total < 16  # partial results are kept
    assert (outcome.output_dir / "results.jsonl").exists()


async def test_cancel_keeps_completed_results_and_resume_finishes(
        fleet_dir: FleetDir, probe_host: PluginHost, tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, concurrency=1)
    cancel = asyncio.Event()
    seen = 0

    class StopAfterFive:
        async def handle(self, events: Any) -> None:
            nonlocal seen
            seen += sum(1 for e in events if type(e).__name__ == "TestFinished")
            if seen >= 5:
                cancel.set()

    first = await _run(fleet_dir, probe_host, tmp_path, cancel=cancel,
                       subscribers=[("stopper", StopAfterFive())])
    assert first.status is RunStatus.CANCELLED
    assert 5 <= first.summary.fleet.total < 16
    second = await _run(fleet_dir, probe_host, tmp_path)
    assert second.status is RunStatus.COMPLETED
    assert not second.created
    keys = [r["key"] for r in _jsonl(second)]
    assert len(keys) == len(set(keys)) == 16


async def test_missing_api_key_is_a_located_error(fleet_dir: FleetDir, probe_host: PluginHost,
                                                  tmp_path: Path) -> None:
    _probe_fleet(fleet_dir, api_key_env="FLEETBENCH_TEST_KEY_THAT_IS_NOT_SET")
    with pytest.raises(ManifestError) as caught:
        await _run(fleet_dir, probe_host, tmp_path, env={})
    assert str(caught.value.problems[0]) == (
        "providers[0].api_key_env: environment variable FLEETBENCH_TEST_KEY_THAT_IS_NOT_SET "
        "is not set (the API key of 'probe:m')")


async def test_a_failing_observer_never_stops_the_run(fleet_dir: FleetDir, host: PluginHost,
                                                      tmp_path: Path) -> None:
    _zero_latency(fleet_dir)

    class Broken:
        async def handle(self, events: Any) -> None:
            raise RuntimeError("observer bug")

    outcome = await _run(fleet_dir, host, tmp_path, subscribers=[("broken", Broken())])
    assert outcome.status is RunStatus.COMPLETED
    assert outcome.summary.fleet.total == 32
    assert any("observer failures" in w and "broken" in w for w in outcome.warnings)


# -------------------------------------------------------------------- the CLI, a crash


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetbench", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=300)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FLEETBENCH_STATE_DIR": str(tmp_path / "state"),
            "FLEETBENCH_CACHE_DIR": str(tmp_path / "cache")}


def test_cli_run_json_and_success_rate_gate(fleet_dir: FleetDir, tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    path = fleet_dir.write()
    result = _cli("run", "--json", str(path), env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "completed"
    assert report["fleet"]["total"] == 32
    gated = _cli("run", "--quiet", "--min-success-rate", "0.99", str(path), env=_env(tmp_path))
    assert gated.returncode == 1  # the slow model answers half of the questions wrong


def test_cli_run_records_its_run_key(fleet_dir: FleetDir, tmp_path: Path) -> None:
    _zero_latency(fleet_dir)
    result = _cli("run", "--json", "--run-key", "nightly-7", str(fleet_dir.write()),
                  env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    with RunStore(tmp_path / "state") as store:
        record = store.get_run(run_id)
    assert record is not None
    assert record.run_key == "nightly-7"  # so the server can plan (and resume) it again


def test_cli_run_killed_with_sigkill_resumes_to_exactly_one_result_per_test(
        fleet_dir: FleetDir, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [
        {"id": "simulated:steady", "concurrency": 4,
         "params": {"latency_ms": 15, "output_tokens": 5}}]
    fleet_dir.manifest["scenario_profiles"]["coding"]["repeat"] = 8
    fleet_dir.manifest["output"]["formats"] = ["jsonl", "csv"]
    path = fleet_dir.write()
    env = _env(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "fleetbench", "run", "--quiet", str(path)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    database = tmp_path / "state" / "runs.sqlite3"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 20:
        if child.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {child.stderr.read()!r}")
        if database.exists():
            with contextlib.suppress(sqlite3.OperationalError), \
                    sqlite3.connect(database) as conn:  # the schema may not exist yet
                done = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stderr.close()
    assert 20 <= done < 100
    result = _cli("run", "--json", str(path), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = [json.loads(line) for line in
            (Path(report["output_dir"]) / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["key"] for r in rows}) == 100 == report["fleet"]["total"]
    with (Path(report["output_dir"]) / "providers.csv").open() as handle:
        (provider,) = list(csv.DictReader(handle))
    assert provider["total_tests"] == "100"


async def test_result_cache_reuses_identical_requests_across_runs(
        fleet_dir: FleetDir, probe_host: PluginHost, tmp_path: Path) -> None:
    _probe_fleet(fleet_dir)
    fleet_dir.manifest["global_settings"] = {"cache": True}
    first = await _run(fleet_dir, probe_host, tmp_path)
    calls_after_first = len(_Probe.calls)
    prepared = prepare_file(fleet_dir.write(), host=probe_host, cache_dir=tmp_path / "cache",
                            run_key="second")  # another run id, same requests
    with RunStore(tmp_path / "state") as store:
        second = await execute_run(prepared, host=probe_host, store=store)
    assert second.run_id != first.run_id
    assert len(_Probe.calls) == calls_after_first  # nothing was sent again
    rows = _jsonl(second)
    assert len(rows) == 16
    assert all(r["cached"] for r in rows)
    assert [r["status"] for r in rows] == [r["status"] for r in _jsonl(first)]


async def test_subscriber_plugins_receive_every_event(fleet_dir: FleetDir,
                                                      tmp_path: Path) -> None:
    seen: list[Any] = []

    class Recorder:
        async def handle(self, events: Any) -> None:
            seen.extend(events)

    @hookimpl
    def fleetbench_register_subscribers() -> list[SubscriberSpec]:
        return [SubscriberSpec("recorder", Recorder)]

    plugin = SimpleNamespace(FLEETBENCH_PLUGIN_API_VERSION=1,
                             fleetbench_register_subscribers=fleetbench_register_subscribers)
    host = load_plugins(env={}, extra_plugins=[("recorder", plugin)])
    _zero_latency(fleet_dir)
    outcome = await _run(fleet_dir, host, tmp_path)
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "RunStarted"
    assert kinds[-1] == "RunFinished"
    assert kinds.count("TestFinished") == 32
    assert [e.seq for e in seen] == list(range(1, 35))  # no gaps, no duplicates
    assert seen[-1].summary.fleet.total == 32 == outcome.summary.fleet.total


async def test_a_blocked_event_loop_is_reported_as_client_lag() -> None:
    from fleetbench._looplag import LoopLagMonitor

    monitor = LoopLagMonitor(interval_s=0.001)
    monitor.start()
    for _ in range(5):
        await asyncio.sleep(0.002)
        time.sleep(0.03)  # noqa: ASYNC251 - blocking the loop on purpose, as busy clients do
    await monitor.stop()
    warning = monitor.warning()
    assert warning is not None
    assert "the client was a bottleneck" in warning
    assert max(monitor.samples_ms) >= 25


def test_ctrl_c_cancels_cleanly_and_running_again_resumes(fleet_dir: FleetDir,
                                                          tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [
        {"id": "simulated:steady", "concurrency": 2,
         "params": {"latency_ms": 20, "output_tokens": 5}}]
    fleet_dir.manifest["output"]["formats"] = ["jsonl"]
    path = fleet_dir.write()
    env = _env(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "fleetbench", "run", "--quiet", str(path)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    database = tmp_path / "state" / "runs.sqlite3"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 5 and child.poll() is None:
        if database.exists():
            with contextlib.suppress(sqlite3.OperationalError), \
                    sqlite3.connect(database) as conn:
                done = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    with sqlite3.connect(database) as conn:
        status, finished = conn.execute("SELECT status, done FROM runs").fetchone()
    assert status == "cancelled"
    assert 5 <= finished < 16
    result = _cli("run", "--json", str(path), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["created"] is False
    assert report["fleet"]["total"] == 16
