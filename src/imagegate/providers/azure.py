"""The `azure-openai` kind: OpenAI's image models deployed in Azure OpenAI, through the OpenAI adapter.

    [providers.azure]
    kind = "azure-openai"
    api_key_env = "AZURE_OPENAI_API_KEY"
    endpoint = "https://RESOURCE.openai.azure.com"
    api_version = "2025-04-01-preview"
    deployments = { "gpt-image-1" = "my-gpt-image-1" }   # catalog model id -> deployment name
    auth = "api-key"                                     # or "bearer" (an Entra ID token in the key's place)

Facts (shared/providers-2.md section 7): ``POST {endpoint}/openai/deployments/{deployment}/images/
{generations|edits}?api-version=...``, the key in an ``api-key`` header (or ``Authorization: Bearer``
with an Entra token), and no ``model`` in the body (the deployment is the model: sending it breaks
some models). Edits are multipart with an optional mask, as at OpenAI. Azure ends synchronous calls
at about 122 s: keep `timeout_seconds` at or under that so the router can fail over in time.

Each deployment adds an offering named after the instance to that catalog model, with the OpenAI
offering's capabilities and an unknown price (Azure's rates are the operator's contract). Several
instances (regions, resources) live side by side, each with its own table.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import Field, field_validator

from imagegate.config import ConfigError, ProviderSettings, Settings, http_url
from imagegate.providers import openai_wire as wire
from imagegate.providers.compatible import mapped_offerings
from imagegate.providers.http import HttpClient
from imagegate.providers.kinds import ProviderKind
from imagegate.providers.openai import OpenAIProvider

KIND_NAME = "azure-openai"
DEFAULT_API_VERSION = "2025-04-01-preview"
SYNC_LIMIT_SECONDS = 122.0


class AzureSettings(ProviderSettings):
    """`[providers.NAME] kind = "azure-openai"`: the resource, its API version and deployments."""

    endpoint: str | None = None
    api_version: str = Field(DEFAULT_API_VERSION, min_length=1, max_length=64)
    deployments: dict[str, str] = Field(default_factory=dict)
    auth: Literal["api-key", "bearer"] = "api-key"
    timeout_seconds: float = Field(SYNC_LIMIT_SECONDS, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return http_url(value)


class AzureEndpoint:
    """`{endpoint}/openai/deployments/{deployment}/images/{operation}?api-version=...`, `api-key` header."""

    def __init__(self, endpoint: str, api_version: str, auth: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self.header = auth

    def url(self, provider_model: str, operation: str) -> str:
        deployment = quote(provider_model, safe="")
        version = quote(self.api_version, safe="")
        return f"{self.endpoint}/openai/deployments/{deployment}/images/{operation}?api-version={version}"

    def auth(self, key: str) -> dict[str, str]:
        return {"api-key": key} if self.header == "api-key" else {"Authorization": f"Bearer {key}"}


def create(name: str, config: AzureSettings, settings: Settings) -> OpenAIProvider | None:
    if not config.enabled:
        return None
    if config.endpoint is None:
        raise ConfigError(f"[providers.{name}] ({KIND_NAME}): endpoint is required")
    if not config.api_key_env and config.api_key is None:
        raise ConfigError(f"[providers.{name}] ({KIND_NAME}): set api_key_env (or api_key)")
    http = HttpClient.for_instance(name, config)
    return OpenAIProvider(
        base_url=config.endpoint,
        api_key=config.key(config.api_key_env or ""),
        timeout=config.timeout_seconds,
        http=http,
        name=name,
        quirks=wire.WireQuirks(model_in_body=False),
        offerings=mapped_offerings(name, KIND_NAME, config.deployments, streaming=True),
        endpoint=AzureEndpoint(config.endpoint, config.api_version, config.auth),
    )


KIND = ProviderKind(KIND_NAME, AzureSettings, create)
