"""Optional bearer-token authentication, as a server interceptor.

With a token configured, every call of ``fleetbench.v1`` must carry the metadata
``authorization: Bearer <token>``; anything else ends with UNAUTHENTICATED before the
handler runs. Tokens are compared in constant time (``hmac.compare_digest``) and never
logged.

Health checking and reflection stay open: load balancers and orchestrators probe health
without credentials, and reflection only describes the public ``.proto``. Neither
reveals or changes a run.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")

if TYPE_CHECKING:  # generic only in the type stubs
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the right bearer token (see the module docstring)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the bearer token must not be empty")
        self._expected = f"bearer {token}".encode()
        self._scheme_length = len("bearer ")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return _refusal(handler)

    def _authorized(self, metadata: Any) -> bool:
        given = b""
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                break
        # The scheme is case-insensitive (RFC 7235); the token itself is not.
        given = given[:self._scheme_length].lower() + given[self._scheme_length:]
        return hmac.compare_digest(given, self._expected)


def _refusal(handler: _Handler) -> _Handler:
    """A handler of the same shape as ``handler`` that ends with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "missing or wrong bearer token (metadata "
                            "'authorization: Bearer <token>')")

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=deserializer, response_serializer=serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse, request_deserializer=deserializer, response_serializer=serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse, request_deserializer=deserializer, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(
        refuse, request_deserializer=deserializer, response_serializer=serializer)
