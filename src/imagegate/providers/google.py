"""The `google` provider: Gemini image models on the Gemini API (`models/{model}:generateContent`).

Built only by `create(name, table, settings)` from a `[providers.google]` table (base URL, key,
timeouts); the provider itself never reads config or the environment. The key goes in the
``x-goog-api-key`` header, never in the URL (a URL ends up in logs). One call makes one image: the
offerings say ``max_n = 1`` and the gateway fans out. Request building, reply parsing and the
translation of Google's errors live in `google_wire`; transport failures in `providers.http`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson

from imagegate.config import ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, UpstreamAuthError
from imagegate.providers import google_wire as wire
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.redaction import Redactor

NAME = wire.NAME
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_KEY_ENV = "GEMINI_API_KEY"
KEY_HEADER = "x-goog-api-key"


class GoogleSettings(ProviderSettings):
    """`[providers.google]`: the common provider settings; the Gemini API needs nothing more."""


class GoogleProvider:
    """Gemini image models through `generateContent`: text-to-image and edits from reference images."""

    fallback_only = False

    def __init__(
        self, *, base_url: str, api_key: str | None, timeout: float, http: HttpClient, name: str = NAME
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._key = api_key or None
        self._timeout_seconds = timeout
        self._http = http
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
        raise NotImplementedError("the Gemini image offerings do not stream")

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, model: str) -> str:
        """The `generateContent` URL of `model` (its id quoted: it can never add a path or a query)."""
        return f"{self._base_url}/models/{quote(model, safe='-._~')}:generateContent"

    async def _run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if self._key is None:
            raise UpstreamAuthError(f"{self.name} has no API key configured", provider=self.name, disable_provider=True)
        body = await wire.request_body(job, inputs)
        response = await self._http.request(
            "POST",
            self.url(job.provider_model),
            timeout=min(self._timeout_seconds, ctx.remaining()),
            headers={KEY_HEADER: self._key},
            json=body,
        )
        if not 200 <= response.status < 300:
            raise wire.translate_error(response.status, response.headers, response.body, self.name)
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
            metadata=wire.metadata_of(reply),
        )


def create(name: str, config: GoogleSettings, settings: Settings) -> GoogleProvider | None:
    """An instance of the Gemini API from its `[providers.NAME]` table; None when disabled there."""
    if not config.enabled:
        return None
    http = HttpClient.for_instance(name, config)
    return GoogleProvider(
        base_url=config.base_url or DEFAULT_BASE_URL,
        api_key=config.key(DEFAULT_KEY_ENV),
        timeout=config.timeout_seconds,
        http=http,
        name=name,
    )


KIND = ProviderKind(NAME, GoogleSettings, create, default_instance=True, default_key_env=DEFAULT_KEY_ENV)
