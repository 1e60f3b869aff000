"""The `openrouter` provider: image models through OpenRouter's chat completions (`POST /chat/completions`).

Built only by `create(name, table, settings)` from a `[providers.openrouter]` table (base URL, key,
timeouts); the provider itself never reads config or the environment. The key goes in
``Authorization: Bearer``. One call makes one image: the offerings say ``max_n = 1`` and the gateway
fans out. Each model's output `modalities` (["image"] for image-only models, ["image", "text"] for
Gemini) come from the catalog: `create` reads the offerings of this instance once
(`openrouter_wire.modality_map`). Request building, reply parsing and the translation of
OpenRouter's errors live in `openrouter_wire`; transport failures in `providers.http`.

The result's `usage.cost` is what OpenRouter charged for the call, in USD.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson

from imagegate.catalog.loader import load_catalog
from imagegate.config import ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, UpstreamAuthError
from imagegate.providers import openrouter_wire as wire
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.redaction import Redactor

NAME = wire.NAME
DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_KEY_ENV = "OPENROUTER_API_KEY"


class OpenRouterSettings(ProviderSettings):
    """`[providers.openrouter]`: the common provider settings; OpenRouter needs nothing more."""


class OpenRouterProvider:
    """Image output of OpenRouter's chat completions: text-to-image and edits from reference images."""

    fallback_only = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        http: HttpClient,
        modalities: Mapping[str, tuple[str, ...]],
        name: str = NAME,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._key = api_key or None
        self._timeout_seconds = timeout
        self._http = http
        self._modalities = dict(modalities)
        self._redactor = Redactor([self._key])  # the registry's boundary masks it too; this covers direct use

    def available(self) -> bool:
        return self._key is not None

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    def modalities(self, model: str) -> tuple[str, ...]:
        """The output modalities sent for OpenRouter model `model` (the catalog's, else image+text)."""
        return self._modalities.get(model, wire.DEFAULT_MODALITIES)

    @property
    def url(self) -> str:
        return f"{self._base_url}/chat/completions"

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        try:
            return await self._run(job, inputs, ctx)
        except ImagegateError as exc:
            self._redactor.error(exc)
            raise

    def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("the OpenRouter image offerings do not stream")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if self._key is None:
            raise UpstreamAuthError(f"{self.name} has no API key configured", provider=self.name, disable_provider=True)
        modalities = self.modalities(job.provider_model)
        body = await wire.request_body(job, inputs, modalities)
        response = await self._http.request(
            "POST",
            self.url,
            timeout=min(self._timeout_seconds, ctx.remaining()),
            headers={"Authorization": f"Bearer {self._key}"},
            json=body,
        )
        if not 200 <= response.status < 300:
            raise wire.translate_error(response.status, response.headers, response.body, modalities, self.name)
        return self._result(job, response)

    def _result(self, job: ProviderJob, response: UpstreamResponse) -> ProviderResult:
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise wire.malformed(f"the reply is not JSON (HTTP {response.status})", self.name) from None
        reply = wire.parse_reply(body, job.n, self.name)
        return ProviderResult(
            images=[ProducedImage(content, fmt) for content, fmt in reply.images],
            quality=None,
            background=None,
            usage=reply.usage,
            upstream_request_id=reply.response_id,
            billed=True,
            metadata={"model": reply.model} if reply.model else {},
        )


def create(name: str, config: OpenRouterSettings, settings: Settings) -> OpenRouterProvider | None:
    """An OpenRouter instance from its `[providers.NAME]` table; None when disabled there.

    The modalities of each model come from the catalog offerings that name this instance (the
    packaged catalog plus the operator's `[catalog] paths`)."""
    if not config.enabled:
        return None
    return OpenRouterProvider(
        base_url=config.base_url or DEFAULT_BASE_URL,
        api_key=config.key(DEFAULT_KEY_ENV),
        timeout=config.timeout_seconds,
        http=HttpClient.for_instance(name, config),
        modalities=wire.modality_map(load_catalog(settings.catalog.paths), name),
        name=name,
    )


KIND = ProviderKind(NAME, OpenRouterSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
