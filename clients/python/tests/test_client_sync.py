"""The blocking client against a real server on port 0 over a real channel.

The server runs in the test's event loop, so every blocking client call goes through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from client_support import call, self_signed, sha256
from fleetbench_client import (
    ChecksumMismatch,
    FleetBenchClient,
    FleetBenchError,
    InvalidArgument,
    InvalidManifest,
    NotFound,
    PermissionDenied,
    ResultBatch,
    RunStatus,
    TestStatus,
    Unauthenticated,
    Unavailable,
    to_dict,
)
from fleetbench_client._core import artifact_target

from fleetbench._plugins import PluginHost
from tests.conftest import FleetDir
from tests.server_support import (
    config_for,
    fast_fleet,
    running_server,
    slow_fleet,
)


async def test_start_stream_wait_download(fleet_dir: FleetDir, client: FleetBenchClient,
                                          tmp_path: Path) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run, created = await call(lambda: client.start_run(manifest, labels={"team": "sim"}))
    assert created
    assert run.run_id.startswith("test-fleet-")
    assert run.progress.planned == 32

    batches: list[ResultBatch] = await call(
        lambda: list(client.stream_results(run.run_id, max_batch=5)))
    results = [r for b in batches for r in b.results]
    assert len(results) == 32
    assert len({r.key for r in results}) == 32
    assert [r.seq for r in results] == sorted({r.seq for r in results})
    assert all(len(b.results) <= 5 for b in batches)
    assert batches[0].snapshot is not None
    assert batches[-1].snapshot is not None
    assert batches[-1].final
    assert batches[-1].status is RunStatus.COMPLETED
    assert batches[-1].last_seq == results[-1].seq
    assert batches[-1].snapshot.progress.done == 32
    assert all(b.reconnects == 0 for b in batches)
    assert TestStatus(results[0].status) is TestStatus.PASSED

    final = await call(lambda: client.wait(run.run_id, timeout_s=30))
    assert RunStatus(final.status) is RunStatus.COMPLETED
    assert dict(final.labels) == {"team": "sim"}
    assert to_dict(final)["status"] == "RUN_STATUS_COMPLETED"

    dest = tmp_path / "downloads"
    paths = await call(lambda: client.download_artifacts(run.run_id, dest))
    announced = {a.name: a for a in final.artifacts}
    assert {p.relative_to(dest).as_posix() for p in paths} == set(announced)
    assert {"fleet_results.json", "results.jsonl", "manifest.json"} <= set(announced)
    for path in paths:
        artifact = announced[path.relative_to(dest).as_posix()]
        assert sha256(path) == artifact.sha256
        assert path.stat().st_size == artifact.size_bytes
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]  # no temporary left

    # A chosen subset, and a name the run does not have.
    only = await call(lambda: client.download_artifacts(run.run_id, tmp_path / "one",
                                                        ["results.jsonl"]))
    assert [p.name for p in only] == ["results.jsonl"]
    with pytest.raises(NotFound):
        await call(lambda: client.download_artifacts(run.run_id, tmp_path / "x", ["nope"]))


async def test_a_changed_artifact_is_refused_and_nothing_is_written(
        fleet_dir: FleetDir, client: FleetBenchClient, tmp_path: Path) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run, _ = await call(lambda: client.start_run(manifest))
    final = await call(lambda: client.wait(run.run_id, timeout_s=30))
    # Tamper with the file on the server's side after the run announced its hash.
    out = next((tmp_path / "out").rglob("results.jsonl"))
    out.write_bytes(out.read_bytes() + b"\n")
    dest = tmp_path / "downloads"
    with pytest.raises(ChecksumMismatch):
        await call(lambda: client.download_artifacts(final.run_id, dest, ["results.jsonl"]))
    assert not list(dest.rglob("*.jsonl*"))


async def test_start_is_idempotent(fleet_dir: FleetDir, client: FleetBenchClient) -> None:
    manifest = fast_fleet(fleet_dir).write()
    first, created = await call(lambda: client.start_run(manifest))
    again, created_again = await call(lambda: client.start_run(manifest.read_text(),
                                                               manifest_path=str(manifest)))
    assert created
    assert not created_again
    assert again.run_id == first.run_id
    other, created_other = await call(lambda: client.start_run(manifest, run_key="second"))
    assert created_other
    assert other.run_id != first.run_id
    validated = await call(lambda: client.validate(manifest, run_key="second"))
    assert not validated.problems
    assert validated.run_id == other.run_id
    assert validated.planned_tests == 32


async def test_invalid_manifest_carries_every_field_path(fleet_dir: FleetDir,
                                                         client: FleetBenchClient) -> None:
    fleet_dir.manifest["version"] = "2.0"
    fleet_dir.manifest["repositories"][1]["repo_id"] = "api-gateway"
    manifest = fleet_dir.write()
    with pytest.raises(InvalidManifest) as caught:
        await call(lambda: client.start_run(manifest))
    fields = {v.field for v in caught.value.violations}
    assert {"version", "repositories[1].repo_id"} <= fields
    assert all(v.description for v in caught.value.violations)
    assert isinstance(caught.value, InvalidArgument)
    assert isinstance(caught.value, FleetBenchError)
    # ValidateManifest reports the same problems in its answer instead.
    answer = await call(lambda: client.validate(manifest))
    assert {"version", "repositories[1].repo_id"} <= {p.location for p in answer.problems}


async def test_unknown_runs_are_not_found(client: FleetBenchClient) -> None:
    for operation in (lambda: client.get_run("nope-000000000000"),
                      lambda: list(client.stream_results("nope-000000000000")),
                      lambda: client.wait("nope-000000000000"),
                      lambda: client.cancel_run("nope-000000000000"),
                      lambda: client.download_artifacts("nope-000000000000", "unused")):
        with pytest.raises(NotFound) as caught:
            await call(operation)
        assert caught.value.details


async def test_paths_outside_the_data_roots_are_permission_denied(
        fleet_dir: FleetDir, client: FleetBenchClient, tmp_path: Path) -> None:
    fast_fleet(fleet_dir).manifest["output"]["base_dir"] = str(tmp_path.parent / "elsewhere")
    manifest = fleet_dir.write()
    with pytest.raises(PermissionDenied):
        await call(lambda: client.start_run(manifest))


async def test_list_runs_iterates_every_page(fleet_dir: FleetDir, client: FleetBenchClient,
                                             ) -> None:
    manifest = fast_fleet(fleet_dir).write()
    ids = []
    for key in ("a", "b", "c"):
        run, _ = await asyncio.to_thread(client.start_run, manifest, run_key=key)
        await asyncio.to_thread(client.wait, run.run_id, timeout_s=30)
        ids.append(run.run_id)
    listed = await call(lambda: [r.run_id for r in client.list_runs(page_size=1)])
    assert listed == ids[::-1]  # newest first, one page per run
    mine = await call(lambda: [r.run_id for r in client.list_runs(
        "test-fleet", [RunStatus.COMPLETED], page_size=2)])
    assert mine == ids[::-1]
    assert await call(lambda: list(client.list_runs("other-fleet"))) == []
    assert await call(lambda: list(client.list_runs(statuses=[RunStatus.RUNNING]))) == []


async def test_cancel_then_start_resumes(fleet_dir: FleetDir, client: FleetBenchClient) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    run, _ = await call(lambda: client.start_run(manifest))

    def first_results() -> ResultBatch:
        for batch in client.stream_results(run.run_id):
            if batch.results:
                return batch
        raise AssertionError("the run ended before any result")

    await call(first_results)
    cancelled = await call(lambda: client.cancel_run(run.run_id, "enough"))
    assert RunStatus(cancelled.status) is RunStatus.CANCELLED
    assert cancelled.error_message == "enough"
    assert 0 < cancelled.progress.done < 32
    assert RunStatus((await call(lambda: client.wait(run.run_id))).status) \
        is RunStatus.CANCELLED
    resumed, created = await call(lambda: client.start_run(manifest))
    assert not created
    final = await call(lambda: client.wait(resumed.run_id, timeout_s=30))
    assert RunStatus(final.status) is RunStatus.COMPLETED
    keys = await call(lambda: [r.key for r in client.results(run.run_id)])
    assert len(keys) == len(set(keys)) == 32


async def test_wait_times_out(fleet_dir: FleetDir, client: FleetBenchClient) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=200).write()
    run, _ = await call(lambda: client.start_run(manifest))
    with pytest.raises(TimeoutError):
        await call(lambda: client.wait(run.run_id, timeout_s=0.3))
    await call(lambda: client.cancel_run(run.run_id))


async def test_replay_only_and_resuming_after_a_seq(fleet_dir: FleetDir,
                                                    client: FleetBenchClient) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run, _ = await call(lambda: client.start_run(manifest))
    await call(lambda: client.wait(run.run_id, timeout_s=30))
    everything = await call(lambda: list(client.results(run.run_id)))
    middle = everything[15].seq
    rest = await call(lambda: [r for b in client.stream_results(run.run_id, middle,
                                                                replay_only=True)
                               for r in b.results])
    assert [r.key for r in rest] == [r.key for r in everything[16:]]


async def test_plugins(client: FleetBenchClient) -> None:
    names = {p.name for p in await call(client.list_plugins)}
    assert {"simulated", "json", "csv"} <= names


async def test_bearer_token(fleet_dir: FleetDir, tmp_path: Path, host: PluginHost) -> None:
    manifest = fast_fleet(fleet_dir).write()
    async with running_server(config_for(tmp_path, auth_token="s3cret"), host) as served:
        address = served.server.address
        for token in (None, "wrong"):
            with FleetBenchClient(address, token=token) as anonymous:
                with pytest.raises(Unauthenticated):
                    await call(anonymous.list_plugins)
                with pytest.raises(Unauthenticated):
                    await asyncio.to_thread(list, anonymous.stream_results("any"))
        with FleetBenchClient(address, token="s3cret") as trusted:
            run, _ = await call(lambda: trusted.start_run(manifest))
            final = await call(lambda: trusted.wait(run.run_id, timeout_s=30))
            assert RunStatus(final.status) is RunStatus.COMPLETED
            paths = await call(lambda: trusted.download_artifacts(run.run_id, tmp_path / "d"))
            assert paths


async def test_tls_with_the_servers_certificate(tmp_path: Path, host: PluginHost) -> None:
    from fleetbench._server._config import TlsFiles

    cert, key = self_signed(tmp_path)
    config = config_for(tmp_path, tls=TlsFiles(cert=cert, key=key))
    async with running_server(config, host, credentials=None) as served:
        with FleetBenchClient(served.server.address, tls_root_cert=cert) as secure:
            assert await call(secure.list_plugins)
        with FleetBenchClient(served.server.address, tls_root_cert=cert.read_bytes()) as secure:
            assert await call(secure.list_plugins)
        with FleetBenchClient(served.server.address, timeout_s=5) as plain, \
                pytest.raises(Unavailable):
            await call(plain.list_plugins)


def test_an_unreachable_server_is_unavailable() -> None:
    with FleetBenchClient("127.0.0.1:1", timeout_s=10) as nowhere, pytest.raises(Unavailable):
        nowhere.list_plugins()


def test_bad_arguments_fail_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target"):
        FleetBenchClient("")
    with FleetBenchClient("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="negative"):
            next(client.stream_results("x", after_seq=-1))
        with pytest.raises(FileNotFoundError):
            client.start_run(tmp_path / "missing.yaml")
        for name in ("../escape", "/etc/passwd", "a/../../b", ""):
            with pytest.raises(FleetBenchError, match="refusing artifact name"):
                artifact_target(tmp_path, name)
