"""What the sync and the asyncio client share: channel settings, request building, the
resumable-stream bookkeeping and atomic, verified artifact files. No I/O on the network
happens here, so both clients run the same rules."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import grpc

from fleetbench_client._errors import (
    ChecksumMismatch,
    DeadlineExceeded,
    FleetBenchError,
    NotFound,
    Unavailable,
    from_rpc_error,
    rpc_parts,
)
from fleetbench_client._types import ResultBatch, RunStatus, run_status
from fleetbench_client.v1 import fleetbench_pb2 as pb

__all__ = [
    "DEFAULT_RECONNECT_TIMEOUT_S",
    "DEFAULT_SNAPSHOT_INTERVAL_MS",
    "DEFAULT_TIMEOUT_S",
    "ArtifactFile",
    "Backoff",
    "Connection",
    "Manifest",
    "StreamCursor",
]

DEFAULT_TIMEOUT_S = 30.0
"""Deadline of one unary call."""
DEFAULT_RECONNECT_TIMEOUT_S = 60.0
"""How long a stream keeps trying to reconnect without getting anywhere."""
DEFAULT_SNAPSHOT_INTERVAL_MS = 1000
_SERVICE = "fleetbench.v1.FleetBenchService"
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 1.0

Manifest = str | os.PathLike[str]
"""A manifest's text (``str``), or the path of a manifest file (``os.PathLike``)."""

# Calls that failed before the server answered are retried by gRPC itself (every RPC
# of the service is safe to repeat: StartFleetRun is idempotent by run id). A stream
# that fails after its first message is resumed by the client (StreamCursor).
_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": _SERVICE}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
}]})


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the server: target, credentials, metadata and channel options."""

    target: str
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str | int], ...]

    @classmethod
    def make(cls, target: str, *, token: str | None, tls: bool | None,
             tls_root_cert: bytes | str | os.PathLike[str] | None,
             channel_options: Sequence[tuple[str, str | int]] = ()) -> Connection:
        """Validate the arguments the clients take (see :class:`FleetBenchClient`)."""
        if not target:
            raise ValueError("target must be 'host:port'")
        credentials = None
        if tls_root_cert is not None or tls:
            roots = tls_root_cert
            if roots is not None and not isinstance(roots, bytes):
                roots = Path(roots).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        metadata = ((("authorization", f"Bearer {token}"),) if token else ())
        options: dict[str, str | int] = {
            "grpc.service_config": _SERVICE_CONFIG,
            "grpc.enable_retries": 1,
            # Come back quickly when the server restarts (gRPC's default waits up to 2 min).
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 2000,
            # A batch of 5,000 results with answers can exceed gRPC's 4 MiB default.
            "grpc.max_receive_message_length": _MAX_MESSAGE_BYTES,
            "grpc.max_send_message_length": _MAX_MESSAGE_BYTES,
        }
        options.update(dict(channel_options))
        return cls(target, credentials, metadata, tuple(options.items()))


def read_manifest(manifest: Manifest, manifest_path: str | None) -> tuple[str, str]:
    """The manifest's text and the ``manifest_path`` to send.

    A path is read here; unless ``manifest_path`` says otherwise, its absolute form is
    sent too, so relative paths in it resolve next to it (when the server shares this
    file system and the folder lies in one of its data roots).
    """
    if isinstance(manifest, str):
        return manifest, manifest_path or ""
    path = Path(manifest)
    text = path.read_text(encoding="utf-8")
    return text, str(path.resolve()) if manifest_path is None else manifest_path


def start_request(manifest: Manifest, run_key: str | None, labels: Mapping[str, str] | None,
                  manifest_path: str | None) -> pb.StartFleetRunRequest:
    text, where = read_manifest(manifest, manifest_path)
    return pb.StartFleetRunRequest(manifest=text, run_key=run_key or "",
                                   labels=dict(labels or {}), manifest_path=where)


def validate_request(manifest: Manifest, run_key: str | None,
                     manifest_path: str | None) -> pb.ValidateManifestRequest:
    text, where = read_manifest(manifest, manifest_path)
    return pb.ValidateManifestRequest(manifest=text, run_key=run_key or "",
                                      manifest_path=where)


def list_request(fleet_id: str | None, statuses: Sequence[RunStatus | int],
                 page_size: int) -> pb.ListRunsRequest:
    return pb.ListRunsRequest(fleet_id=fleet_id or "", page_size=page_size,
                              statuses=[pb.RunStatus.ValueType(int(s)) for s in statuses])


def transient(error: grpc.RpcError) -> bool:
    """Whether a failed stream is worth resuming: the server went away or reset the
    connection (not: it refused the request)."""
    code, text, _ = rpc_parts(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
        return True
    if code is grpc.StatusCode.CANCELLED:  # by the server or a proxy: our own cancel
        return True                         # never reaches the stream loop
    # An HTTP/2 stream reset (e.g. a proxy or the server's connection going away).
    return code is grpc.StatusCode.INTERNAL and "RST_STREAM" in text


class Backoff:
    """Paces retries of one operation: exponential delays with jitter, given up after
    ``budget_s`` seconds without progress."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.retries = 0
        self._attempts = 0
        self._progress_at = time.monotonic()

    def progress(self) -> None:
        """The operation got somewhere: start counting anew."""
        self._attempts = 0
        self._progress_at = time.monotonic()

    def allowed(self) -> bool:
        """Whether another attempt is still within the budget."""
        return time.monotonic() - self._progress_at < self.budget_s

    def delay(self, deadline: float | None = None) -> float:
        """Seconds to wait before the next attempt (which this counts)."""
        delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2.0 ** self._attempts)
        delay *= random.uniform(0.8, 1.2)
        self._attempts += 1
        self.retries += 1
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - time.monotonic()))
        return delay


