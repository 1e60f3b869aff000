"""Writes to a client connection leave together at the end of the loop turn (web/coalesce.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from imagegate.web.coalesce import CoalescingTransport


class Recording(asyncio.Transport):
    """A transport that records each send (one `write` or one `writelines` call)."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.sends.append(b"".join(bytes(chunk) for chunk in list_of_data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 7

    def pause_reading(self) -> None:
        self.paused = True


async def test_headers_and_body_written_in_one_turn_leave_in_one_send() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    transport.write(b"")  # nothing to send: no empty chunk
    assert inner.sends == []
    assert transport.get_write_buffer_size() == 7 + 40
    await asyncio.sleep(0)
    assert inner.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert transport.get_write_buffer_size() == 7


async def test_each_turn_is_sent_without_waiting_for_the_next() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    for event in (b"data: 1\n\n", b": keepalive\n\n", b"data: 2\n\n"):
        transport.write(event)
        await asyncio.sleep(0)
    assert inner.sends == [b"data: 1\n\n", b": keepalive\n\n", b"data: 2\n\n"]


async def test_close_sends_what_is_pending_first() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.writelines([b"HTTP/1.1 408 Request Timeout\r\n", b"\r\n"])
    transport.close()
    assert inner.sends == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert len(inner.sends) == 1


async def test_abort_drops_what_is_pending() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"half an answer")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.sends == [] and inner.aborted


async def test_nothing_is_written_to_a_closing_transport() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"late")
    inner.closed = True  # the peer went away before the end of the turn
    await asyncio.sleep(0)
    assert inner.sends == []


async def test_everything_else_is_the_wrapped_transports() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.pause_reading()
    assert inner.paused and transport.wrapped is inner
    assert not transport.is_closing()
