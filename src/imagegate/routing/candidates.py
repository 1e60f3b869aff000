"""Which offerings may serve a request: lifecycle, provider availability, capabilities.

Ordering (priority groups, weights, strategies), retries and circuit breaking are built on top of
this list by the router; this module only decides who is eligible and, when nobody is, which
error explains it best (retired model naming its successor, missing capability, no provider).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

from imagegate.core.quoting import quote
from imagegate.core.types import ModelInfo, Offering
from imagegate.errors import (
    InvalidRequestError,
    ModelRetiredError,
    NoProviderAvailableError,
    UnsupportedParameterError,
)
from imagegate.providers.base import Provider
from imagegate.providers.registry import ProviderRegistry


@dataclass(frozen=True)
class Needs:
    """What a request needs of an offering beyond its mode; an offering lacking one is not a candidate."""

    mode: str
    input_images: int = 0
    mask: bool = False
    markup: bool = False
    svg: bool = False  # output_format svg
    animation: bool = False  # output_format gif with frame_count


@dataclass(frozen=True)
class Missing:
    """Why an offering cannot serve a request, and the parameter that asked for it."""

    message: str
    param: str


@dataclass(frozen=True)
class Candidate:
    offering: Offering
    provider: Provider


def all_offerings(model: ModelInfo, registry: ProviderRegistry) -> list[Offering]:
    """Catalog offerings plus those providers add on their own (the sandbox, model maps).

    An offering names a provider instance; one that names a kind with no instance of that name
    stands for every configured instance of the kind (``provider = "azure-openai"``: each
    ``kind = "azure-openai"`` table serves it under its own name), or for none (then it is shown as
    not configured)."""
    return registry.offerings_of(model, lambda: _offerings(model, registry))


def _offerings(model: ModelInfo, registry: ProviderRegistry) -> list[Offering]:
    offerings: list[Offering] = []
    for offering in model.offerings:
        names = registry.of_kind(offering.provider) if registry.get(offering.provider) is None else []
        if names:
            offerings += [dataclasses.replace(offering, provider=name, kind=offering.provider) for name in names]
        else:
            offerings.append(offering)
    for provider in registry:
        extra = provider.extra_offering(model)
        if extra is not None and all(o.provider != extra.provider for o in offerings):
            offerings.append(extra)
    return offerings


Serving = str  # "ready" | "no_key" | "not_configured"


def serving_state(offering: Offering, registry: ProviderRegistry) -> Serving:
    """Whether this gateway can call the offering now: ``ready``; ``no_key`` (the instance exists but has
    no credentials, or is disabled for now); ``not_configured`` (no provider instance of that name: no
    adapter for it, or no `[providers.NAME]` table for an instance the catalog names)."""
    provider = registry.get(offering.provider)
    if provider is None:
        return "not_configured"
    return "ready" if provider.available() else "no_key"


def eligible(
    model: ModelInfo,
    needs: Needs,
    registry: ProviderRegistry,
    today: date,
    forced_provider: str | None = None,
) -> list[Candidate]:
    """The candidates in catalog order, or the error that explains why there are none."""
    offerings = [o for o in all_offerings(model, registry) if o.supports(needs.mode)]
    if forced_provider is not None:
        offerings = [o for o in offerings if o.provider == forced_provider]
        if not offerings:
            raise InvalidRequestError(
                f"provider {quote(forced_provider)} does not offer {model.id} for {needs.mode}",
                param="model",
                code="model_not_available",
            )
    primary_up = registry.any_primary_available()
    result: list[Candidate] = []
    retired: list[Offering] = []
    lacking: list[Missing] = []
    for offering in offerings:
        provider = registry.get(offering.provider)
        if provider is None or not provider.available():
            continue
        if provider.fallback_only and primary_up and forced_provider is None:
            continue
        if offering.lifecycle.status_on(today) == "retired":
            retired.append(offering)
            continue
        missing = _missing_capability(offering, needs)
        if missing:
            lacking.append(missing)
            continue
        result.append(Candidate(offering, provider))
    if result:
        return result
    if retired:
        raise _retired_error(model, retired, today)
    if lacking:
        raise UnsupportedParameterError(lacking[0].message, param=lacking[0].param)
    raise NoProviderAvailableError(
        f"no configured provider can serve {model.id} right now; configure a provider key or enable the sandbox"
    )


def _missing_capability(offering: Offering, needs: Needs) -> Missing | None:
    caps = offering.caps
    name = offering.provider
    if needs.mask and not caps.mask:
        return Missing(f"{name} cannot apply a mask for this model", "mask")
    if needs.input_images > max(caps.max_input_images, 1 if needs.mode == "image-edit" else 0):
        return Missing(f"{name} accepts at most {caps.max_input_images} input images for this model", "image")
    if needs.markup and not caps.markup:
        return Missing(f"{name} cannot take a markup overlay for this model (no faithful emulation exists)", "markup")
    if needs.svg and not caps.svg:
        return Missing(
            f"{name} cannot make SVG for this model (a raster image has no faithful conversion to a vector one)",
            "output_format",
        )
    if needs.animation and not caps.animated_gif:
        return Missing(f"{name} cannot make animated GIFs for this model", "frame_count")
    return None


def _retired_error(model: ModelInfo, retired: list[Offering], today: date) -> ModelRetiredError:
    lifecycle = retired[0].lifecycle
    when = f" on {lifecycle.retired_on.isoformat()}" if lifecycle.retired_on else ""
    successor = f"; use {lifecycle.successor} instead" if lifecycle.successor else ""
    providers = ", ".join(o.provider for o in retired)
    return ModelRetiredError(f"{model.id} was retired{when} at {providers}{successor}", param="model")
