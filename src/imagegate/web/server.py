"""The HTTP server: uvicorn (httptools + uvloop) with the guards of the `[server]` settings.

uvicorn has no header-read timeout and answers its own `limit_concurrency` with a plain-text 503,
so `GuardedProtocol` (a small subclass of its httptools protocol) adds both:

- a header timer armed when a connection opens (and when each later request begins) and
  cancelled once the headers are complete: a client that never finishes its headers gets a 408
  (or, if it sent nothing, a plain close);
- a connection cap: a connection opened while `max_connections` are already open has its
  request answered 503 in OpenAI's error shape with `Retry-After` and `connection: close`.

Slow bodies are bounded in the app (`BodyTimeoutMiddleware`); forwarded headers are read only by
`ClientAddressMiddleware`, so uvicorn's own proxy-header trust is switched off. On SIGTERM uvicorn
stops accepting, lets requests in flight finish for `shutdown_grace_seconds`, then cancels them
(`ShutdownGuard` answers those still unanswered with a 503) and runs the lifespan shutdown.
After the lifespan start-up the heap built so far is frozen out of the cyclic collector's reach
(`imagegate.web.heap`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from imagegate.config import ServerSettings, Settings
from imagegate.errors import ImagegateError, RequestTimeoutError, ServiceUnavailableError, TooManyConnectionsError
from imagegate.imaging.memory import keep_request_buffers
from imagegate.metrics import Metrics
from imagegate.web.coalesce import CoalescingTransport
from imagegate.web.heap import FreezeAfterStartup
from imagegate.web.responses import error_response

log = logging.getLogger("imagegate.server")


def raw_error(exc: ImagegateError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 error response with OpenAI's error body and `connection: close`."""
    body = orjson.dumps(exc.body())
    head = [STATUS_LINE[exc.status]]
    for name, value in default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + body


async def too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app that answers requests on connections over the cap."""
    error = TooManyConnectionsError(
        "the server is at its connection limit; retry shortly", headers={"retry-after": "1", "connection": "close"}
    )
    await error_response(error)(scope, receive, send)


_REFUSE = cast(ASGI3Application, too_many_connections)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a header-read timeout and a connection cap (set by `protocol_class`)."""

    header_timeout: float = 10.0
    max_connections: int = 512
    metrics: Metrics | None = None

    _header_timer: asyncio.TimerHandle | None = None
    _over_cap: bool = False
    _request_begun: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Headers and body (written separately by uvicorn) leave in one send: web/coalesce.py.
        self.transport = cast(asyncio.Transport, CoalescingTransport(transport, self.loop))
        self._over_cap = len(self.connections) > self.max_connections
        if self._over_cap:
            log.warning("connection cap (%d) reached; answering 503", self.max_connections)
            if self.metrics is not None:
                self.metrics.observe_connection_refused()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._request_begun = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, _REFUSE if self._over_cap else app)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            # An earlier request is still being answered; the client is not the one stalling.
            self._arm_header_timer()
            return
        if self._request_begun:
            if self.metrics is not None:
                self.metrics.observe_slow_client("header_timeout")
            error = RequestTimeoutError(f"the request headers did not arrive within {self.header_timeout:g} s")
            self.transport.write(raw_error(error, self.server_state.default_headers))
        self.transport.close()


def protocol_class(server: ServerSettings, metrics: Metrics | None) -> type[GuardedProtocol]:
    """`GuardedProtocol` configured from `[server]` (uvicorn builds one protocol object per connection)."""

    class ConfiguredProtocol(GuardedProtocol):
        header_timeout = server.header_timeout_seconds
        max_connections = server.max_connections

    ConfiguredProtocol.metrics = metrics
    return ConfiguredProtocol


class ShutdownGuard:
    """Answers a request cancelled before its response started (graceful shutdown ran out) with a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not started:
                error = ServiceUnavailableError(
                    "the server is shutting down; retry", code="shutting_down", headers={"connection": "close"}
                )
                await error_response(error)(scope, receive, send)
            raise


def uvicorn_config(app: ASGIApp, settings: Settings, log_level: str, metrics: Metrics | None) -> uvicorn.Config:
    server = settings.server
    return uvicorn.Config(
        ShutdownGuard(app),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        loop="uvloop",
        http=protocol_class(server, metrics),
        proxy_headers=False,  # ClientAddressMiddleware reads forwarded headers, from trusted proxies only
        access_log=False,
        timeout_keep_alive=server.keep_alive_seconds,
        timeout_graceful_shutdown=server.shutdown_grace_seconds,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the app draining the moment a shutdown signal arrives, so /readyz
    goes red (503) while the requests in flight finish."""

    def __init__(self, config: uvicorn.Config, app: ASGIApp, drain_delay: float = 0.0) -> None:
        super().__init__(config)
        self._app = app
        self._drain_delay = drain_delay
        self._draining = False

    def handle_exit(self, sig: int, frame: object) -> None:
        state = getattr(self._app, "state", None)
        if state is not None:
            state.draining = True
        if self._drain_delay > 0 and not self._draining:  # a second signal stops at once
            self._draining = True
            log.info("draining: /readyz answers 503 for %.1fs before the listener closes", self._drain_delay)
            loop = asyncio.get_running_loop()  # the handler runs on the loop's thread, between its steps
            loop.call_soon_threadsafe(loop.call_later, self._drain_delay, super().handle_exit, sig, frame)
            return
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def serve(app: ASGIApp, settings: Settings, log_level: str, metrics: Metrics | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM, then drain as configured."""
    if settings.limits.memory_trim_idle_seconds > 0:  # idle trims give a burst's memory back
        keep_request_buffers()
    config = uvicorn_config(FreezeAfterStartup(app), settings, log_level, metrics)
    DrainingServer(config, app, settings.server.drain_delay_seconds).run()
