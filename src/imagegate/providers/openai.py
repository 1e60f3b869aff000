"""The `openai` provider: OpenAI's Images API (generations and edits, plain and streamed).

Built only by `create(settings)`, which reads the `[providers.openai]` settings (base URL, key,
timeouts); the provider itself never reads config or the environment. Request building, reply
parsing and the translation of OpenAI's error replies live in `openai_wire`; transport failures
are translated by `imagegate.providers.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import aiohttp
import orjson

from imagegate.config import ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import UpstreamAuthError, UpstreamError, UpstreamTimeoutError
from imagegate.providers import openai_wire as wire
from imagegate.providers.base import (
    CallContext,
    EditInputs,
    PartialImage,
    ProducedImage,
    ProviderResult,
    StreamDone,
    StreamEvent,
)
from imagegate.providers.http import HttpClient, UpstreamResponse, read_capped, sse_events, transport_error
from imagegate.providers.kinds import ProviderKind

NAME = wire.NAME
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
ERROR_BODY_CAP = 1024 * 1024


class Endpoint(Protocol):
    """Where a call goes and how the key travels (OpenAI's base URL and bearer; Azure's deployments)."""

    def url(self, provider_model: str, operation: str) -> str: ...

    def auth(self, key: str) -> dict[str, str]: ...


class BearerEndpoint:
    """`{base_url}/images/{generations|edits}` with `Authorization: Bearer <key>` (OpenAI and most hosts)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def url(self, provider_model: str, operation: str) -> str:
        return f"{self.base_url}/images/{operation}"

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


class OpenAIProvider:
    """OpenAI's Images API, or (an instance named otherwise, with its `quirks`) a host that speaks it."""

    fallback_only = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        http: HttpClient,
        name: str = NAME,
        quirks: wire.WireQuirks = wire.OPENAI,
        key_required: bool = True,
        offerings: Callable[[ModelInfo], Offering | None] | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        self.name = name
        self._endpoint = endpoint or BearerEndpoint(base_url)
        self._key = api_key
        self._timeout_seconds = timeout
        self._http = http
        self._quirks = quirks
        self._key_required = key_required
        self._offerings = offerings

    def available(self) -> bool:
        return self._key is not None or not self._key_required

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return self._offerings(model) if self._offerings is not None else None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        url, body, form = await self._prepare(job, inputs, stream=False)
        response = await self._http.request(
            "POST", url, timeout=self._timeout(ctx), headers=self._headers(), json=body, data=form
        )
        if not 200 <= response.status < 300:
            raise wire.translate_error(response.status, response.headers, response.body, self.name)
        return await self._result(job, response, ctx)

    async def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        """Partial images as they come, then `StreamDone` from the `*.completed` event."""
        url, body, form = await self._prepare(job, inputs, stream=True)
        timeout = self._timeout(ctx)
        deadline = asyncio.get_running_loop().time() + timeout
        opened = await self._open_stream(url, body, form, timeout)
        if isinstance(opened, UpstreamResponse):  # not an event stream: an error, or a whole JSON result
            if not 200 <= opened.status < 300:
                raise wire.translate_error(opened.status, opened.headers, opened.body, self.name)
            yield StreamDone(await self._result(job, opened, ctx))
            return
        try:
            async with contextlib.aclosing(self._events(job, opened, deadline, timeout)) as events:
                async for event in events:
                    yield event
        finally:
            if opened.content.at_eof():
                opened.release()
            else:
                opened.close()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- requests --------------------------------------------------------------------------------

    def _timeout(self, ctx: CallContext) -> float:
        return min(self._timeout_seconds, ctx.remaining())

    def _headers(self) -> dict[str, str]:
        headers = dict(self._quirks.extra_headers)
        if self._key is not None:
            headers.update(self._endpoint.auth(self._key))
        return headers

    async def _prepare(
        self, job: ProviderJob, inputs: EditInputs | None, *, stream: bool
    ) -> tuple[str, dict[str, object] | None, aiohttp.FormData | None]:
        """(URL, JSON body, multipart body) of the call: generations are JSON, edits multipart."""
        if self._key is None and self._key_required:
            raise UpstreamAuthError(f"{self.name} has no API key configured", provider=self.name, disable_provider=True)
        fields = wire.request_fields(job, stream=stream, quirks=self._quirks)
        if not self._quirks.model_in_body:
            fields.pop("model", None)
        if job.mode == "image-edit":
            url = self._endpoint.url(job.provider_model, "edits")
            if self._quirks.json_edits:
                return url, await wire.edit_json(fields, inputs), None
            return url, None, await wire.edit_form(fields, inputs)
        return self._endpoint.url(job.provider_model, "generations"), fields, None

    async def _open_stream(
        self, url: str, body: dict[str, object] | None, form: aiohttp.FormData | None, timeout: float
    ) -> aiohttp.ClientResponse | UpstreamResponse:
        """The open event-stream response, or the whole reply when it is anything else."""
        headers = self._headers()
        data: aiohttp.FormData | bytes | None = form
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream"
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.session().post(url, headers=headers, data=data)
                if response.status == 200 and response.content_type == "text/event-stream":
                    return response
                try:
                    cap = self._http.max_bytes if response.status == 200 else ERROR_BODY_CAP
                    content = await read_capped(response, cap, self.name)
                finally:
                    response.release()
                return UpstreamResponse(response.status, response.headers, content)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{self.name} did not answer within {timeout:.1f}s", provider=self.name, may_have_charged=True
            ) from None
        except aiohttp.ClientError as exc:
            raise transport_error(self.name, exc, True) from None

    # --- replies ---------------------------------------------------------------------------------

    async def _result(self, job: ProviderJob, response: UpstreamResponse, ctx: CallContext) -> ProviderResult:
        try:
            body, texts = wire.split_reply(response.body)
        except orjson.JSONDecodeError:
            body, texts = response.json(self.name), []  # raises: not JSON
        items = wire.result_items(body, self.name)
        fmt = wire.reply_format(body, job.output_format)
        if all(isinstance(item.get("b64_json"), str) for item in items):  # nothing to download
            images = [self._inline(item, fmt, texts) for item in items]
        else:
            images = await asyncio.gather(*(self._image(item, fmt, ctx, texts) for item in items))
        return ProviderResult(
            images=images,
            quality=wire.known(body.get("quality")),
            background=wire.known(body.get("background")),
            usage=wire.usage_of(body),
            upstream_request_id=response.headers.get("x-request-id"),
            billed=True,
            metadata=_metadata(response.headers),
        )

    async def _image(
        self, item: Mapping[str, Any], fmt: str, ctx: CallContext, texts: Sequence[memoryview] = ()
    ) -> ProducedImage:
        revised = item.get("revised_prompt")
        revised = revised if isinstance(revised, str) and revised else None
        url = item.get("url")
        if item.get("b64_json") is None and isinstance(url, str) and url.startswith(("https://", "http://")):
            return ProducedImage(await self._fetch(url, ctx), fmt, revised)
        return self._inline(item, fmt, texts)

    def _inline(self, item: Mapping[str, Any], fmt: str, texts: Sequence[memoryview]) -> ProducedImage:
        revised = item.get("revised_prompt")
        revised = revised if isinstance(revised, str) and revised else None
        return ProducedImage(wire.image_bytes(item.get("b64_json"), texts, self.name), fmt, revised)

    async def _fetch(self, url: str, ctx: CallContext) -> bytes:
        """Download a `url` result (dall-e). No credentials go with it: the URL is pre-signed."""
        try:
            response = await self._http.request("GET", url, timeout=self._timeout(ctx))
        except UpstreamError as exc:
            exc.may_have_charged = True  # the generation itself succeeded and was billed
            raise
        if response.status != 200 or not response.body:
            raise wire.malformed(f"the image URL answered HTTP {response.status}", self.name)
        return response.body

    async def _events(
        self, job: ProviderJob, response: aiohttp.ClientResponse, deadline: float, timeout: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """Read SSE frames with the deadline applied to each read, never across a `yield`."""
        request_id = response.headers.get("x-request-id")
        frames = cast(AsyncGenerator[tuple[str, bytes], None], sse_events(response, self._http.max_bytes))
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        name, data = await frames.__anext__()
                except StopAsyncIteration:
                    break
                event = _event(job, name, data, request_id, self.name)
                if event is not None:
                    yield event
                    if isinstance(event, StreamDone):
                        return
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{self.name} did not finish the stream within {timeout:.1f}s",
                provider=self.name,
                may_have_charged=True,
            ) from None
        except aiohttp.ClientError as exc:
            raise transport_error(self.name, exc, True) from None
        finally:
            await frames.aclose()
        raise wire.malformed("the stream ended without a completed event", self.name)