class StreamCursor:
    """The state of one :meth:`stream_results` call across its reconnections.

    It remembers what was delivered (``last_seq``), drops anything at or before it (so a
    resumed stream never repeats a result), decides after each end or failure whether
    to reconnect, and paces reconnections (:class:`Backoff`: ``reconnect_timeout_s``
    without progress, after which it gives up).
    """

    def __init__(self, run_id: str, *, after_seq: int, replay_only: bool, max_batch: int,
                 snapshot_interval_ms: int, follow_restarts: bool,
                 reconnect_timeout_s: float, timeout_s: float | None) -> None:
        if after_seq < 0 or max_batch < 0 or snapshot_interval_ms < 0:
            raise ValueError("after_seq, max_batch and snapshot_interval_ms must not be "
                             "negative")
        self.run_id = run_id
        self.last_seq = after_seq
        self.status = RunStatus.UNSPECIFIED
        self._replay_only = replay_only
        self._max_batch = max_batch
        self._snapshot_interval_ms = snapshot_interval_ms
        self._follow_restarts = follow_restarts
        self._backoff = Backoff(reconnect_timeout_s)
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def request(self) -> pb.StreamResultsRequest:
        return pb.StreamResultsRequest(
            run_id=self.run_id, after_seq=self.last_seq, replay_only=self._replay_only,
            max_batch=self._max_batch, snapshot_interval_ms=self._snapshot_interval_ms)

    def call_timeout(self) -> float | None:
        """The time left of the stream's own timeout, for the next call."""
        if self._deadline is None:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise out_of_time(self.run_id)
        return remaining

    def accept(self, message: pb.StreamResultsResponse) -> ResultBatch:
        """The batch to hand out for ``message`` (repeats already delivered removed)."""
        results: Sequence[pb.TestResult] = message.results
        if results and results[0].seq <= self.last_seq:
            results = [r for r in results if r.seq > self.last_seq]
        status = run_status(message.status)
        if results or not status.terminal:
            self._backoff.progress()
        if results:
            self.last_seq = results[-1].seq
        self.status = status
        return ResultBatch(results=results,
                           snapshot=message.snapshot if message.HasField("snapshot") else None,
                           status=status, last_seq=max(self.last_seq, message.last_seq),
                           head_seq=message.head_seq, reconnects=self._backoff.retries)

    def reconnect_after_end(self) -> bool:
        """The stream ended without error: whether to reconnect (rather than stop)."""
        if self._replay_only:
            return False
        if self.status is RunStatus.INTERRUPTED and self._follow_restarts:
            # The server stopped; it resumes the run when it starts again. Without a
            # server that does, the stream ends with the INTERRUPTED status.
            return self._backoff.allowed()
        if self.status.terminal:
            return False
        if not self._backoff.allowed():  # ends early again and again: give up
            raise Unavailable(f"the stream of run {self.run_id} keeps ending before the run",
                              grpc.StatusCode.UNAVAILABLE)
        return True

    def failed(self, error: grpc.RpcError) -> None:
        """The stream failed: raise the client's exception for ``error`` unless it is
        worth reconnecting."""
        if rpc_parts(error)[0] is grpc.StatusCode.DEADLINE_EXCEEDED and self._deadline:
            raise out_of_time(self.run_id) from error
        if not transient(error) or not self._backoff.allowed():
            raise from_rpc_error(error) from error

    def backoff(self) -> float:
        """Seconds to wait before reconnecting."""
        return self._backoff.delay(self._deadline)


