"""The `vertex` kind: Google's image models on Vertex AI, with OAuth access tokens.

    [providers.vertex]
    kind = "vertex"
    project = "my-project"
    location = "global"                          # or a region: us-central1, europe-west4, ...
    credentials_file = "/etc/imagegate/sa.json"  # a service-account key; omit for ADC

Facts (shared/providers-2.md section 2, providers.md section 4.2): ``POST {host}/v1/projects/{P}/
locations/{L}/publishers/google/models/{MODEL}:generateContent`` for Gemini models (the Gemini API's
body and reply: `google_wire`), ``...:predict`` for Imagen (`imagen_wire`); the host is
``aiplatform.googleapis.com`` for the global location, ``{L}-aiplatform.googleapis.com`` otherwise;
``Authorization: Bearer <OAuth access token>`` with the cloud-platform scope.

Tokens: from the service-account file (a JWT-bearer grant against its ``token_uri``, or
`token_url` when set) or else Application Default Credentials (`google.auth.default`). Minting is
blocking I/O, so it runs in a thread; the token is cached until shortly before it expires, and a
401 from the API (a token revoked or expired early) renews it once and retries once. A token that
cannot be minted, or a second 401, is an `UpstreamAuthError`. Tokens, keys and the token endpoint's
words never reach an error or a log.

`available()` looks for a key file only (`credentials_file`, else the ADC file google-auth reads:
GOOGLE_APPLICATION_CREDENTIALS or gcloud's application_default_credentials.json), so it never
blocks on the metadata server; ADC from a Google Cloud runtime's metadata server alone is not seen.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import google.auth
import google.auth.exceptions
import google.auth.transport
import orjson
from google.auth import credentials as google_credentials
from google.oauth2 import service_account
from pydantic import Field, field_validator

from imagegate.config import ConfigError, ProviderSettings, Settings, http_url
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, UpstreamAuthError
from imagegate.providers import google_wire, imagen_wire
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult, StreamEvent
from imagegate.providers.http import HttpClient, UpstreamResponse
from imagegate.providers.kinds import ProviderKind
from imagegate.redaction import Redactor

KIND_NAME = "vertex"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
GLOBAL = "global"
TOKEN_TIMEOUT_SECONDS = 15.0
REFRESH_MARGIN_SECONDS = 300.0  # renew this long before the token's stated expiry
MAX_TOKEN_REPLY_BYTES = 64 * 1024
# Vertex-only imageConfig fields of the Gemini models (providers.md section 4.1).
PERSON_FIELDS = ("person_generation", "personGeneration")


class VertexSettings(ProviderSettings):
    """`[providers.NAME] kind = "vertex"`: the Google Cloud project, its location and credentials."""

    project: str = Field(min_length=1, max_length=128)
    location: str = Field(GLOBAL, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    credentials_file: Path | None = None
    token_url: str | None = None  # overrides the service account's token_uri (tests, private endpoints)

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return http_url(value)


def default_base_url(location: str) -> str:
    """``https://aiplatform.googleapis.com`` for the global location, else the regional host."""
    host = "aiplatform.googleapis.com" if location == GLOBAL else f"{location}-aiplatform.googleapis.com"
    return f"https://{host}"


# --- tokens --------------------------------------------------------------------------------------


class _Response(google.auth.transport.Response):
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status, self._headers, self._data = status, dict(headers), data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class UrllibRequest(google.auth.transport.Request):
    """google-auth's transport on the standard library (no `requests` dependency); http(s) only."""

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        if urlsplit(url).scheme not in ("http", "https"):
            raise google.auth.exceptions.TransportError("the token endpoint is not an http(s) URL")
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or TOKEN_TIMEOUT_SECONDS) as reply:
                return _Response(reply.status, dict(reply.headers), reply.read(MAX_TOKEN_REPLY_BYTES))
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, dict(exc.headers or {}), exc.read(MAX_TOKEN_REPLY_BYTES))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise google.auth.exceptions.TransportError(type(exc).__name__) from None


def service_account_loader(path: Path, token_url: str | None) -> Callable[[], google_credentials.Credentials]:
    """Reads the service-account key file (on first use, in the minting thread)."""

    def load() -> google_credentials.Credentials:
        found = service_account.Credentials.from_service_account_file(str(path), scopes=list(SCOPES))
        return found.with_token_uri(token_url) if token_url else found

    return load


def adc_loader() -> google_credentials.Credentials:
    """Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server)."""
    found, _ = google.auth.default(scopes=list(SCOPES))
    return found


