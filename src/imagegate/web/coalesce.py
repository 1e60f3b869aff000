"""Writes to a client connection gathered into one send per event-loop turn.

uvicorn's httptools protocol writes a response's status line and headers with one
``transport.write`` and each body chunk with another, so a small JSON answer leaves in two
segments: two ``send`` system calls here, and two wake-ups of the client, which reads the headers,
then waits for the body. On loopback or a fast LAN each send delivers the segment to the peer
within the system call, and that (not the few hundred bytes) is what costs: about 0.5 ms of this
process's CPU per send on the 2-core VM of docs/benchmarks.md.

`CoalescingTransport` wraps the connection's transport: a write is kept until the end of the
current event-loop turn (``loop.call_soon``), and everything written in that turn (headers plus a
body sent by the same task step, or several SSE events) goes out with one ``writelines`` (one
``writev``). Nothing waits longer than that turn, so streams and keepalive comments are not
delayed. Closing flushes first; aborting drops what is pending, as the transport's own abort
drops its buffer. Everything else is the wrapped transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """An `asyncio.Transport` stand-in that sends each loop turn's writes together."""

    __slots__ = ("_loop", "_pending", "_pending_bytes", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] = []
        self._pending_bytes = 0
        self._scheduled = False

    @property
    def wrapped(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is pending now (also run at the end of the turn in which it was written)."""
        if not self._pending:
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def _flush(self) -> None:
        self._scheduled = False
        self.flush()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._pending_bytes = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._transport, name)
