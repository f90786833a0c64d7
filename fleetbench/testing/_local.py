"""A throwaway HTTP server on loopback, for answers the fake vendors do not script."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

__all__ = ["Handler", "local_server"]

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
"""aiohttp's low-level handler: every request, whatever its method and path."""


@contextlib.asynccontextmanager
async def local_server(handler: Handler | web.Application) -> AsyncIterator[str]:
    """Serve ``handler`` (a low-level handler, or an ``aiohttp.web.Application`` with its
    routes) on 127.0.0.1 at a free port while the block runs; yield its base URL
    ``http://127.0.0.1:PORT``. For what a fake vendor cannot produce: a gateway's odd
    answers, a redirect, a cookie, a judge that answers per prompt."""
    if isinstance(handler, web.Application):
        runner: web.BaseRunner = web.AppRunner(handler, access_log=None)
    else:
        runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
