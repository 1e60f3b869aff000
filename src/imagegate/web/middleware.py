"""Pure-ASGI middleware: client address, request ids, slow bodies and body-size caps (before parsing)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.config import ServerSettings
from imagegate.errors import PayloadTooLargeError, RequestTimeoutError
from imagegate.web.forwarded import TrustedProxies
from imagegate.web.responses import error_response

REQUEST_ID_HEADER = b"x-request-id"


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    """Gives every request an id (scope["state"]["request_id"]) and echoes it in x-request-id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuses bodies over the cap for their route: early from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # The body is never read: close the connection, or a client could go on trickling it.
            refusal = _too_large(limit)
            refusal.headers["connection"] = "close"
            await error_response(refusal)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is larger than the {limit // 1024} KiB this endpoint accepts")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ClientAddressMiddleware:
    """Puts the real client address in scope["client"] (and the scheme in scope["scheme"]) when the
    direct peer is a trusted proxy; the peer stays in scope["state"]["peer"]. Everything after this
    (rate caps, logs) reads scope["client"] and so sees one resolved address."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.proxies.networks:
            client = scope.get("client")
            peer = client[0] if client else None
            resolved = self.proxies.resolve(peer, scope.get("headers", []))
            if resolved is not None:
                scope.setdefault("state", {})["peer"] = peer
                scope["client"] = (resolved.host, 0)
                if resolved.scheme is not None and scope["type"] == "http":
                    scope["scheme"] = resolved.scheme
        await self.app(scope, receive, send)


class BodyTimeoutMiddleware:
    """Bounds how slowly a request body may arrive: `idle_seconds` without any data, or an average
    under `min_rate` bytes/s once `grace_seconds` have passed, raise a 408 (connection: close) from
    `receive`. After the last body chunk `receive` is passed through untouched (disconnect watchers).

    One deadline covers both: the body is too slow once now > start + max(grace, bytes / min_rate).
    """

    def __init__(
        self,
        app: ASGIApp,
        idle_seconds: float,
        min_rate: int,
        grace_seconds: float,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.min_rate = min_rate
        self.grace_seconds = grace_seconds
        self.on_timeout = on_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        done = False

        async def guarded() -> Message:
            nonlocal received, done
            if done:
                return await receive()
            timeout, reason = self._wait_limit(started, received)
            try:
                # Past the deadline, a chunk that is already buffered is still taken (timeout 0
                # only fires if receive() has to wait).
                async with asyncio.timeout(max(timeout, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise self._too_slow(reason, received, time.monotonic() - started) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, guarded, send)

    def _wait_limit(self, started: float, received: int) -> tuple[float, str]:
        """Seconds the next chunk may take, and which rule ends the wait."""
        timeout, reason = self.idle_seconds, "body_idle"
        if self.min_rate > 0:
            rate_left = started + max(self.grace_seconds, received / self.min_rate) - time.monotonic()
            if rate_left < timeout:
                timeout, reason = rate_left, "upload_rate"
        return timeout, reason

    def _too_slow(self, reason: str, received: int, elapsed: float) -> RequestTimeoutError:
        if self.on_timeout is not None:
            self.on_timeout(reason)
        if reason == "body_idle":
            message = f"no request body data arrived for {self.idle_seconds:g} s"
        else:
            rate = received / elapsed if elapsed > 0 else 0.0
            message = f"the request body arrived at {rate:.0f} bytes/s, under the minimum of {self.min_rate} bytes/s"
        return RequestTimeoutError(message, headers={"connection": "close"})


def client_address_middleware(server: ServerSettings) -> Middleware:
    return Middleware(ClientAddressMiddleware, proxies=TrustedProxies(server.trusted_proxies, server.proxy_header))


def body_timeout_middleware(server: ServerSettings, on_timeout: Callable[[str], None]) -> Middleware:
    return Middleware(
        BodyTimeoutMiddleware,
        idle_seconds=server.body_idle_timeout_seconds,
        min_rate=server.min_upload_bytes_per_second,
        grace_seconds=server.min_upload_grace_seconds,
        on_timeout=on_timeout,
    )
