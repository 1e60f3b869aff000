"""GET /v1/models and /v1/models/{id}: OpenAI's model objects plus the catalog facts."""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.requests import Request

from imagegate.accounting.gate import Gate
from imagegate.core.pricing import usd_text
from imagegate.core.quoting import quote
from imagegate.core.types import ModelInfo, Offering, SizeSystem
from imagegate.errors import ModelNotFoundError
from imagegate.providers.registry import ProviderRegistry
from imagegate.routing.candidates import all_offerings, serving_state
from imagegate.web.responses import JSONResponse

CREATED = 1_735_689_600  # catalog epoch (2025-01-01); OpenAI's `created` is required


def model_status(model: ModelInfo, today: date) -> str:
    statuses = [o.lifecycle.status_on(today) for o in model.offerings]
    for status in ("active", "deprecated"):
        if status in statuses:
            return status
    return "retired" if statuses else "active"


def size_summary(system: SizeSystem) -> dict[str, Any]:
    summary: dict[str, Any] = {"kind": system.kind, "auto": system.auto}
    if system.sizes:
        summary["sizes"] = [{"size": s.size, "name": s.name} if s.name else s.size for s in system.sizes]
    if system.free is not None:
        free = system.free
        summary["free"] = {
            "multiple": free.multiple,
            "min_edge": free.min_edge,
            "max_edge": free.max_edge,
            "max_pixels": free.max_pixels,
            "min_ratio": free.min_ratio,
            "max_ratio": None if free.max_ratio == float("inf") else free.max_ratio,
        }
    if system.ratios:
        summary["aspect_ratios"] = list(system.ratios)
        summary["resolutions"] = [t.name for t in system.tiers]
    return summary


def offering_json(offering: Offering, today: date, registry: ProviderRegistry | None = None) -> dict[str, Any]:
    lc = offering.lifecycle
    prices = offering.pricing
    tokens = prices.tokens
    return {
        "provider": offering.provider,
        "kind": offering.kind or offering.provider,
        # ready | no_key | not_configured: whether this gateway can call it now (the catalog lists more)
        "serving": serving_state(offering, registry) if registry is not None else None,
        "model_ids": dict(offering.model_ids),
        "status": lc.status_on(today),
        "deprecated_on": lc.deprecated_on.isoformat() if lc.deprecated_on else None,
        "retired_on": lc.retired_on.isoformat() if lc.retired_on else None,
        "successor": lc.successor,
        "sizes": size_summary(offering.caps.sizes),
        "max_n": offering.caps.max_n,
        "output_formats": list(offering.caps.formats),
        "qualities": list(offering.caps.qualities),
        "backgrounds": list(offering.caps.backgrounds),
        "mask": offering.caps.mask,
        "max_input_images": offering.caps.max_input_images,
        "pricing": {
            "free": prices.free,
            "per_image": [{"quality": p.quality, "size": p.size, "usd": usd_text(p.usd)} for p in prices.per_image],
            "per_megapixel_usd": usd_text(prices.per_megapixel),
            "tokens_per_million_usd": None
            if tokens is None
            else {
                name: usd_text(getattr(tokens, name))
                for name in (
                    "text_input",
                    "cached_text_input",
                    "image_input",
                    "cached_image_input",
                    "image_output",
                    "text_output",
                )
                if getattr(tokens, name) is not None
            },
            "notes": prices.notes or None,
        },
        "notes": offering.notes or lc.note or None,
    }


def model_json(model: ModelInfo, registry: ProviderRegistry, today: date) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": CREATED,
        "owned_by": model.creator,
        "display_name": model.display_name,
        "creator": model.creator,
        "family": model.family,
        "modes": list(model.modes),
        "max_input_images": model.max_input_images,
        "max_resolution": model.max_resolution,
        "tags": list(model.tags),
        "status": model_status(model, today),
        "overview": model.overview,
        "providers": [offering_json(o, today, registry) for o in all_offerings(model, registry)],
    }


def catalog_list(request: Request) -> JSONResponse:
    """The model list, without authentication (the playground's anonymous front door uses it too)."""
    state = request.app.state
    today = state.service.today()
    data = [model_json(m, state.registry, today) for m in state.catalog.models()]
    return JSONResponse({"object": "list", "data": data})


def catalog_get(request: Request) -> JSONResponse:
    """One model, without authentication; unknown ids are 404 naming `model`."""
    state = request.app.state
    model_id = request.path_params["model_id"]
    model = state.catalog.get(model_id)
    if model is None:
        raise ModelNotFoundError(f"The model {quote(model_id)} does not exist", param="model")
    return JSONResponse(model_json(model, state.registry, state.service.today()))


async def _authenticate(request: Request) -> None:
    """`keys` mode: like every /v1 call, a valid key is required (401 otherwise)."""
    gate: Gate = request.app.state.gate
    await gate.authenticate(request.headers.get("authorization"))


async def list_models(request: Request) -> JSONResponse:
    await _authenticate(request)
    return catalog_list(request)


async def get_model(request: Request) -> JSONResponse:
    await _authenticate(request)
    return catalog_get(request)