def _event(
    job: ProviderJob, name: str, data: bytes, request_id: str | None, provider: str = NAME
) -> StreamEvent | None:
    """One SSE frame as a stream event; None for frames that carry nothing for us."""
    if data.strip() == b"[DONE]":
        return None
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise wire.malformed("a stream event is not JSON", provider) from None
    if not isinstance(payload, dict):
        raise wire.malformed("a stream event is not a JSON object", provider)
    if "error" in payload:
        raise wire.stream_error(payload, provider)
    kind = payload.get("type")
    kind = kind if isinstance(kind, str) else name
    fmt = wire.reply_format(payload, job.output_format)
    if kind.endswith(".partial_image"):
        index = payload.get("partial_image_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else 0
        return PartialImage(wire.decode_b64(payload.get("b64_json"), provider), fmt, index)
    if kind.endswith(".completed"):
        image = ProducedImage(wire.decode_b64(payload.get("b64_json"), provider), fmt)
        return StreamDone(
            ProviderResult(
                images=[image],
                quality=wire.known(payload.get("quality")),
                background=wire.known(payload.get("background")),
                usage=wire.usage_of(payload),
                upstream_request_id=request_id,
                billed=True,
            )
        )
    return None


def _metadata(headers: Mapping[str, str]) -> dict[str, object]:
    processing = headers.get("openai-processing-ms")
    return {"processing_ms": int(processing)} if processing and processing.isdigit() else {}


def create(name: str, config: ProviderSettings, settings: Settings) -> OpenAIProvider | None:
    """An instance of OpenAI's API from its `[providers.NAME]` table; None when disabled there."""
    if not config.enabled:
        return None
    http = HttpClient.for_instance(name, config)
    return OpenAIProvider(
        base_url=config.base_url or DEFAULT_BASE_URL,
        api_key=config.key(DEFAULT_KEY_ENV),
        timeout=config.timeout_seconds,
        http=http,
        name=name,
    )


KIND = ProviderKind(NAME, ProviderSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