def out_of_time(run_id: str) -> DeadlineExceeded:
    return DeadlineExceeded(f"run {run_id} was not over in time",
                            grpc.StatusCode.DEADLINE_EXCEEDED)


def chosen_artifacts(run: pb.Run, names: Iterable[str] | None) -> list[pb.Artifact]:
    """The run's artifacts named in ``names`` (all when ``None``), in that order."""
    if names is None:
        return list(run.artifacts)
    by_name = {a.name: a for a in run.artifacts}
    wanted = list(dict.fromkeys(names))
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise NotFound(f"run {run.run_id} has no artifact {', '.join(map(repr, missing))}",
                       grpc.StatusCode.NOT_FOUND)
    return [by_name[n] for n in wanted]


def artifact_target(dest_dir: Path, name: str) -> Path:
    """Where artifact ``name`` goes under ``dest_dir``; refuses names that would leave
    it (absolute, ``..``), whatever the server says."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\\" in name:
        raise FleetBenchError(f"refusing artifact name {name!r}: not a plain relative path")
    return dest_dir.joinpath(*parts)


class ArtifactFile:
    """One artifact being downloaded: a hidden temporary file beside its final path,
    hashed as it is written, renamed over the final path only once its size and SHA-256
    match what the server announced. Resumable: ``written`` is the offset to ask for."""

    def __init__(self, artifact: pb.Artifact, path: Path) -> None:
        self.artifact = artifact
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                                        dir=path.parent)
        self._temp = Path(temp)
        self._file: IO[bytes] = os.fdopen(handle, "wb")
        self._hash = hashlib.sha256()
        self.written = 0
        self.server_sha256 = ""

    def write(self, chunk: pb.GetArtifactResponse) -> None:
        if chunk.offset != self.written:
            raise ChecksumMismatch(f"artifact {self.artifact.name}: chunk at offset "
                                   f"{chunk.offset}, expected {self.written}")
        self._file.write(chunk.data)
        self._hash.update(chunk.data)
        self.written += len(chunk.data)
        if chunk.sha256:
            self.server_sha256 = chunk.sha256

    def finish(self) -> Path:
        """Check and move into place; the temporary file is removed on any failure."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            digest = self._hash.hexdigest()
            expected = {self.artifact.sha256, self.server_sha256} - {""}
            if self.written != self.artifact.size_bytes or expected != {digest}:
                raise ChecksumMismatch(
                    f"artifact {self.artifact.name}: got {self.written} bytes with sha256 "
                    f"{digest}, the server announced {self.artifact.size_bytes} bytes with "
                    f"sha256 {' / '.join(sorted(expected)) or '(none)'}")
            os.replace(self._temp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)
