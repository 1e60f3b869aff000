"""The `replicate` provider: models on Replicate's predictions API (FLUX.1 [schnell] and [dev]).

One call creates a prediction (``POST {base_url}/models/{owner}/{name}/predictions``, or
``POST {base_url}/predictions`` with ``"version"`` for a pinned ``owner/name:<version>``) with
``Authorization: Bearer`` and ``Prefer: wait=N``, so a fast model answers in that same reply. A
prediction still ``starting``/``processing`` is polled at `urls.get` with backoff under the request
deadline, only on the configured host, and canceled upstream (``urls.cancel``) when the wait is
abandoned: the client went away, the deadline passed, or polling failed. Output files are URLs
downloaded without the key, each size-capped.

Where each field goes in a model's input is catalog data (`replicate_wire.input_map` of the
offering's caps), read once by `create`; request building, prediction parsing and error
translation live in `replicate_wire`. Protocol facts: shared/providers.md §3, providers-2.md §3.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from imagegate.catalog.loader import load_catalog
from imagegate.config import ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, InvalidRequestError, UpstreamAuthError, UpstreamError, UpstreamTimeoutError
from imagegate.imaging.convert import encode_image
from imagegate.imaging.pool import run_image_task
from imagegate.providers import replicate_wire as wire
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.providers.polling import Backoff, cancelling, poll_until
from imagegate.redaction import Redactor

NAME = wire.NAME
DEFAULT_BASE_URL = "https://api.replicate.com/v1"
DEFAULT_KEY_ENV = "REPLICATE_API_TOKEN"
MAX_WAIT_SECONDS = 60  # `Prefer: wait=N` takes 1-60 seconds
CANCEL_TIMEOUT_SECONDS = 2.0
PREFER_MARGIN_SECONDS = 1.0  # the inline wait ends this long before the deadline
POLL_BACKOFF = 1.5

log = logging.getLogger("imagegate.providers.replicate")


class ReplicateSettings(ProviderSettings):
    """`[providers.replicate]`: the common provider settings plus the inline wait and polling."""

    wait_seconds: int = Field(MAX_WAIT_SECONDS, ge=1, le=MAX_WAIT_SECONDS)
    poll_interval_seconds: float = Field(0.5, gt=0)
    poll_max_interval_seconds: float = Field(2.0, gt=0)


@dataclass(frozen=True)
class ReplicateConfig:
    """What the provider needs from its table, resolved by `create`."""

    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = 180.0
    wait_seconds: int = MAX_WAIT_SECONDS
    poll_interval_seconds: float = 0.5
    poll_max_interval_seconds: float = 2.0
    max_result_bytes: int = 64 * 1024 * 1024


class ReplicateProvider:
    """Replicate predictions: create with an inline wait, poll, cancel, download the output files."""

    fallback_only = False

    def __init__(
        self,
        config: ReplicateConfig,
        api_key: str | None,
        *,
        api: HttpClient,
        files: HttpClient,
        inputs: Mapping[str, wire.InputMap],
        name: str = NAME,
    ) -> None:
        self.name = name
        self.config = config
        self._base_url = config.base_url.rstrip("/")
        self._key = api_key or None
        self._api = api  # API calls: carry the key
        self._files = files  # output files (replicate.delivery): never carry it
        self._inputs = dict(inputs)
        self._redactor = Redactor([self._key])  # the registry's boundary masks it too; this covers direct use
        self._background: set[asyncio.Task[None]] = set()

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
        raise NotImplementedError("Replicate image offerings do not stream")

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=CANCEL_TIMEOUT_SECONDS)
        await self._api.aclose()
        await self._files.aclose()

    def input_map(self, model: str) -> wire.InputMap:
        """Where `model`'s input takes each field: the catalog's, else FLUX.1's."""
        return self._inputs.get(model, wire.DEFAULT_INPUT)

    # --- one call --------------------------------------------------------------------------------

    async def _run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if self._key is None:
            raise UpstreamAuthError(
                f"{self.name} has no API token configured", provider=self.name, disable_provider=True
            )
        fields = self.input_map(job.provider_model)
        path, body = wire.request(job, fields, await self._input_uris(job, inputs, fields))
        created = await self._call("POST", self._base_url + path, ctx, body, prefer=self._prefer(ctx))
        prediction = wire.parse_prediction(created.json(self.name), self.name)
        if prediction.status not in wire.TERMINAL:
            handle = wire.handle_of(prediction, self._base_url)
            prediction = await cancelling(self._wait(handle, ctx), lambda: self._cancel_upstream(handle))
        if prediction.status != "succeeded":
            raise wire.failure(prediction, self.name)
        urls = wire.output_urls(prediction, job.n, self.name)
        return ProviderResult(
            images=await self._fetch_all(urls, ctx),
            quality=None,
            background=None,
            usage=None,
            upstream_request_id=prediction.id,
            billed=True,
            metadata=wire.metadata_of(prediction),
        )

    async def _input_uris(self, job: ProviderJob, inputs: EditInputs | None, fields: wire.InputMap) -> list[str] | None:
        """An edit's images as PNG data URIs; a mask or markup is refused (no Replicate model here takes one)."""
        if job.mode != "image-edit":
            return None
        if inputs is None or not inputs.images:
            raise InvalidRequestError("an edit needs at least one image", param="image")
        if inputs.mask is not None or inputs.markup is not None:
            param = "mask" if inputs.mask is not None else "markup"
            raise InvalidRequestError(f"replicate's {job.provider_model} takes no {param}", param=param)
        if not fields.image_list and len(inputs.images) > 1:
            raise InvalidRequestError(f"replicate's {job.provider_model} takes exactly one input image", param="image")
        encoded = await asyncio.gather(
            *(run_image_task(encode_image, item.image, "png", None) for item in inputs.images)
        )
        return [wire.png_data_uri(data) for data in encoded]

    def _prefer(self, ctx: CallContext) -> str | None:
        """``wait=N``: the configured hold, ending a second before the deadline so that the reply (and
        the prediction's id, needed to cancel it) still arrives; None (no inline wait) when that
        leaves under a second."""
        seconds = min(self.config.wait_seconds, int(ctx.remaining() - PREFER_MARGIN_SECONDS))
        return f"wait={seconds}" if seconds >= 1 else None

    async def _wait(self, handle: wire.Handle, ctx: CallContext) -> wire.Prediction:
        """Poll `handle.get_url` until the prediction is terminal, never past the deadline."""

        async def finished() -> wire.Prediction | None:
            response = await self._call("GET", handle.get_url, ctx, charged=True)
            prediction = wire.parse_prediction(response.json(self.name), self.name)
            return prediction if prediction.status in wire.TERMINAL else None

        backoff = Backoff(self.config.poll_interval_seconds, self.config.poll_max_interval_seconds, POLL_BACKOFF)
        return await poll_until(finished, ctx, backoff, self._deadline_error)

    # --- HTTP --------------------------------------------------------------------------------

    def _deadline_error(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"{self.name} did not finish before the request deadline", provider=self.name, may_have_charged=True
        )

    def _timeout(self, ctx: CallContext, charged: bool) -> float:
        remaining = ctx.remaining()
        if remaining <= 0:
            if charged:
                raise self._deadline_error()
            raise UpstreamTimeoutError(f"no time left to call {self.name}", provider=self.name)
        return min(self.config.timeout_seconds, remaining)

    async def _call(
        self,
        method: str,
        url: str,
        ctx: CallContext,
        body: dict[str, object] | None = None,
        *,
        prefer: str | None = None,
        charged: bool = False,
    ) -> UpstreamResponse:
        """One API call with the token; a non-2xx reply is translated and raised."""
        headers = {"Authorization": f"Bearer {self._key}"}
        if prefer is not None:
            headers["Prefer"] = prefer
        response = await self._api.request(method, url, timeout=self._timeout(ctx, charged), headers=headers, json=body)
        if not 200 <= response.status < 300:
            not_found = "no longer knows this prediction" if charged else "does not serve this model"
            raise wire.translate_error(response.status, response.headers, response.body, self.name, not_found)
        return response

    async def _cancel_upstream(self, handle: wire.Handle) -> None:
        """Best-effort ``POST urls.cancel``, shielded so that our own cancellation cannot stop it."""
        task = asyncio.create_task(self._send_cancel(handle))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _send_cancel(self, handle: wire.Handle) -> None:
        try:
            response = await self._api.request(
                "POST",
                handle.cancel_url,
                timeout=CANCEL_TIMEOUT_SECONDS,
                headers={"Authorization": f"Bearer {self._key}"},
            )
            log.debug("replicate cancel of %s answered HTTP %s", handle.id, response.status)
        except Exception as exc:  # best effort: the caller's error is what matters
            log.debug("replicate cancel of %s failed: %s", handle.id, type(exc).__name__)

    # --- output files ----------------------------------------------------------------------------

    async def _fetch_all(self, urls: Sequence[str], ctx: CallContext) -> list[ProducedImage]:
        tasks = [asyncio.ensure_future(self._fetch(url, ctx)) for url in urls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _fetch(self, url: str, ctx: CallContext) -> ProducedImage:
        """A data URI decoded here, or the file downloaded without the Authorization header."""
        max_bytes = self.config.max_result_bytes
        if url[:5].lower() == "data:":
            data = wire.decode_data_uri(url, max_bytes, self.name)
            return ProducedImage(data, wire.image_format(data, None, self.name))
        if not url.lower().startswith(("http://", "https://")):
            raise wire.malformed("an output URL is not http(s)", provider=self.name)
        response = await self._files.request("GET", url, timeout=self._timeout(ctx, True), max_bytes=max_bytes)
        if response.status != 200:
            raise UpstreamError(
                f"{self.name}'s output file could not be downloaded (HTTP {response.status})",
                provider=self.name,
                retryable=True,
                upstream_status=response.status,
                may_have_charged=True,
            )
        content_type = response.headers.get("Content-Type")
        return ProducedImage(response.body, wire.image_format(response.body, content_type, self.name))


def input_maps(models: Iterable[ModelInfo], names: Iterable[str]) -> dict[str, wire.InputMap]:
    """Upstream model id -> `InputMap`, from each offering served under one of `names` (the
    instance's name, and the kind's: an offering naming the kind is served by every instance)."""
    wanted = set(names)
    found: dict[str, wire.InputMap] = {}
    for model in models:
        for offering in model.offerings:
            if offering.provider in wanted:
                for upstream in offering.model_ids.values():
                    found.setdefault(upstream, wire.input_map(offering.caps))
    return found


def create(name: str, config: ReplicateSettings, settings: Settings) -> ReplicateProvider | None:
    """An instance from its `[providers.NAME]` table; None when disabled. Without a token it is not
    available(). The catalog (with the operator's files) says where each model takes its inputs."""
    if not config.enabled:
        return None
    resolved = ReplicateConfig(
        base_url=config.base_url or DEFAULT_BASE_URL,
        timeout_seconds=config.timeout_seconds,
        wait_seconds=config.wait_seconds,
        poll_interval_seconds=config.poll_interval_seconds,
        poll_max_interval_seconds=config.poll_max_interval_seconds,
        max_result_bytes=config.max_result_bytes,
    )
    return ReplicateProvider(
        resolved,
        config.key(DEFAULT_KEY_ENV),
        api=HttpClient.for_instance(name, config),
        files=HttpClient.for_instance(name, config),
        inputs=input_maps(load_catalog(settings.catalog.paths), (name, NAME)),
        name=name,
    )


KIND = ProviderKind(NAME, ReplicateSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
