"""Shared HTTP plumbing for provider adapters (aiohttp), and the translation of transport failures.

This is the one boundary where aiohttp's exceptions become `imagegate.errors`: connection
refused/reset, timeouts, truncated bodies and oversize bodies. Status-code translation stays in
each adapter, since every provider words its errors differently.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from imagegate import __version__
from imagegate.config import ProviderSettings
from imagegate.errors import UpstreamError, UpstreamMalformedError, UpstreamTimeoutError

USER_AGENT = f"imagegate/{__version__}"


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self, provider: str) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise UpstreamMalformedError(
                f"{provider} returned a body that is not JSON (HTTP {self.status})",
                provider=provider,
                upstream_status=self.status,
                may_have_charged=200 <= self.status < 300,
            ) from None


class HttpClient:
    """One aiohttp session per provider, created lazily inside the running loop."""

    @classmethod
    def for_instance(cls, name: str, config: ProviderSettings) -> HttpClient:
        """The client of provider instance `name`, with the limits of its `[providers.NAME]` table."""
        return cls(
            name,
            connect_timeout=config.connect_timeout_seconds,
            max_connections=config.max_connections,
            max_bytes=config.max_result_bytes,
        )

    def __init__(self, provider: str, *, connect_timeout: float, max_connections: int, max_bytes: int) -> None:
        self.provider = provider
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                auto_decompress=True,
                # No cookies: a provider's (e.g. a CDN's bot-management cookie) would otherwise be kept
                # and sent back on every later call, whoever made it; filtering them costs per call too.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: aiohttp.FormData | bytes | None = None,
        max_bytes: int | None = None,
    ) -> UpstreamResponse:
        """Send one request and read the whole body (capped). `timeout` bounds the whole exchange."""
        body = orjson.dumps(json) if json is not None else data
        send_headers = dict(headers or {})
        if json is not None:
            send_headers["Content-Type"] = "application/json"
        sent = False
        try:
            async with asyncio.timeout(timeout):
                async with self.session().request(method, url, headers=send_headers, data=body) as response:
                    sent = True
                    content = await read_capped(response, max_bytes or self.max_bytes, self.provider)
                    return UpstreamResponse(response.status, response.headers, content)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{self.provider} did not answer within {timeout:.1f}s",
                provider=self.provider,
                may_have_charged=sent or method != "GET",
            ) from None
        except aiohttp.ClientError as exc:
            raise transport_error(self.provider, exc, sent or method == "POST") from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int, provider: str) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise UpstreamMalformedError(f"{provider} reply of {declared} bytes is over the cap", provider=provider)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamMalformedError(f"{provider} reply is over the {max_bytes} byte cap", provider=provider)
        chunks.append(chunk)
    return b"".join(chunks)


def transport_error(provider: str, exc: aiohttp.ClientError, may_have_charged: bool) -> UpstreamError:
    """Connection failures before a reply are safe to retry anywhere; a broken reply may have billed."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"cannot connect to {provider}", provider=provider, code="upstream_unreachable")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamMalformedError(
            f"{provider} sent a truncated reply", provider=provider, may_have_charged=may_have_charged
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return UpstreamError(
            f"{provider} closed the connection",
            provider=provider,
            code="upstream_connection_reset",
            may_have_charged=may_have_charged,
        )
    return UpstreamError(
        f"{provider} request failed ({type(exc).__name__})", provider=provider, may_have_charged=may_have_charged
    )


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`retry-after-ms` first, then `retry-after` in seconds (float) or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def sse_events(response: aiohttp.ClientResponse, max_event_bytes: int) -> AsyncIterator[tuple[str, bytes]]:
    """Yield (event name, data) pairs from a text/event-stream body.

    Reads raw chunks and splits lines itself: image events carry megabytes of base64 on one
    line, more than aiohttp's line reader accepts.
    """
    buffer = b""
    event, data, size = "message", [], 0
    async for chunk in response.content.iter_any():
        buffer += chunk
        if len(buffer) > max_event_bytes + 4096:
            raise UpstreamMalformedError("stream event over the size cap")
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line, buffer = buffer[:newline].rstrip(b"\r"), buffer[newline + 1 :]
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data, size = "message", [], 0
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"data":
                size += len(value)
                if size > max_event_bytes:
                    raise UpstreamMalformedError("stream event over the size cap")
                data.append(value)
    if data:
        yield event, b"\n".join(data)
