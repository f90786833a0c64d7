"""The blocking client: :class:`FleetBenchClient`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeVar

import grpc

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
from fleetbench_client._types import ResultBatch, RunStatus, run_status
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc

__all__ = ["FleetBenchClient", "StartedRun"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

WAIT_MAX_BATCH = 5000
"""Batch size :meth:`FleetBenchClient.wait` asks for: it only looks for the end."""


class StartedRun(NamedTuple):
    """What :meth:`FleetBenchClient.start_run` returns: the run, and whether this call
    created it (``False``: a run with the same id existed and was returned, resumed if
    it had not completed)."""

    run: pb.Run
    created: bool


class FleetBenchClient:
    """A blocking client of a ``fleetbench serve`` server (``fleetbench.v1``).

    Safe to share between threads. Close it (or use it as a context manager) to release
    its channel.

    :param target: the server's ``host:port``.
    :param token: the server's bearer token, sent as ``authorization: Bearer <token>``.
    :param tls: connect with TLS using the system's root certificates (implied by
        ``tls_root_cert``).
    :param tls_root_cert: PEM root certificate(s) to trust, as bytes or a file path;
        e.g. the server's self-signed certificate.
    :param timeout_s: the deadline of each unary call.
    :param reconnect_timeout_s: how long a stream or download keeps reconnecting
        without getting anywhere before it gives up.
    :param channel_options: extra gRPC channel options (they override the client's).
    """

    def __init__(self, target: str, *, token: str | None = None, tls: bool | None = None,
                 tls_root_cert: bytes | str | os.PathLike[str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
                 channel_options: Sequence[tuple[str, str | int]] = ()) -> None:
        self._connection = Connection.make(target, token=token, tls=tls,
                                           tls_root_cert=tls_root_cert,
                                           channel_options=channel_options)
        self.target = target
        self.timeout_s = timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        connection = self._connection
        self._channel = (
            grpc.secure_channel(target, connection.credentials, options=connection.options)
            if connection.credentials is not None
            else grpc.insecure_channel(target, options=connection.options))
        self._stub = pb_grpc.FleetBenchServiceStub(self._channel)
        self._metadata = connection.metadata

    # ── lifecycle ──

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> FleetBenchClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # ── runs ──

    def start_run(self, manifest: Manifest, run_key: str | None = None,
                  labels: Mapping[str, str] | None = None,
                  manifest_path: str | None = None) -> StartedRun:
        """Start a run of ``manifest`` (its text, or the ``Path`` of a manifest file).

        Idempotent: the run id is a hash of the manifest, its datasets and ``run_key``;
        starting the same inputs again returns the existing run with ``created=False``
        (and resumes it if it failed, was cancelled or interrupted), so retrying after
        an error never starts a second run.

        :param run_key: mixed into the run id, to run the same manifest again as a new run.
        :param labels: stored with a new run and echoed in ``Run.labels``.
        :param manifest_path: where the manifest lives on the server; relative paths in
            it resolve against its folder. Defaults to the absolute path of a ``Path``
            manifest (a server on this machine), else to the server's first data root.
        :raises InvalidManifest: with every problem and its location.
        :raises PermissionDenied: a path outside the server's data roots.
        :raises ResourceExhausted: over the server's limits.
        """
        request = _core.start_request(manifest, run_key, labels, manifest_path)
        answer = self._unary(self._stub.StartFleetRun, request)
        return StartedRun(answer.run, answer.created)

    def get_run(self, run_id: str) -> pb.Run:
        """The run with its progress, latest summary and artifacts.

        :raises NotFound: no run has this id.
        """
        return self._unary(self._stub.GetRun, pb.GetRunRequest(run_id=run_id)).run

    def list_runs(self, fleet_id: str | None = None,
                  statuses: Iterable[RunStatus | int] = (), *,
                  page_size: int = 0) -> Iterator[pb.Run]:
        """Every run (newest first), optionally of one fleet and in some statuses,
        fetched page by page (``page_size`` runs per call; 0 lets the server choose).
        ``Run.summary`` holds counts and rates only here; :meth:`get_run` has the rest."""
        request = _core.list_request(fleet_id, tuple(statuses), page_size)
        while True:
            page = self._unary(self._stub.ListRuns, request)
            yield from page.runs
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def cancel_run(self, run_id: str, reason: str = "") -> pb.Run:
        """Cancel the run and return it once it has stopped (results so far are kept,
        partial artifacts written). A run that had ended is returned as it is."""
        request = pb.CancelRunRequest(run_id=run_id, reason=reason)
        return self._unary(self._stub.CancelRun, request).run

    def validate(self, manifest: Manifest, run_key: str | None = None,
                 manifest_path: str | None = None) -> pb.ValidateManifestResponse:
        """Check and plan ``manifest`` without running it: its ``problems`` (empty when
        valid), planned test counts, warnings and the run id :meth:`start_run` would
        give. Arguments as for :meth:`start_run`."""
        request = _core.validate_request(manifest, run_key, manifest_path)
        return self._unary(self._stub.ValidateManifest, request)

    def list_plugins(self) -> list[pb.PluginInfo]:
        """Every capability of the server's plugins (providers, evaluators, exporters …)."""
        return list(self._unary(self._stub.ListPlugins, pb.ListPluginsRequest()).plugins)

    # ── results ──

    def stream_results(self, run_id: str, after_seq: int = 0, *, max_batch: int = 0,
                       snapshot_interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS,
                       replay_only: bool = False, follow_restarts: bool = True,
                       timeout_s: float | None = None) -> Iterator[ResultBatch]:
        """The run's results, batch by batch: those after ``after_seq``, then live ones
        until the run ends.

        The stream survives the server going away: on UNAVAILABLE (or another transient
        failure) it reconnects with ``after_seq`` = the last seq received, so every
        result is yielded exactly once, in seq order. With ``follow_restarts``, a run
        INTERRUPTED by a server shutdown is followed through the restart (the server
        resumes it). It gives up after ``reconnect_timeout_s`` without progress.

        :param max_batch: the most results per batch; 0 lets the server choose.
        :param snapshot_interval_ms: attach a :class:`Snapshot` at most this often while
            following live (the first and the last batch always have one); 0 for none.
        :param replay_only: only the results stored so far, then stop.
        :param timeout_s: raise :class:`DeadlineExceeded` if the run is not over by then.
        :raises NotFound: no run has this id.
        """
        cursor = StreamCursor(run_id, after_seq=after_seq, replay_only=replay_only,
                              max_batch=max_batch, snapshot_interval_ms=snapshot_interval_ms,
                              follow_restarts=follow_restarts,
                              reconnect_timeout_s=self.reconnect_timeout_s,
                              timeout_s=timeout_s)
        while True:
            call = self._stub.StreamResults(cursor.request(), timeout=cursor.call_timeout(),
                                            metadata=self._metadata)
            try:
                for message in call:
                    yield cursor.accept(message)
            except grpc.RpcError as error:
                cursor.failed(error)
            else:
                if not cursor.reconnect_after_end():
                    return
            finally:
                call.cancel()
            time.sleep(cursor.backoff())

    def results(self, run_id: str, after_seq: int = 0, *, follow_restarts: bool = True,
                timeout_s: float | None = None) -> Iterator[pb.TestResult]:
        """:meth:`stream_results` flattened to single results, without snapshots."""
        for batch in self.stream_results(run_id, after_seq, snapshot_interval_ms=0,
                                         follow_restarts=follow_restarts, timeout_s=timeout_s):
            yield from batch.results

    def wait(self, run_id: str, timeout_s: float | None = None, *,
             follow_restarts: bool = True) -> pb.Run:
        """Block until the run has ended and return it (COMPLETED, FAILED, CANCELLED, or
        INTERRUPTED when ``follow_restarts`` is off or its server does not come back).

        :raises DeadlineExceeded: not over within ``timeout_s``.
        """
        started = time.monotonic()
        run = self.get_run(run_id)
        status = run_status(run.status)
        if status.terminal and not (status is RunStatus.INTERRUPTED and follow_restarts):
            return run
        left = None if timeout_s is None else timeout_s - (time.monotonic() - started)
        for _ in self.stream_results(run_id, run.last_seq, max_batch=WAIT_MAX_BATCH,
                                     snapshot_interval_ms=0, follow_restarts=follow_restarts,
                                     timeout_s=left):
            pass
        return self.get_run(run_id)

    # ── artifacts ──

    def download_artifacts(self, run_id: str, dest_dir: str | os.PathLike[str],
                           names: Iterable[str] | None = None) -> list[Path]:
        """Download the run's artifacts (all, or those named) into ``dest_dir``, keeping
        their relative names, and return their paths.

        Each file is written under a temporary name and renamed into place only when its
        size and SHA-256 match the server's, so a path returned is always complete and
        verified; a broken download resumes at the offset it reached. Call it once the
        run has ended (:meth:`wait`): a running run's artifacts are still changing.

        :raises ChecksumMismatch: a file's size or hash differs from the announced one.
        :raises NotFound: an unknown run, or a name the run has no artifact of.
        """
        run = self.get_run(run_id)
        dest = Path(dest_dir)
        paths = []
        for artifact in _core.chosen_artifacts(run, names):
            file = ArtifactFile(artifact, _core.artifact_target(dest, artifact.name))
            try:
                self._download(run_id, file)
                paths.append(file.finish())
            finally:
                file.discard()
        return paths

    def _download(self, run_id: str, file: ArtifactFile) -> None:
        backoff = Backoff(self.reconnect_timeout_s)
        while True:
            request = pb.GetArtifactRequest(run_id=run_id, name=file.artifact.name,
                                            offset=file.written)
            call = self._stub.GetArtifact(request, metadata=self._metadata)
            try:
                for chunk in call:
                    file.write(chunk)
                    backoff.progress()
                return
            except grpc.RpcError as error:
                if not _core.transient(error) or not backoff.allowed():
                    raise from_rpc_error(error) from error
            finally:
                call.cancel()
            time.sleep(backoff.delay())

    # ── plumbing ──

    def _unary(self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req) -> _Resp:
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

