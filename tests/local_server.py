"""An aiohttp application served on 127.0.0.1 for the length of a test (a stand-in origin or upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def local_app(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on a free port of 127.0.0.1; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
