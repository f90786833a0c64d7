"""Who may do what with the server: bad manifests, data roots, bearer tokens, TLS and
health checking, on a real server and channel."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from pathlib import Path

import grpc
import pytest
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fleetbench._plugins import PluginHost
from fleetbench._server._app import SERVICE_NAME, FleetBenchServer
from fleetbench._server._config import TlsFiles

from .conftest import FleetDir
from .server_support import (
    bad_request,
    collect,
    config_for,
    fast_fleet,
    running_server,
    start_request,
)
from .test_manifest import BAD_INPUTS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_every_bad_manifest_is_invalid_argument_with_field_paths(
        tmp_path: Path, host: PluginHost) -> None:
    async with running_server(config_for(tmp_path), host) as served:
        for number, (name, mutate, location, message) in enumerate(BAD_INPUTS):
            fleet = FleetDir(tmp_path / f"case-{number}")
            mutate(fleet)
            manifest = fleet.write()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await served.stub.StartFleetRun(start_request(manifest))
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            violations = bad_request(error).field_violations
            assert any(location in v.field and message in v.description
                       for v in violations), (name, [(v.field, v.description)
                                                     for v in violations])
        # Every problem is reported at once, and the server still works afterwards.
        fleet = FleetDir(tmp_path / "many")
        fleet.manifest["version"] = "2.0"
        fleet.manifest["repositories"][1]["repo_id"] = "api-gateway"
        fleet.manifest["output"]["formats"] = ["json", "json"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.StartFleetRun(start_request(fleet.write()))
        fields = {v.field for v in bad_request(caught.value).field_violations}
        assert {"version", "repositories[1].repo_id", "output.formats"} <= fields
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.StartFleetRun(pb.StartFleetRunRequest(manifest="[1, 2"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await served.stub.ListRuns(pb.ListRunsRequest())).runs == []


async def test_paths_outside_the_data_roots_are_permission_denied(
        tmp_path: Path, host: PluginHost) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    fleet = fast_fleet(FleetDir(root))
    manifest = fleet.write()
    stranger = fast_fleet(FleetDir(outside))
    stranger.write()
    (root / "escape").symlink_to(outside / "repos" / "api")

    def variant(change: dict[str, object]) -> str:
        data = copy.deepcopy(fleet.manifest)
        for dotted, value in change.items():
            *parents, last = dotted.split(".")
            target: object = data
            for part in parents:
                target = target[int(part)] if part.isdigit() else target[part]  # type: ignore[index]
            target[int(last) if last.isdigit() else last] = value  # type: ignore[index]
        return json.dumps(data)

    refused = [
        pb.StartFleetRunRequest(manifest=manifest.read_text(),
                                manifest_path=str(outside / "fleet.json")),
        pb.StartFleetRunRequest(manifest=variant({"repositories.0.path": "../outside/repos/api"}),
                                manifest_path=str(manifest)),
        pb.StartFleetRunRequest(manifest=variant({"repositories.0.path": str(outside)}),
                                manifest_path=str(manifest)),
        pb.StartFleetRunRequest(manifest=variant({"repositories.0.path": "escape"}),
                                manifest_path=str(manifest)),
        pb.StartFleetRunRequest(manifest=variant({"output.base_dir": "../outside/out"}),
                                manifest_path=str(manifest)),
        pb.StartFleetRunRequest(manifest=variant({
            "repositories.0.adapter": "git", "repositories.0.path": "",
            "repositories.0.git_url": f"file://{outside}"}), manifest_path=str(manifest)),
    ]
    async with running_server(config_for(tmp_path, data_roots=(root,)), host) as served:
        for request in refused:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await served.stub.StartFleetRun(request)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, request.manifest
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await served.stub.ValidateManifest(pb.ValidateManifestRequest(
                    manifest=request.manifest, manifest_path=request.manifest_path))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert not (outside / "out").exists()  # nothing was written outside
        # Inside the root it works, also with a manifest_path relative to the first root.
        started = await served.stub.StartFleetRun(pb.StartFleetRunRequest(
            manifest=manifest.read_text(), manifest_path="fleet.json"))
        messages = await collect(served.stub, started.run.run_id)
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED


async def test_bearer_token_auth(fleet_dir: FleetDir, tmp_path: Path, host: PluginHost) -> None:
    manifest = fast_fleet(fleet_dir).write()
    config = config_for(tmp_path, auth_token="s3cret-token")
    async with running_server(config, host) as served:
        stub = served.stub
        for metadata in ((), (("authorization", "Bearer wrong"),),
                         (("authorization", "s3cret-token"),),
                         (("authorization", "Basic s3cret-token"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListPlugins(pb.ListPluginsRequest(), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await collect(stub, "any-run", metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret-token"),)
        assert (await stub.ListPlugins(pb.ListPluginsRequest(), metadata=good)).plugins
        started = await stub.StartFleetRun(start_request(manifest), metadata=good)
        messages = await collect(stub, started.run.run_id, metadata=good)
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED
        lower = (("authorization", "bearer s3cret-token"),)  # the scheme is case-insensitive
        assert (await stub.ListPlugins(pb.ListPluginsRequest(), metadata=lower)).plugins
        health = health_pb2_grpc.HealthStub(served.channel)  # open without a token
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING


async def test_without_a_token_no_metadata_is_needed(tmp_path: Path, host: PluginHost) -> None:
    async with running_server(config_for(tmp_path), host) as served:
        assert (await served.stub.ListPlugins(pb.ListPluginsRequest())).plugins
        odd = (("authorization", "Bearer whatever"),)
        assert (await served.stub.ListPlugins(pb.ListPluginsRequest(), metadata=odd)).plugins


def _self_signed(folder: Path) -> TlsFiles:
    """A throw-away certificate for 127.0.0.1 and localhost (openssl; no `cryptography`)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return TlsFiles(cert=cert, key=key)


async def test_tls_with_a_self_signed_certificate(tmp_path: Path, host: PluginHost) -> None:
    tls = _self_signed(tmp_path)
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.cert.read_bytes())
    async with running_server(config_for(tmp_path, tls=tls), host, credentials) as served:
        assert (await served.stub.ListPlugins(pb.ListPluginsRequest(), timeout=10)).plugins
        async with grpc.aio.insecure_channel(served.server.address) as plain:
            stub = pb_grpc.FleetBenchServiceStub(plain)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListPlugins(pb.ListPluginsRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_not_serving_until_ready_then_serving_then_not_during_shutdown(
        tmp_path: Path, host: PluginHost) -> None:
    server = FleetBenchServer(config_for(tmp_path), host=host)
    await server.open()
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == NOT_SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == NOT_SERVING
        await server.ready()
        assert (await watch.read()).status == SERVING
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
        stopping = asyncio.ensure_future(server.stop(grace_s=1.0))
        assert (await watch.read()).status == NOT_SERVING
        await stopping
