"""The server process's garbage-collector policy: freeze what start-up built, so full collections stay short.

At start-up the gateway imports SQLAlchemy, pydantic, aiohttp, Pillow, alembic and builds the catalog:
about 125,000 long-lived objects tracked by the collector. CPython's cyclic collector walks all of them in every full
(generation 2) collection, and the allocation churn of a burst of requests triggers one every few
hundred requests: measured here at 80-97 ms each, during which the event loop serves nothing (the
p99 of a burst). ``gc.freeze()`` moves every object alive at that point into a permanent generation
that collections skip; objects created afterwards are collected as before (refcounting still frees
frozen objects that become unreachable without a cycle). After the freeze a full collection took
about 2 ms in the same run (docs/benchmarks.md).

`FreezeAfterStartup` wraps the ASGI app of ``imagegate serve`` and freezes once, right after the
lifespan start-up has completed (the database connected and migrated, lazily imported modules
loaded). It is not used by in-process apps (tests build many apps in one process, and freezing
each one's start-up would keep their garbage cycles forever).
"""

from __future__ import annotations

import gc
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("imagegate.server")


def freeze_heap() -> int:
    """Collect once, then move every surviving object to the permanent generation; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FreezeAfterStartup:
    """ASGI wrapper: `freeze_heap` when the app reports ``lifespan.startup.complete``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_then_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                started = time.perf_counter()
                frozen = freeze_heap()
                log.debug("froze %d start-up objects in %.1f ms", frozen, (time.perf_counter() - started) * 1000)
            await send(message)

        await self.app(scope, receive, send_then_freeze)
