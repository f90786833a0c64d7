"""The client's exceptions: one class per status code a caller may want to handle.

Every failed call raises a :class:`FleetBenchError` (never a raw ``grpc.RpcError``); the
gRPC status code and the server's message stay available as ``code`` and ``details``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc

from fleetbench_client._status import FieldViolation, field_violations

__all__ = [
    "ChecksumMismatch",
    "DeadlineExceeded",
    "FleetBenchError",
    "InvalidArgument",
    "InvalidManifest",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
    "rpc_parts",
]


class FleetBenchError(Exception):
    """A call to the fleetbench server failed.

    :ivar code: the gRPC status code, or ``None`` for a failure found by the client
        itself (e.g. :class:`ChecksumMismatch`).
    :ivar details: the server's message (safe to show; never a traceback).
    """

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"{code.name}: {details}" if code is not None else details)
        self.code = code
        self.details = details


class InvalidArgument(FleetBenchError):
    """INVALID_ARGUMENT: a request field is invalid (e.g. a foreign page token)."""


class InvalidManifest(InvalidArgument):
    """INVALID_ARGUMENT for a manifest with problems; ``violations`` lists every one
    with its location (decoded from the status's ``google.rpc.BadRequest``)."""

    def __init__(self, details: str, violations: tuple[FieldViolation, ...],
                 code: grpc.StatusCode | None = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(details, code)
        self.violations = violations


class NotFound(FleetBenchError):
    """NOT_FOUND: no run (or artifact) has this name."""


class PermissionDenied(FleetBenchError):
    """PERMISSION_DENIED: the manifest reaches a path outside the server's data roots."""


class Unauthenticated(FleetBenchError):
    """UNAUTHENTICATED: the bearer token is missing or wrong."""


class ResourceExhausted(FleetBenchError):
    """RESOURCE_EXHAUSTED: the start would exceed the server's limits (concurrent runs,
    planned tests); try again later."""


class Unavailable(FleetBenchError):
    """UNAVAILABLE: the server cannot be reached (or is shutting down), and retrying
    for the client's ``reconnect_timeout_s`` did not help."""


class DeadlineExceeded(FleetBenchError, TimeoutError):
    """The call (or :meth:`wait`) did not finish within its timeout."""


class ChecksumMismatch(FleetBenchError):
    """A downloaded artifact's size or SHA-256 differs from what the server announced;
    nothing was written at its final path."""


_BY_CODE: dict[grpc.StatusCode, type[FleetBenchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_for(code: grpc.StatusCode, details: str | None,
              trailing_metadata: Iterable[tuple[str, str | bytes]] | None = None,
              ) -> FleetBenchError:
    """The exception that stands for a call that ended with ``code``."""
    text = details or code.name.lower()
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(trailing_metadata)
        if violations is not None:
            return InvalidManifest(text, violations)
    return _BY_CODE.get(code, FleetBenchError)(text, code)


Trailers = tuple[tuple[str, str | bytes], ...]


def rpc_parts(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, Trailers]:
    """The status code, message and trailing metadata of a failed call. (A sync call's
    error is also its ``grpc.Call``; the type stubs cannot express that.)"""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code(), error.details() or "", tuple(error.trailing_metadata() or ())
    if hasattr(error, "code") and hasattr(error, "trailing_metadata"):
        call = cast(grpc.Call, error)
        return call.code(), call.details() or "", tuple(call.trailing_metadata() or ())
    return grpc.StatusCode.UNKNOWN, str(error) or type(error).__name__, ()


def from_rpc_error(error: grpc.RpcError) -> FleetBenchError:
    """Translate an error raised by grpc (sync or asyncio) into a client exception."""
    return error_for(*rpc_parts(error))
