"""The `bfl` provider: FLUX.2, FLUX 1.1 [pro] (Ultra) and FLUX.1 Kontext on Black Forest Labs' API.

Built only by `create(name, table, settings)` from a `[providers.NAME]` table (base URL, key,
timeouts, polling). One call makes one image (the offerings say ``max_n = 1``): submit with
``POST {base_url}/{endpoint}`` and the ``x-key`` header, poll the returned `polling_url` with backoff
until the task is Ready, then download the result before answering (its URL expires after about 10
minutes), without the key and capped in size. The key goes only to the configured API's hosts: its
own origin, or a sibling host of its domain (BFL's regional ``api.eu.bfl.ai``/``api.us.bfl.ai``); a
polling URL anywhere else is refused unread. BFL has no cancel endpoint, so an abandoned task runs
out upstream. The submit reply's `cost` (credits) is returned as ``usage["cost"]`` in USD. Wire
details are in `imagegate.providers.bfl_wire`; protocol facts in shared/providers.md section 6 and
providers-2.md section 4.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from pydantic import Field

from imagegate.config import ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import (
    ImagegateError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from imagegate.providers import bfl_wire as wire
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.providers.polling import Backoff, poll_until
from imagegate.redaction import Redactor

NAME = wire.NAME
DEFAULT_BASE_URL = "https://api.bfl.ai/v1"
DEFAULT_KEY_ENV = "BFL_API_KEY"
KEY_HEADER = "x-key"
POLL_BACKOFF = 1.5


class BflSettings(ProviderSettings):
    """`[providers.bfl]`: the common provider settings plus the polling rhythm."""

    poll_interval_seconds: float = Field(0.5, gt=0)
    poll_max_interval_seconds: float = Field(2.0, gt=0)


class BflProvider:
    """Black Forest Labs' submit-then-poll API: text-to-image and edits from reference images."""

    fallback_only = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        api: HttpClient,
        files: HttpClient,
        backoff: Backoff,
        name: str = NAME,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._key = api_key or None
        self._timeout_seconds = timeout
        self._api = api  # calls that carry the key
        self._files = files  # result downloads: never the key
        self._backoff = backoff
        self._redactor = Redactor([self._key])  # the registry's boundary masks it too; this covers direct use

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
        raise NotImplementedError("BFL does not stream images")

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._files.aclose()

    def url(self, endpoint: str) -> str:
        """The submit URL of `endpoint` (quoted: it can never add a path or a query)."""
        return f"{self._base_url}/{quote(endpoint, safe='-._~')}"

    # --- one call ----------------------------------------------------------------------------

    async def _run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if self._key is None:
            raise UpstreamAuthError(f"{self.name} has no API key configured", provider=self.name, disable_provider=True)
        body = await wire.request_body(job, inputs)
        response = await self._call("POST", self.url(job.provider_model), ctx, body=body)
        submitted = wire.parse_submit(response.json(self.name), self.name)
        if not wire.trusted_url(submitted.polling_url, self._base_url):
            raise UpstreamMalformedError(
                f"{self.name} named a polling URL on another host; the key is only sent to the configured API",
                provider=self.name,
                may_have_charged=True,
            )
        ready = await self._wait(submitted.polling_url, ctx)
        image = await self._download(ready.sample_url, ctx)
        usd = wire.cost_usd(submitted.cost_credits)
        metadata: dict[str, object] = {"task_id": submitted.task_id}
        if ready.seed is not None:
            metadata["seed"] = ready.seed
        if submitted.cost_credits is not None:
            metadata["cost_credits"] = float(submitted.cost_credits)
        for key, value in (("input_mp", submitted.input_mp), ("output_mp", submitted.output_mp)):
            if value is not None:
                metadata[key] = value
        return ProviderResult(
            images=[image],
            quality=None,
            background=None,
            usage={"cost": float(usd)} if usd is not None else None,
            upstream_request_id=submitted.task_id,
            billed=True,
            metadata=metadata,
        )

    async def _wait(self, polling_url: str, ctx: CallContext) -> wire.Ready:
        """Poll until Ready (backing off up to the max interval), never past the deadline."""

        async def ready() -> wire.Ready | None:
            try:
                response = await self._call("GET", polling_url, ctx, polling=True)
            except UpstreamError as exc:  # the task was accepted: it may run and bill whatever the poll saw
                exc.may_have_charged = True
                raise
            return wire.parse_poll(response.json(self.name), self.name)

        return await poll_until(ready, ctx, self._backoff, self._deadline_error)

    async def _download(self, url: str, ctx: CallContext) -> ProducedImage:
        """The result image, fetched without the key (the URL is signed), capped in size."""
        if not url.lower().startswith(("https://", "http://")):
            raise wire.malformed("the result URL is not http(s)", self.name)
        response = await self._files.request("GET", url, timeout=self._timeout(ctx))
        if response.status != 200:
            raise UpstreamError(
                f"{self.name}'s result image could not be downloaded (HTTP {response.status}); "
                "its URL may have expired",
                provider=self.name,
                upstream_status=response.status,
                may_have_charged=True,
            )
        return ProducedImage(response.body, wire.image_format(response.body, self.name))

    # --- HTTP --------------------------------------------------------------------------------

    def _deadline_error(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"{self.name} did not finish before the request deadline", provider=self.name, may_have_charged=True
        )

    def _timeout(self, ctx: CallContext) -> float:
        remaining = ctx.remaining()
        if remaining <= 0:
            raise self._deadline_error()
        return min(self._timeout_seconds, remaining)

    async def _call(
        self, method: str, url: str, ctx: CallContext, *, body: dict[str, object] | None = None, polling: bool = False
    ) -> UpstreamResponse:
        """One API call with the key; any non-2xx reply is translated and raised."""
        assert self._key is not None
        response = await self._api.request(
            method, url, timeout=self._timeout(ctx), headers={KEY_HEADER: self._key}, json=body
        )
        if not 200 <= response.status < 300:
            raise wire.translate_error(response.status, response.headers, response.body, self.name, polling=polling)
        return response


def create(name: str, config: BflSettings, settings: Settings) -> BflProvider | None:
    """An instance of BFL's API from its `[providers.NAME]` table; None when disabled there."""
    if not config.enabled:
        return None
    return BflProvider(
        base_url=config.base_url or DEFAULT_BASE_URL,
        api_key=config.key(DEFAULT_KEY_ENV),
        timeout=config.timeout_seconds,
        api=HttpClient.for_instance(name, config),
        files=HttpClient.for_instance(name, config),
        backoff=Backoff(config.poll_interval_seconds, config.poll_max_interval_seconds, POLL_BACKOFF),
        name=name,
    )


KIND = ProviderKind(NAME, BflSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
