"""BodyTimeoutMiddleware with a scripted `receive`: idle bodies, slow uploads, and the pass-through after."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from imagegate.errors import ImagegateError
from imagegate.web.middleware import BodyTimeoutMiddleware
from imagegate.web.responses import error_response


async def _echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body and answers its length; an ImagegateError becomes its error response."""
    try:
        body = await Request(scope, receive).body()
    except ImagegateError as exc:
        await error_response(exc)(scope, receive, send)
        return
    await Response(str(len(body)))(scope, receive, send)


def _scripted(chunks: list[tuple[float, bytes]]) -> Callable[[], Awaitable[Message]]:
    """`receive` that waits `delay` before each chunk; after the last one, it waits forever (a live client)."""
    remaining = list(chunks)

    async def receive() -> Message:
        if not remaining:
            await asyncio.Event().wait()
        delay, body = remaining.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": bool(remaining)}

    return receive


async def _run(
    app: BodyTimeoutMiddleware, receive: Callable[[], Awaitable[Message]]
) -> tuple[int, dict[str, str], bytes]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


async def test_fast_body_passes() -> None:
    app = BodyTimeoutMiddleware(_echo_length, idle_seconds=0.2, min_rate=1000, grace_seconds=0.2)
    status, _, body = await _run(app, _scripted([(0, b"a" * 10), (0.05, b"b" * 5)]))
    assert (status, body) == (200, b"15")


async def test_idle_body_gets_408_and_connection_close() -> None:
    reasons: list[str] = []
    app = BodyTimeoutMiddleware(_echo_length, idle_seconds=0.1, min_rate=0, grace_seconds=0, on_timeout=reasons.append)
    status, headers, body = await _run(app, _scripted([(0, b"a"), (5, b"b")]))
    error = orjson.loads(body)["error"]
    assert status == 408 and headers["connection"] == "close"
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert "no request body data" in error["message"]
    assert reasons == ["body_idle"]


async def test_trickling_upload_under_minimum_rate_gets_408() -> None:
    # 100 bytes every 50 ms is 2 KB/s: never idle for long, but under the 10 KB/s minimum.
    reasons: list[str] = []
    chunks = [(0.05, b"x" * 100) for _ in range(100)]
    app = BodyTimeoutMiddleware(
        _echo_length, idle_seconds=5, min_rate=10_000, grace_seconds=0.2, on_timeout=reasons.append
    )
    status, _, body = await _run(app, _scripted(chunks))
    assert status == 408
    assert "under the minimum of 10000 bytes/s" in orjson.loads(body)["error"]["message"]
    assert reasons == ["upload_rate"]


async def test_receive_after_the_body_is_not_timed() -> None:
    """Disconnect watchers call receive() after the body; that wait must not turn into a 408."""
    events: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        events.append(await receive())
        events.append(await receive())  # waits past idle_seconds for the disconnect
        await Response("ok")(scope, receive, send)

    pending = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.sleep(0.3)
        return {"type": "http.disconnect"}

    guarded = BodyTimeoutMiddleware(app, idle_seconds=0.05, min_rate=1_000_000, grace_seconds=0)
    status, _, _ = await _run(guarded, receive)
    assert status == 200 and [e["type"] for e in events] == ["http.request", "http.disconnect"]
