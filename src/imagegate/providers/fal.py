"""The fal.ai provider: gpt-image-1, FLUX.1 [schnell]/[dev] and FLUX.1 Kontext [pro] at fal.

Queue mode (default): submit to ``{queue_url}/{endpoint_id}``, poll the returned `status_url` with
backoff, read `response_url`, then download each image (without the key). A job that is abandoned
(deadline, client gone, polling failure) is cancelled upstream with ``PUT cancel_url``. Sync mode
posts to ``{run_url}/{endpoint_id}`` and reads the output directly. The key goes only to the
configured hosts: queue URLs that fal names on another host are refused. Wire details are in
`imagegate.providers.fal_wire`; the protocol facts in shared/providers.md §2.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from imagegate.config import ConfigError, ProviderSettings, Settings, http_url
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from imagegate.imaging.convert import encode_image
from imagegate.imaging.pool import run_image_task
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.fal_wire import (
    ImageRef,
    QueueHandle,
    build_body,
    decode_data_uri,
    image_field,
    image_format,
    job_failed,
    parse_output,
    parse_status,
    parse_submit,
    png_data_uri,
    result_metadata,
    translate_error,
)
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.providers.polling import Backoff, cancelling, poll_until
from imagegate.redaction import Redactor

NAME = "fal"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_KEY_ENV = "FAL_KEY"
DEFAULT_MODE: Literal["queue", "sync"] = "queue"
CANCEL_TIMEOUT_SECONDS = 2.0
POLL_BACKOFF = 1.5

log = logging.getLogger("imagegate.providers.fal")


@dataclass(frozen=True)
class FalConfig:
    """Everything the provider needs from `[providers.fal]`, resolved by `create`."""

    run_url: str = DEFAULT_RUN_URL
    queue_url: str = DEFAULT_QUEUE_URL
    mode: Literal["queue", "sync"] = DEFAULT_MODE
    timeout_seconds: float = 180.0
    connect_timeout_seconds: float = 10.0
    max_connections: int = 256
    max_result_bytes: int = 64 * 1024 * 1024
    poll_interval_seconds: float = 0.25
    poll_max_interval_seconds: float = 2.0


@dataclass(frozen=True)
class _Outcome:
    output: dict[str, Any]
    refs: list[ImageRef]
    request_id: str | None
    status: dict[str, Any] | None


class FalProvider:
    name = NAME
    fallback_only = False

    def __init__(self, config: FalConfig, key: str | None) -> None:
        self.config = config
        self._key = key or None
        self._redactor = Redactor([self._key])  # the registry's boundary masks it too; this covers direct use
        # Two sessions: API calls carry the key; result files (fal's CDN) never do.
        self._api = self._client(config)
        self._files = self._client(config)
        self._background: set[asyncio.Task[None]] = set()

    @staticmethod
    def _client(config: FalConfig) -> HttpClient:
        return HttpClient(
            NAME,
            connect_timeout=config.connect_timeout_seconds,
            max_connections=config.max_connections,
            max_bytes=config.max_result_bytes,
        )

    def available(self) -> bool:
        return self._key is not None

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        try:
            return await self._run(job, inputs, ctx)
        except ImagegateError as exc:
            self._redactor.error(exc)
            raise

    def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("fal does not stream images")

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=CANCEL_TIMEOUT_SECONDS)
        await self._api.aclose()
        await self._files.aclose()

    # --- one call --------------------------------------------------------------------------

    async def _run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if self._key is None:
            raise UpstreamAuthError("fal has no API key configured", provider=NAME, disable_provider=True)
        body = build_body(job, await self._input_uris(job, inputs))
        if self.config.mode == "sync":
            outcome = await self._run_sync(job, body, ctx)
        else:
            outcome = await self._run_queue(job, body, ctx)
        images = await self._fetch_all(outcome.refs, ctx)
        return ProviderResult(
            images=images,
            quality=job.quality,
            background=job.background,
            usage=None,
            upstream_request_id=outcome.request_id,
            billed=True,
            metadata=result_metadata(outcome.output, outcome.status),
        )

    async def _input_uris(self, job: ProviderJob, inputs: EditInputs | None) -> list[str] | None:
        """Edit inputs as PNG data URIs (`image_urls`, or one `image_url` for Kontext)."""
        if inputs is not None and inputs.mask is not None:
            raise InvalidRequestError(
                f"fal's {job.provider_model} takes no mask; use a provider that supports masks", param="mask"
            )
        if job.mode != "image-edit":
            return None
        if inputs is None or not inputs.images:
            raise InvalidRequestError("an edit needs at least one image", param="image")
        if image_field(job.provider_model) == "image_url" and len(inputs.images) > 1:
            raise InvalidRequestError(f"fal's {job.provider_model} takes exactly one input image", param="image")
        encoded = await asyncio.gather(
            *(run_image_task(encode_image, item.image, "png", None) for item in inputs.images)
        )
        return [png_data_uri(data) for data in encoded]

    async def _run_sync(self, job: ProviderJob, body: dict[str, object], ctx: CallContext) -> _Outcome:
        response = await self._call("POST", f"{self.config.run_url}/{job.provider_model}", ctx, "submit", body)
        output, refs = parse_output(response)
        return _Outcome(output, refs, response.headers.get("x-fal-request-id"), None)

    async def _run_queue(self, job: ProviderJob, body: dict[str, object], ctx: CallContext) -> _Outcome:
        queue_url = self.config.queue_url
        submitted = await self._call("POST", f"{queue_url}/{job.provider_model}", ctx, "submit", body)
        handle = parse_submit(submitted, queue_url, job.provider_model)
        if not handle.trusted:
            await self._cancel_upstream(handle)  # by the owner/alias rule, on the configured host
            raise UpstreamMalformedError(
                "fal named queue URLs on another host; the key is only sent to the configured queue host",
                provider=NAME,
            )
        status = await cancelling(self._wait(handle, ctx), lambda: self._cancel_upstream(handle))
        if status.get("error"):
            raise await self._failure(handle, status, ctx)
        response = await self._call("GET", handle.response_url, ctx, "result", charged=True)
        output, refs = parse_output(response)
        return _Outcome(output, refs, handle.request_id, status)

    async def _wait(self, handle: QueueHandle, ctx: CallContext) -> dict[str, Any]:
        """Poll until COMPLETED, backing off x1.5 up to the max interval, never past the deadline."""

        async def completed() -> dict[str, Any] | None:
            status = parse_status(await self._call("GET", handle.status_url, ctx, "status", charged=True))
            return status if status["status"] == "COMPLETED" else None

        backoff = Backoff(self.config.poll_interval_seconds, self.config.poll_max_interval_seconds, POLL_BACKOFF)
        return await poll_until(completed, ctx, backoff, lambda: self._deadline_error(charged=True))

    async def _failure(self, handle: QueueHandle, status: dict[str, Any], ctx: CallContext) -> ImagegateError:
        """A job that COMPLETED with `error`: fal's result reply says why (422 detail) when it can."""
        failed = job_failed(status)
        if isinstance(failed, ModerationBlockedError):
            return failed
        try:
            response = await self._api.request(
                "GET", handle.response_url, timeout=self._timeout(ctx, False), headers=self._auth()
            )
        except UpstreamError:
            return failed
        if response.status in (400, 401, 403, 422):
            return translate_error(response, "result")
        return failed

    # --- HTTP --------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def _deadline_error(self, charged: bool) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            "fal did not finish before the request deadline", provider=NAME, may_have_charged=charged
        )

    def _timeout(self, ctx: CallContext, charged: bool) -> float:
        remaining = ctx.remaining()
        if remaining <= 0:
            raise self._deadline_error(charged)
        return min(self.config.timeout_seconds, remaining)

    async def _call(
        self,
        method: str,
        url: str,
        ctx: CallContext,
        stage: str,
        body: dict[str, object] | None = None,
        charged: bool = False,
    ) -> UpstreamResponse:
        """One API call with the key; any non-2xx reply is translated and raised."""
        response = await self._api.request(
            method, url, timeout=self._timeout(ctx, charged), headers=self._auth(), json=body
        )
        if not 200 <= response.status < 300:
            raise translate_error(response, stage)
        return response

    async def _cancel_upstream(self, handle: QueueHandle) -> None:
        """Best-effort ``PUT cancel_url``, shielded so that our own cancellation cannot stop it."""
        task = asyncio.create_task(self._send_cancel(handle))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _send_cancel(self, handle: QueueHandle) -> None:
        try:
            response = await self._api.request(
                "PUT", handle.cancel_url, timeout=CANCEL_TIMEOUT_SECONDS, headers=self._auth()
            )
            log.debug("fal cancel of %s answered HTTP %s", handle.request_id, response.status)
        except Exception as exc:  # best effort: the caller's error is what matters
            log.debug("fal cancel of %s failed: %s", handle.request_id, type(exc).__name__)

    # --- result files --------------------------------------------------------------------------

    async def _fetch_all(self, refs: Sequence[ImageRef], ctx: CallContext) -> list[ProducedImage]:
        tasks = [asyncio.ensure_future(self._fetch(ref, ctx)) for ref in refs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _fetch(self, ref: ImageRef, ctx: CallContext) -> ProducedImage:
        """Decode a data URI locally, or download the file without the Authorization header."""
        max_bytes = self.config.max_result_bytes
        if ref.url[:5].lower() == "data:":
            data, mime = decode_data_uri(ref.url, max_bytes)
            return ProducedImage(data, image_format(data, ref.content_type or mime))
        if not ref.url.lower().startswith(("http://", "https://")):
            raise UpstreamMalformedError("fal returned an image URL that is not http(s)", provider=NAME)
        response = await self._files.request("GET", ref.url, timeout=self._timeout(ctx, True), max_bytes=max_bytes)
        if response.status != 200:
            raise UpstreamError(
                f"fal's result image could not be downloaded (HTTP {response.status})",
                provider=NAME,
                retryable=True,
                upstream_status=response.status,
                may_have_charged=True,
            )
        content_type = ref.content_type or response.headers.get("Content-Type")
        return ProducedImage(response.body, image_format(response.body, content_type))


class FalSettings(ProviderSettings):
    """`[providers.fal]`: the common provider settings plus fal's queue and polling."""

    queue_url: str | None = None
    mode: Literal["queue", "sync"] | None = None
    poll_interval_seconds: float = Field(0.25, gt=0)
    poll_max_interval_seconds: float = Field(2.0, gt=0)

    @field_validator("queue_url")
    @classmethod
    def _queue_http_url(cls, value: str | None) -> str | None:
        return http_url(value)


def create(name: str, section: FalSettings, settings: Settings) -> FalProvider | None:
    """The provider from `[providers.fal]`; None when disabled. Without a key it is not available()."""
    if name != NAME:
        raise ConfigError(f"[providers.{name}]: fal is served by one instance, [providers.fal]")
    if not section.enabled:
        return None
    config = FalConfig(
        run_url=section.base_url or DEFAULT_RUN_URL,
        queue_url=section.queue_url or DEFAULT_QUEUE_URL,
        mode=section.mode or DEFAULT_MODE,
        timeout_seconds=section.timeout_seconds,
        connect_timeout_seconds=section.connect_timeout_seconds,
        max_connections=section.max_connections,
        max_result_bytes=section.max_result_bytes,
        poll_interval_seconds=section.poll_interval_seconds,
        poll_max_interval_seconds=section.poll_max_interval_seconds,
    )
    return FalProvider(config, section.key(DEFAULT_KEY_ENV))


KIND = ProviderKind(NAME, FalSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