def adc_file() -> Path | None:
    """The ADC key file that `google.auth.default` would read first, when there is one."""
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        return Path(named)
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    return Path(config) / "application_default_credentials.json"


class AccessTokens:
    """OAuth access tokens for one provider instance: minted in a thread, cached until shortly
    before expiry, one mint at a time. Every failure is an `UpstreamAuthError` that quotes nothing
    the token endpoint said (its answer may echo the signed assertion)."""

    def __init__(
        self,
        load: Callable[[], google_credentials.Credentials],
        provider: str,
        *,
        margin: float = REFRESH_MARGIN_SECONDS,
        transport: google.auth.transport.Request | None = None,
    ) -> None:
        self._load = load
        self._provider = provider
        self._margin = margin
        self._transport = transport or UrllibRequest()
        self._credentials: google_credentials.Credentials | None = None
        self._token: str | None = None
        self._fresh_until = 0.0  # time.monotonic() after which the token is renewed first
        self._lock = asyncio.Lock()
        self.minted = 0  # tokens minted so far (for metrics and tests)

    async def get(self, timeout: float) -> str:
        """A token good for a while yet: the cached one, or a new one."""
        if self._token is not None and time.monotonic() < self._fresh_until:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._fresh_until:
                return self._token
            return await self._mint(timeout)

    async def renew(self, stale: str, timeout: float) -> str:
        """A token other than `stale`, the one the API refused (minted once for concurrent callers)."""
        async with self._lock:
            if self._token is not None and self._token != stale and time.monotonic() < self._fresh_until:
                return self._token
            return await self._mint(timeout)

    async def _mint(self, timeout: float) -> str:
        self._token, self._fresh_until = None, 0.0
        try:
            async with asyncio.timeout(max(0.1, min(timeout, TOKEN_TIMEOUT_SECONDS))):
                token, expiry = await asyncio.to_thread(self._refresh)
        except TimeoutError:
            raise self._failed("the token endpoint did not answer in time", retryable=True) from None
        except google.auth.exceptions.RefreshError as exc:
            retryable = bool(getattr(exc, "retryable", False))
            raise self._failed("the token endpoint refused the credentials", retryable=retryable) from None
        except google.auth.exceptions.TransportError:
            raise self._failed("the token endpoint could not be reached", retryable=True) from None
        except (google.auth.exceptions.GoogleAuthError, ValueError, KeyError, TypeError, OSError) as exc:
            raise self._failed(f"the credentials could not be loaded ({type(exc).__name__})", retryable=False) from None
        self.minted += 1
        self._token = token
        self._fresh_until = time.monotonic() + _seconds_left(expiry) - self._margin
        return token

    def _refresh(self) -> tuple[str, datetime | None]:
        """Blocking: load the credentials once, then ask the token endpoint for a token."""
        if self._credentials is None:
            self._credentials = self._load()
        self._credentials.refresh(self._transport)
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise google.auth.exceptions.RefreshError("no access token in the answer")
        return token, self._credentials.expiry

    def _failed(self, why: str, *, retryable: bool) -> UpstreamAuthError:
        return UpstreamAuthError(
            f"{self._provider} has no access token: {why}",
            provider=self._provider,
            retryable=retryable,
            disable_provider=not retryable,
        )


def _seconds_left(expiry: datetime | None) -> float:
    """Seconds until google-auth's `expiry` (naive UTC); an hour when it names none."""
    if expiry is None:
        return 3600.0
    now = datetime.now(UTC).replace(tzinfo=None)
    return (expiry - now).total_seconds()


# --- the provider --------------------------------------------------------------------------------


