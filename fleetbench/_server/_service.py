"""The ``fleetbench.v1.FleetBenchService`` servicer: translation and nothing else.

Each handler turns its request into a call of the run manager (or the stream, artifact
and plugin helpers) and the answer into a message through ``_convert``, the only module
that builds messages. Errors are
translated in one place, :func:`_abort`: bad manifests become INVALID_ARGUMENT with a
``google.rpc.BadRequest`` listing every problem (``field`` = location, ``description`` =
message), the server's own refusals their status codes, and anything unexpected
INTERNAL with a short message, never a traceback; the exception is logged with the
run id bound, and the server keeps serving.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import structlog
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from fleetbench._server import _convert as convert
from fleetbench._server._artifacts import artifact_path, read_chunks
from fleetbench._server._errors import (
    BadRequestError,
    OutOfRangeError,
    OutsideDataRootsError,
    OverLimitError,
    RunNotFoundError,
    ShuttingDownError,
)
from fleetbench._server._intake import ManifestInput
from fleetbench._server._metrics import ServerMetrics
from fleetbench._server._replay import ReplayCache
from fleetbench._server._runs import RunManager
from fleetbench._server._stream import ResultStream, StreamRequest
from fleetbench._store import InvalidPageTokenError
from fleetbench.errors import InputError, Problem

if TYPE_CHECKING:  # requests and responses are built and read in _convert only
    from fleetbench_client.v1 import fleetbench_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

_log = structlog.get_logger("fleetbench.server")

DEFAULT_PAGE_SIZE = 50
_MAX_DETAIL = 2000  # characters of the status message listing problems

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (RunNotFoundError, grpc.StatusCode.NOT_FOUND),
    (OutsideDataRootsError, grpc.StatusCode.PERMISSION_DENIED),
    (OverLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidPageTokenError, grpc.StatusCode.INVALID_ARGUMENT),
)

_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _unary(method: Callable[[_S, _Req, Context], Awaitable[_Resp]]
           ) -> Callable[[_S, _Req, Context], Coroutine[Any, Any, _Resp]]:
    """Translate the errors of a unary handler (see :func:`_abort`)."""

    @functools.wraps(method)
    async def handler(self: _S, request: _Req, context: Context) -> _Resp:
        with structlog.contextvars.bound_contextvars(run_id=_run_id(request)):
            try:
                return await method(self, request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method.__name__)

    return handler


def _streaming(method: Callable[[_S, _Req, Context], AsyncIterator[_Resp]]
               ) -> Callable[[_S, _Req, Context], AsyncIterator[_Resp]]:
    """Translate the errors of a server-streaming handler (see :func:`_abort`)."""

    @functools.wraps(method)
    async def handler(self: _S, request: _Req, context: Context) -> AsyncIterator[_Resp]:
        with structlog.contextvars.bound_contextvars(run_id=_run_id(request)):
            try:
                async for message in method(self, request, context):
                    yield message
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method.__name__)

    return handler


def _run_id(request: object) -> str | None:
    value = getattr(request, "run_id", None)
    return value if isinstance(value, str) and value else None


async def _abort(context: Context, exc: Exception, method: str) -> NoReturn:
    """End the call with the status ``exc`` stands for."""
    if isinstance(exc, InputError):
        status = _bad_request(exc.problems)
        await context.abort(status.code, status.details, status.trailing_metadata)
    for kind, code in _CODES:
        if isinstance(exc, kind):
            await context.abort(code, str(exc))
    _log.exception("request failed", method=method)
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error in {method}; the server log has the details")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _bad_request(problems: tuple[Problem, ...]) -> grpc.Status:
    """INVALID_ARGUMENT with a ``google.rpc.BadRequest`` of every problem."""
    detail = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=p.location, description=p.message)
        for p in problems])
    packed = any_pb2.Any()
    packed.Pack(detail)
    text = f"the manifest has {len(problems)} problem(s): " + "; ".join(map(str, problems))
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL - 3] + "..."
    status: grpc.Status = rpc_status.to_status(status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=text, details=[packed]))
    return status


def _require_run_id(run_id: str) -> str:
    if not run_id:
        raise BadRequestError("run_id is required")
    return run_id


class FleetBenchService(pb_grpc.FleetBenchServiceServicer):
    """Every RPC of ``fleetbench.v1.FleetBenchService`` over a :class:`RunManager`."""

    def __init__(self, manager: RunManager, metrics: ServerMetrics,
                 replays: ReplayCache) -> None:
        self._manager = manager
        self._metrics = metrics
        self._replays = replays

    @_unary
    async def StartFleetRun(self, request: pb.StartFleetRunRequest,
                            context: Context) -> pb.StartFleetRunResponse:
        given = ManifestInput(request.manifest, request.run_key, request.manifest_path)
        view, created = await self._manager.start(given, dict(request.labels))
        return convert.start_response(view, created)

    @_streaming
    async def StreamResults(  # type: ignore[override]  # serialized messages, see below
            self, request: pb.StreamResultsRequest, context: Context) -> AsyncIterator[bytes]:
        """Each message goes out already serialized (``_convert.stream_response``:
        results converted once for every stream); ``_convert.add_service`` registers a
        serializer that passes the bytes through."""
        record = await self._manager.record(_require_run_id(request.run_id))
        encoder = convert.ResultEncoder(save_responses=convert.saves_responses(record))
        stream = ResultStream(self._manager, StreamRequest(
            run_id=request.run_id, after_seq=request.after_seq,
            replay_only=request.replay_only, max_batch=request.max_batch,
            snapshot_interval_ms=request.snapshot_interval_ms), record, encoder,
            self._replays)
        with self._metrics.streaming(stream) as record_lag:
            async for message in stream.messages():
                record_lag(message.head_seq - message.last_seq)
                yield convert.stream_response(message)

    @_unary
    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        view = await self._manager.view(_require_run_id(request.run_id))
        return convert.get_run_response(view)

    @_unary
    async def ListRuns(self, request: pb.ListRunsRequest,
                       context: Context) -> pb.ListRunsResponse:
        if request.page_size < 0:
            raise BadRequestError("page_size must not be negative")
        wanted = convert.run_statuses(request.statuses)
        if request.statuses and not wanted:
            return convert.list_runs_response([], None)  # UNSPECIFIED matches nothing
        views, token = await self._manager.list_runs(
            fleet_id=request.fleet_id or None, statuses=wanted,
            page_size=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token or None)
        return convert.list_runs_response(views, token)

    @_unary
    async def CancelRun(self, request: pb.CancelRunRequest,
                        context: Context) -> pb.CancelRunResponse:
        view = await self._manager.cancel(_require_run_id(request.run_id), request.reason)
        return convert.cancel_response(view)

    @_unary
    async def ValidateManifest(self, request: pb.ValidateManifestRequest,
                               context: Context) -> pb.ValidateManifestResponse:
        given = ManifestInput(request.manifest, request.run_key, request.manifest_path)
        return convert.validation(await self._manager.validate(given))

    @_unary
    async def ListPlugins(self, request: pb.ListPluginsRequest,
                          context: Context) -> pb.ListPluginsResponse:
        return convert.plugins(self._manager.host.infos())

    @_streaming
    async def GetArtifact(self, request: pb.GetArtifactRequest,
                          context: Context) -> AsyncIterator[pb.GetArtifactResponse]:
        record = await self._manager.record(_require_run_id(request.run_id))
        path = artifact_path(record, request.name)
        async for chunk in read_chunks(path, request.offset, request.chunk_size):
            yield convert.artifact_chunk(request.name, chunk)
