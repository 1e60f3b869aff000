"""The plumbing every fake upstream shares: an aiohttp server on 127.0.0.1, its lifecycle, the
request record and the fault script with its control routes (tests/fakes/faults.py).

A fake subclasses `FakeAPI` (one base URL: `base_url` is the server's root plus the class's
`base_path`, e.g. ``/v1`` or ``/v1beta``) or `FakeServer` directly with its own `urls()` (fal's fake
answers ``(run_url, queue_url)``), extends `app()` with its routes, and serves either on the test's
loop (``await fake.start()`` ... ``await fake.stop()``) or from a daemon thread with a loop of its own
(``with fake.run_in_thread() as url:``), for code that blocks (a gateway process, the sync SDK).

`fault_answer` is the generic answer to a `Fault` for a fake whose error replies differ only in
their JSON body (`error_body`); fakes with richer upstream-specific faults keep their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from aiohttp import web

from tests.fakes.faults import (
    Fault,
    FaultScript,
    RecordedRequest,
    add_control_routes,
    echo,
    lower_headers,
    reset_connection,
    truncated_response,
)

Urls = TypeVar("Urls")
HOST = "127.0.0.1"
START_SECONDS = 30.0
STOP_SECONDS = 10.0


class FakeServer(Generic[Urls]):
    """One fake upstream. `script` scripts faults; `requests` records what the fake chose to record."""

    base_path: ClassVar[str] = ""  # what `base_url` adds to the server's root ("/v1", "/v1beta", "")
    thread_name: ClassVar[str] = "fake-upstream"
    max_body: ClassVar[int] = 256 * 1024 * 1024

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.script = FaultScript(seed)
        self.requests: list[RecordedRequest] = []
        self.root_url = ""  # http://127.0.0.1:PORT, once started
        self.base_url = ""  # root_url + base_path, once started
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # --- what subclasses extend ----------------------------------------------------------------

    def app(self) -> web.Application:
        """The application with the control routes; subclasses add their API routes to it."""
        app = web.Application(client_max_size=self.max_body)
        add_control_routes(app, self.script, self.requests)
        return app

    def urls(self) -> Urls:
        """What `start` returns and `run_in_thread` yields."""
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> Urls:
        """Serve on 127.0.0.1:`port` (0: any free port) on the running loop; returns `urls()`.

        A handler is cancelled when its client goes away (a stalled or slow answer ends with the
        call that waited for it)."""
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, port).start()
        bound = self._runner.addresses[0][1]
        self.root_url = f"http://{HOST}:{bound}"
        self.base_url = f"{self.root_url}{self.base_path}"
        return self.urls()

    async def stop(self) -> None:
        """Release stalled handlers (`wait_stopping`), then close the server."""
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def run_in_thread(self, port: int = 0) -> Iterator[Urls]:
        """Serve from a daemon thread with its own event loop; yields `urls()`."""
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()

        thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(port), loop).result(START_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(STOP_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_SECONDS)
            if not thread.is_alive():
                loop.close()

    # --- helpers for handlers ----------------------------------------------------------------------

    def record(self, request: web.Request, body: Any = None, *, with_query: bool = False) -> RecordedRequest:
        """Append `request` (its path, with the query string when `with_query`) to `requests`."""
        path = request.path_qs if with_query else request.path
        recorded = RecordedRequest(request.method, path, lower_headers(request), body)
        self.requests.append(recorded)
        return recorded

    async def wait_stopping(self) -> None:
        """Never answer: wait until the fake stops, then drop the handler quietly."""
        assert self._stopping is not None, "the fake is not running"
        await self._stopping.wait()
        raise asyncio.CancelledError

    def error_body(self, status: int) -> Any:
        """The JSON body of a scripted `status` fault that names no body (and of `error_200`)."""
        return {"error": {"message": f"HTTP {status}", "code": status}}

    async def fault_answer(
        self, request: web.Request, fault: Fault, sample: bytes, content_type: str = "application/json"
    ) -> web.StreamResponse | None:
        """The answer `fault` asks for; None to answer normally (after a `latency` fault's delay).

        `sample` is a valid answer that a `truncate` fault cuts short. Bodies and headers given by
        the fault are echoed (``{token}``, ``{authorization}``)."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "stall":
            await self.wait_stopping()
        if fault.kind == "reset":
            return await reset_connection(request)
        if fault.kind == "truncate":
            return await truncated_response(request, sample, content_type)
        headers = echo(fault.headers, request)
        if fault.kind == "malformed":
            text = fault.body if isinstance(fault.body, str) else "<html><body>upstream hiccup</body></html>"
            return web.Response(
                status=200, body=echo(text, request).encode(), headers=headers, content_type="text/html"
            )
        body = echo(fault.body, request) if fault.body is not None else self.error_body(500)
        if fault.kind == "error_200":
            return json_response(200, body, headers)
        if fault.body is None:
            body = self.error_body(fault.status)
        return json_response(fault.status, body, headers)


class FakeAPI(FakeServer[str]):
    """A fake with one base URL: `start` returns it and `run_in_thread` yields it."""

    def urls(self) -> str:
        return self.base_url


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
