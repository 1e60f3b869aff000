"""`imagegate serve` freezes the start-up heap once the lifespan start-up completes (imagegate.web.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from imagegate.web.heap import FreezeAfterStartup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the test process must not keep what it froze


async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "lifespan"
    assert (await receive())["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.complete"})
    assert (await receive())["type"] == "lifespan.shutdown"
    await send({"type": "lifespan.shutdown.complete"})


async def test_the_heap_is_frozen_after_startup_completes_not_before(unfrozen: None) -> None:
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    frozen_when_sent: dict[str, int] = {}

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        frozen_when_sent[message["type"]] = gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    await FreezeAfterStartup(lifespan_app)({"type": "lifespan"}, receive, send)
    # the start-up objects are frozen before uvicorn hears that start-up is complete
    assert frozen_when_sent["lifespan.startup.complete"] > 10_000
    # once: nothing more is frozen at shutdown (frozen objects freed by refcounting leave the count)
    assert frozen_when_sent["lifespan.shutdown.complete"] <= frozen_when_sent["lifespan.startup.complete"]


async def test_http_requests_pass_through_untouched(unfrozen: None) -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        seen.append(message)

    await FreezeAfterStartup(app)({"type": "http"}, receive, send)
    assert [m["type"] for m in seen] == ["http.response.start", "http.response.body"]
    assert gc.get_freeze_count() == 0
