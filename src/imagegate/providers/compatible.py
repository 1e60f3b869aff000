"""The `openai-compatible` kind: any host that speaks OpenAI's Images API (xAI, Together, a self-hosted
server), through the OpenAI adapter, with the host's differences as data (`openai_wire.WireQuirks`).

    [providers.xai]
    kind = "openai-compatible"
    api_key_env = "XAI_API_KEY"
    base_url = "https://api.x.ai/v1"
    models = { "grok-imagine-image" = "grok-imagine-image" }
    response_format = "b64_json"     # omit (default) | b64_json
    size_field = "aspect_ratio"      # size (default) | aspect_ratio
    output_fields = false            # send output_format / background / output_compression? (default true)
    json_edits = true                # edits as JSON with data: URLs (default: multipart)
    extra_headers = { "X-Tenant" = "a" }

Each table is one instance, named by the table; several live side by side. `models` maps catalog
model ids to the host's ids: a catalog model whose offerings already name this instance (e.g. an
``xai`` offering) uses that offering; any other mapped model gets an offering of its own, copied from
the model's reference (first) offering's capabilities, with an unknown price (the catalog does not
know what this host charges) and `max_n` from the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator

from imagegate.config import ConfigError, ProviderSettings, Settings
from imagegate.core.types import Lifecycle, ModelInfo, Offering, Pricing
from imagegate.providers import openai_wire as wire
from imagegate.providers.http import HttpClient
from imagegate.providers.kinds import ProviderKind
from imagegate.providers.openai import OpenAIProvider

KIND_NAME = "openai-compatible"


class CompatibleSettings(ProviderSettings):
    """`[providers.NAME] kind = "openai-compatible"`: where the host is, what it serves, how it differs."""

    models: dict[str, str] = Field(default_factory=dict)
    response_format: Literal["omit", "b64_json"] = "omit"
    size_field: Literal["size", "aspect_ratio"] = "size"
    output_fields: bool = True
    json_edits: bool = False
    extra_headers: dict[str, str] = Field(default_factory=dict)
    max_n: int = Field(10, ge=1, le=10)

    @field_validator("models")
    @classmethod
    def _ids(cls, value: dict[str, str]) -> dict[str, str]:
        for catalog_id, upstream_id in value.items():
            if not catalog_id or not upstream_id:
                raise ValueError("model ids must not be empty")
        return value


def mapped_offerings(
    name: str, kind: str, ids: dict[str, str], *, max_n: int = 10, output_fields: bool = True, streaming: bool = False
) -> Callable[[ModelInfo], Offering | None]:
    """`extra_offering` for an instance that serves the catalog models of `ids` (catalog id -> its own
    id): the model's reference offering's capabilities under the instance's name, price unknown. A
    model whose catalog offerings already name the instance keeps that offering instead."""

    def extra_offering(model: ModelInfo) -> Offering | None:
        upstream = ids.get(model.id)
        if upstream is None or not model.offerings or model.offering(name) is not None:
            return None
        reference = model.offerings[0]
        caps = dataclasses.replace(reference.caps, max_n=max_n, n_wire="n", streaming=streaming)
        if not output_fields:  # the host makes its default format: the gateway converts the rest
            caps = dataclasses.replace(caps, formats=(caps.default_format,), compression=False, backgrounds=())
        return Offering(
            provider=name,
            kind=kind,
            model_ids={mode: upstream for mode in model.modes},
            caps=caps,
            pricing=Pricing(notes=f"{name} ({kind}) is configured by the operator; its price is unknown"),
            lifecycle=Lifecycle(),
            notes=f"[providers.{name}] ({kind}) serves it as {upstream!r}",
        )

    return extra_offering


def create(name: str, config: CompatibleSettings, settings: Settings) -> OpenAIProvider | None:
    """An instance for the host of `[providers.NAME]`; None when disabled there."""
    if not config.enabled:
        return None
    if config.base_url is None:
        raise ConfigError(f"[providers.{name}] ({KIND_NAME}): base_url is required")
    key = config.key(config.api_key_env) if config.api_key_env or config.api_key else None
    quirks = wire.WireQuirks(
        response_format=config.response_format,
        size_field=config.size_field,
        output_fields=config.output_fields,
        json_edits=config.json_edits,
        extra_headers=dict(config.extra_headers),
    )
    http = HttpClient.for_instance(name, config)
    return OpenAIProvider(
        base_url=config.base_url,
        api_key=key,
        timeout=config.timeout_seconds,
        http=http,
        name=name,
        quirks=quirks,
        key_required=bool(config.api_key_env or config.api_key),
        offerings=mapped_offerings(
            name, KIND_NAME, config.models, max_n=config.max_n, output_fields=config.output_fields
        ),
    )


KIND = ProviderKind(KIND_NAME, CompatibleSettings, create)
