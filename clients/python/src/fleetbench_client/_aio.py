"""The asyncio client: :class:`AsyncFleetBenchClient`, the same operations as
:class:`~fleetbench_client.FleetBenchClient` as coroutines and async iterators."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
import grpc.aio

from fleetbench_client import _core
from fleetbench_client._core import (
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_SNAPSHOT_INTERVAL_MS,
    DEFAULT_TIMEOUT_S,
    ArtifactFile,
    Backoff,
    Connection,
    Manifest,
    StreamCursor,
)
from fleetbench_client._errors import from_rpc_error
from fleetbench_client._sync import WAIT_MAX_BATCH, StartedRun
from fleetbench_client._types import ResultBatch, RunStatus, run_status
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc

__all__ = ["AsyncFleetBenchClient"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AsyncFleetBenchClient:
    """An asyncio client of a ``fleetbench serve`` server (``fleetbench.v1``).

    Create it inside the event loop that uses it, and close it there (``await
    client.close()`` or ``async with``). Arguments and behaviour are those of
    :class:`~fleetbench_client.FleetBenchClient`.
    """

    def __init__(self, target: str, *, token: str | None = None, tls: bool | None = None,
                 tls_root_cert: bytes | str | os.PathLike[str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
                 channel_options: Sequence[tuple[str, str | int]] = ()) -> None:
        connection = Connection.make(target, token=token, tls=tls, tls_root_cert=tls_root_cert,
                                     channel_options=channel_options)
        self.target = target
        self.timeout_s = timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._channel = (
            grpc.aio.secure_channel(target, connection.credentials, options=connection.options)
            if connection.credentials is not None
            else grpc.aio.insecure_channel(target, options=connection.options))
        self._stub = pb_grpc.FleetBenchServiceStub(self._channel)  # an AsyncStub (typed)
        self._metadata = connection.metadata

    # ── lifecycle ──

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncFleetBenchClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    # ── runs ──

    async def start_run(self, manifest: Manifest, run_key: str | None = None,
                        labels: Mapping[str, str] | None = None,
                        manifest_path: str | None = None) -> StartedRun:
        """Start (or find) the run of ``manifest``; see
        :meth:`FleetBenchClient.start_run <fleetbench_client.FleetBenchClient.start_run>`."""
        request = await asyncio.to_thread(_core.start_request, manifest, run_key, labels,
                                          manifest_path)
        answer = await self._unary(self._stub.StartFleetRun, request)
        return StartedRun(answer.run, answer.created)

    async def get_run(self, run_id: str) -> pb.Run:
        """The run with its progress, latest summary and artifacts."""
        return (await self._unary(self._stub.GetRun, pb.GetRunRequest(run_id=run_id))).run

    async def list_runs(self, fleet_id: str | None = None,
                        statuses: Iterable[RunStatus | int] = (), *,
                        page_size: int = 0) -> AsyncIterator[pb.Run]:
        """Every run (newest first), optionally filtered, fetched page by page."""
        request = _core.list_request(fleet_id, tuple(statuses), page_size)
        while True:
            page = await self._unary(self._stub.ListRuns, request)
            for run in page.runs:
                yield run
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def cancel_run(self, run_id: str, reason: str = "") -> pb.Run:
        """Cancel the run and return it once it has stopped."""
        request = pb.CancelRunRequest(run_id=run_id, reason=reason)
        return (await self._unary(self._stub.CancelRun, request)).run

    async def validate(self, manifest: Manifest, run_key: str | None = None,
                       manifest_path: str | None = None) -> pb.ValidateManifestResponse:
        """Check and plan ``manifest`` without running it."""
        request = await asyncio.to_thread(_core.validate_request, manifest, run_key,
                                          manifest_path)
        return await self._unary(self._stub.ValidateManifest, request)

    async def list_plugins(self) -> list[pb.PluginInfo]:
        """Every capability of the server's plugins."""
        return list((await self._unary(self._stub.ListPlugins, pb.ListPluginsRequest())).plugins)

    # ── results ──

    async def stream_results(self, run_id: str, after_seq: int = 0, *, max_batch: int = 0,
                             snapshot_interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS,
                             replay_only: bool = False, follow_restarts: bool = True,
                             timeout_s: float | None = None) -> AsyncIterator[ResultBatch]:
        """The run's results batch by batch, resumed across reconnections so each is
        yielded exactly once; see :meth:`FleetBenchClient.stream_results
        <fleetbench_client.FleetBenchClient.stream_results>`."""
        cursor = StreamCursor(run_id, after_seq=after_seq, replay_only=replay_only,
                              max_batch=max_batch, snapshot_interval_ms=snapshot_interval_ms,
                              follow_restarts=follow_restarts,
                              reconnect_timeout_s=self.reconnect_timeout_s,
                              timeout_s=timeout_s)
        while True:
            call = self._stub.StreamResults(cursor.request(), timeout=cursor.call_timeout(),
                                            metadata=self._metadata)
            try:
                async for message in call:
                    yield cursor.accept(message)
            except grpc.aio.AioRpcError as error:
                cursor.failed(error)
            else:
                if not cursor.reconnect_after_end():
                    return
            finally:
                call.cancel()
            await asyncio.sleep(cursor.backoff())

    async def results(self, run_id: str, after_seq: int = 0, *, follow_restarts: bool = True,
                      timeout_s: float | None = None) -> AsyncIterator[pb.TestResult]:
        """:meth:`stream_results` flattened to single results, without snapshots."""
        async for batch in self.stream_results(run_id, after_seq, snapshot_interval_ms=0,
                                               follow_restarts=follow_restarts,
                                               timeout_s=timeout_s):
            for result in batch.results:
                yield result

    async def wait(self, run_id: str, timeout_s: float | None = None, *,
                   follow_restarts: bool = True) -> pb.Run:
        """Return the run once it has ended; see :meth:`FleetBenchClient.wait
        <fleetbench_client.FleetBenchClient.wait>`."""
        started = time.monotonic()
        run = await self.get_run(run_id)
        status = run_status(run.status)
        if status.terminal and not (status is RunStatus.INTERRUPTED and follow_restarts):
            return run
        left = None if timeout_s is None else timeout_s - (time.monotonic() - started)
        stream = self.stream_results(run_id, run.last_seq, max_batch=WAIT_MAX_BATCH,
                                     snapshot_interval_ms=0, follow_restarts=follow_restarts,
                                     timeout_s=left)
        async for _ in stream:
            pass
        return await self.get_run(run_id)

    # ── artifacts ──

    async def download_artifacts(self, run_id: str, dest_dir: str | os.PathLike[str],
                                 names: Iterable[str] | None = None) -> list[Path]:
        """Download the run's artifacts into ``dest_dir``, each verified by size and
        SHA-256 and moved into place atomically; see
        :meth:`FleetBenchClient.download_artifacts
        <fleetbench_client.FleetBenchClient.download_artifacts>`."""
        run = await self.get_run(run_id)
        dest = Path(dest_dir)
        paths = []
        for artifact in _core.chosen_artifacts(run, names):
            target = _core.artifact_target(dest, artifact.name)
            file = await asyncio.to_thread(ArtifactFile, artifact, target)
            try:
                await self._download(run_id, file)
                paths.append(await asyncio.to_thread(file.finish))
            finally:
                file.discard()
        return paths

    async def _download(self, run_id: str, file: ArtifactFile) -> None:
        backoff = Backoff(self.reconnect_timeout_s)
        while True:
            request = pb.GetArtifactRequest(run_id=run_id, name=file.artifact.name,
                                            offset=file.written)
            call = self._stub.GetArtifact(request, metadata=self._metadata)
            try:
                async for chunk in call:
                    await asyncio.to_thread(file.write, chunk)
                    backoff.progress()
                return
            except grpc.aio.AioRpcError as error:
                if not _core.transient(error) or not backoff.allowed():
                    raise from_rpc_error(error) from error
            finally:
                call.cancel()
            await asyncio.sleep(backoff.delay())

    # ── plumbing ──

    async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
                     request: _Req) -> _Resp:
        try:
            return await method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
