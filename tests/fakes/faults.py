"""Scriptable faults shared by the fake upstream servers (aiohttp.web).

A fake consults its `FaultScript` once per scripted request: explicit faults queued with `push`
come first, in order; when the queue is empty, `rates` draw random faults from a seeded RNG (for
fault-injection runs); otherwise the request is served normally. Every fake also exposes the
script over HTTP for standalone use:

    POST /_fake/faults   [{"kind": "status", "status": 429, "headers": {"retry-after": "1"}, "times": 2}, ...]
    POST /_fake/rates    {"seed": 1, "rates": {"status:500": 0.10, "reset": 0.02}, "latency": 0.05}
    GET  /_fake/requests the recorded requests (method, path, headers, JSON body or form fields)
    POST /_fake/clear    forget faults, rates and recorded requests

Echo: in a fault's body (any string inside it, or a `malformed`/`error_200` body given as text) and
header values, ``{authorization}`` becomes the request's Authorization header and ``{token}`` the
credential alone, as a misconfigured upstream or proxy quoting the request back would do.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

FaultKind = Literal["status", "reset", "truncate", "malformed", "error_200", "latency", "stall"]


@dataclass
class Fault:
    """One misbehaviour.

    - status: answer `status` with `body` (JSON) and `headers`
    - reset: abort the TCP connection (RST) without answering
    - truncate: announce a Content-Length, send half of a valid body, close
    - malformed: 200 with a body that is not JSON
    - error_200: 200 carrying an error object instead of a result
    - latency: wait `delay` seconds, then answer normally
    - stall: never answer (a queued job never completes, for queue APIs)
    """

    kind: FaultKind
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (field name, content type, bytes)


class FaultScript:
    def __init__(self, seed: int = 0) -> None:
        self.queue: deque[Fault] = deque()
        self.rates: dict[str, float] = {}
        self.latency = 0.0
        self.rng = random.Random(seed)

    def push(self, fault: Fault, times: int = 1) -> None:
        for _ in range(times):
            self.queue.append(fault)

    def set_rates(self, rates: dict[str, float], seed: int = 0, latency: float | None = None) -> None:
        """`rates` keys: "status:500", "status:429", "reset", "truncate", "malformed", "error_200"."""
        self.rates = dict(rates)
        self.rng = random.Random(seed)
        if latency is not None:
            self.latency = latency

    def clear(self) -> None:
        self.queue.clear()
        self.rates = {}
        self.latency = 0.0

    def next(self) -> Fault | None:
        if self.queue:
            return self.queue.popleft()
        if self.rates:
            draw = self.rng.random()
            for key, probability in self.rates.items():
                if draw < probability:
                    return _fault_from_key(key)
                draw -= probability
        return None


def _fault_from_key(key: str) -> Fault:
    kind, _, status = key.partition(":")
    if kind == "status":
        return Fault("status", status=int(status or 500))
    return Fault(kind)  # type: ignore[arg-type]


def fault_from_json(item: dict[str, Any]) -> tuple[Fault, int]:
    times = int(item.pop("times", 1))
    return Fault(**item), times


async def reset_connection(request: web.Request) -> web.StreamResponse:
    """Abort with a TCP RST: the client sees 'connection reset' with no HTTP answer."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise asyncio.CancelledError  # aiohttp drops the handler quietly


async def truncated_response(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: max(1, len(body) // 2)])
    transport = request.transport
    if transport is not None:
        transport.close()
    return response


def add_control_routes(app: web.Application, script: FaultScript, recorded: list[RecordedRequest]) -> None:
    async def faults(request: web.Request) -> web.Response:
        for item in await request.json():
            fault, times = fault_from_json(dict(item))
            script.push(fault, times)
        return web.json_response({"queued": len(script.queue)})

    async def rates(request: web.Request) -> web.Response:
        body = await request.json()
        script.set_rates(body.get("rates", {}), int(body.get("seed", 0)), body.get("latency"))
        return web.json_response({"rates": script.rates, "latency": script.latency})

    async def requests(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps([asdict(r) for r in recorded]), content_type="application/json")

    async def clear(request: web.Request) -> web.Response:
        script.clear()
        recorded.clear()
        return web.json_response({"cleared": True})

    app.router.add_post("/_fake/faults", faults)
    app.router.add_post("/_fake/rates", rates)
    app.router.add_get("/_fake/requests", requests)
    app.router.add_post("/_fake/clear", clear)


ECHO_AUTHORIZATION = "{authorization}"
ECHO_TOKEN = "{token}"


def echo(value: Any, request: web.Request) -> Any:
    """`value` (a JSON body, a text body or a headers dict) with the echo placeholders filled in."""
    if isinstance(value, str):
        header = request.headers.get("Authorization", "")
        token = header.partition(" ")[2].strip() or header
        return value.replace(ECHO_AUTHORIZATION, header).replace(ECHO_TOKEN, token)
    if isinstance(value, dict):
        return {echo(k, request): echo(v, request) for k, v in value.items()}
    if isinstance(value, list):
        return [echo(item, request) for item in value]
    return value


def lower_headers(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}