class VertexProvider:
    """Gemini image models (`generateContent`) and Imagen 4 (`:predict`) in one Google Cloud project."""

    fallback_only = False

    def __init__(
        self,
        *,
        name: str,
        project: str,
        location: str,
        base_url: str,
        tokens: AccessTokens,
        has_credentials: Callable[[], bool],
        timeout: float,
        http: HttpClient,
    ) -> None:
        self.name = name
        self.project = project
        self.location = location
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._has_credentials = has_credentials
        self._timeout_seconds = timeout
        self._http = http

    def available(self) -> bool:
        return bool(self.project) and self._has_credentials()

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        used: list[str] = []
        try:
            return await self._run(job, inputs, ctx, used)
        except ImagegateError as exc:
            Redactor(used).error(exc)
            raise

    def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("the Vertex image offerings do not stream")

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def is_imagen(model: str) -> bool:
        return model.lower().startswith("imagen")

    def url(self, model: str) -> str:
        """The model's `:predict` (Imagen) or `:generateContent` URL; every part quoted."""
        method = "predict" if self.is_imagen(model) else "generateContent"
        return (
            f"{self._base_url}/v1/projects/{quote(self.project, safe='')}/locations/{quote(self.location, safe='')}"
            f"/publishers/google/models/{quote(model, safe='-._~@')}:{method}"
        )

    async def _run(
        self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext, used: list[str]
    ) -> ProviderResult:
        imagen = self.is_imagen(job.provider_model)
        body = imagen_wire.request_body(job) if imagen else await gemini_body(job, inputs)
        response = await self._post(job.provider_model, body, ctx, used)
        if not 200 <= response.status < 300:
            raise google_wire.translate_error(response.status, response.headers, response.body, self.name)
        try:
            reply = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise google_wire.malformed(f"the reply is not JSON (HTTP {response.status})", self.name) from None
        if imagen:
            parameters = body["parameters"]
            found = imagen_wire.parse_reply(reply, job.n, self.name)
            return ProviderResult(
                images=[ProducedImage(content, fmt) for content, fmt in found.images],
                billed=True,
                metadata=imagen_wire.metadata_of(found, parameters if isinstance(parameters, dict) else {}),
            )
        gemini = google_wire.parse_reply(reply, job.n, self.name)
        return ProviderResult(
            images=[ProducedImage(content, fmt) for content, fmt in gemini.images],
            usage=gemini.usage,
            upstream_request_id=gemini.response_id,
            billed=True,
            metadata=google_wire.metadata_of(gemini),
        )

    async def _post(self, model: str, body: object, ctx: CallContext, used: list[str]) -> UpstreamResponse:
        """POST with a bearer token; a 401 renews the token once and tries once more."""
        token = await self._tokens.get(ctx.remaining())
        used.append(token)
        response = await self._send(model, body, token, ctx)
        if response.status != 401:
            return response
        token = await self._tokens.renew(token, ctx.remaining())
        used.append(token)
        return await self._send(model, body, token, ctx)

    async def _send(self, model: str, body: object, token: str, ctx: CallContext) -> UpstreamResponse:
        return await self._http.request(
            "POST",
            self.url(model),
            timeout=min(self._timeout_seconds, ctx.remaining()),
            headers={"Authorization": f"Bearer {token}"},
            json=body,
        )


async def gemini_body(job: ProviderJob, inputs: EditInputs | None) -> dict[str, object]:
    """The Gemini API body, plus what only Vertex takes in `imageConfig`: personGeneration, and
    the output MIME type and JPEG quality (the Gemini API always answers PNG)."""
    body = await google_wire.request_body(job, inputs)
    config = body["generationConfig"]
    assert isinstance(config, dict)
    image_config: dict[str, object] = dict(config.get("imageConfig") or {})
    for name in PERSON_FIELDS:
        value = config.pop(name, None)
        if value is not None:
            image_config["personGeneration"] = imagen_wire.person_generation(value)
    if job.output_format == "jpeg":
        image_config["outputMimeType"] = "image/jpeg"
        if job.output_compression is not None:
            image_config["outputCompressionQuality"] = job.output_compression
    if image_config:
        config["imageConfig"] = image_config
    return body


def create(name: str, config: VertexSettings, settings: Settings) -> VertexProvider | None:
    """An instance for the project of `[providers.NAME]`; None when disabled there."""
    if not config.enabled:
        return None
    if config.api_key is not None or config.api_key_env:
        raise ConfigError(
            f"[providers.{name}] ({KIND_NAME}): Vertex takes OAuth tokens; set credentials_file "
            "(a service-account key) or use Application Default Credentials, not an API key"
        )
    key_file = config.credentials_file
    if key_file is not None:
        load = service_account_loader(key_file, config.token_url)

        def has_credentials() -> bool:
            return key_file.is_file()

    else:
        load = adc_loader

        def has_credentials() -> bool:
            found = adc_file()
            return found is not None and found.is_file()

    return VertexProvider(
        name=name,
        project=config.project,
        location=config.location,
        base_url=config.base_url or default_base_url(config.location),
        tokens=AccessTokens(load, name),
        has_credentials=has_credentials,
        timeout=config.timeout_seconds,
        http=HttpClient.for_instance(name, config),
    )


KIND = ProviderKind(KIND_NAME, VertexSettings, create)
