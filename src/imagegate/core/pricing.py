"""Money: what an image costs at an offering, from catalog prices and what was produced.

All amounts are `Decimal` USD. `None` means "unknown" (no confirmed price), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from imagegate.core.types import Dimensions, Offering, Pricing, TokenPrices

MILLION = Decimal(1_000_000)
# For estimates, `auto` quality is priced at the most expensive quality the table lists.
_QUALITY_ORDER = ("low", "standard", "medium", "high", "hd")


def image_price(pricing: Pricing, quality: str | None, dims: Dimensions | None, tier: str | None) -> Decimal | None:
    """Price of one image, or None when the table has no matching row."""
    if pricing.free:
        return Decimal(0)
    if pricing.per_megapixel is not None and dims is not None:
        megapixels = math.ceil(dims.pixels / (1024 * 1024))
        return pricing.per_megapixel * max(1, megapixels)
    rows = pricing.per_image
    if not rows:
        return None
    size_keys = {"*"}
    if dims is not None:
        size_keys.add(str(dims))
    if tier is not None:
        size_keys.add(tier)
    matching = [row for row in rows if row.size in size_keys]
    if not matching:
        return None
    qualities = {row.quality for row in matching}
    chosen = _pick_quality(quality, qualities)
    if chosen is None:
        return None
    return next(row.usd for row in matching if row.quality == chosen)


def _pick_quality(quality: str | None, available: set[str]) -> str | None:
    if quality in available:
        return quality
    if len(available) == 1:
        return next(iter(available))
    if quality in (None, "auto"):
        ranked = [q for q in _QUALITY_ORDER if q in available]
        return ranked[-1] if ranked else None
    return None


def estimate(
    offering: Offering, quality: str | None, dims: Dimensions | None, tier: str | None, n: int
) -> Decimal | None:
    """Estimated cost of `n` images before any call (the reservation for budgets)."""
    if dims is None:
        dims = _largest_listed(offering)
    one = image_price(offering.pricing, quality, dims, tier)
    return None if one is None else one * n


def _largest_listed(offering: Offering) -> Dimensions | None:
    sizes = [Dimensions.parse(row.size) for row in offering.pricing.per_image if "x" in row.size]
    return max(sizes, key=lambda d: d.pixels) if sizes else None


def token_cost(prices: TokenPrices, usage: Mapping[str, object]) -> Decimal:
    """Cost from an OpenAI-style `usage` object (input/output tokens with details)."""
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    input_total = _int(usage.get("input_tokens"))
    image_in = _int(details.get("image_tokens"))
    text_in = _int(details.get("text_tokens")) if "text_tokens" in details else max(0, input_total - image_in)
    cached_text = _int(details.get("cached_text_tokens"))
    cached_image = _int(details.get("cached_image_tokens"))
    out_details = usage.get("output_tokens_details")
    out_details = out_details if isinstance(out_details, Mapping) else {}
    output = _int(usage.get("output_tokens"))
    text_out = _int(out_details.get("text_tokens"))
    image_out = output - text_out if out_details else output
    total = (
        Decimal(text_in - cached_text) * prices.text_input
        + Decimal(cached_text) * _or(prices.cached_text_input, prices.text_input)
        + Decimal(image_in - cached_image) * prices.image_input
        + Decimal(cached_image) * _or(prices.cached_image_input, prices.image_input)
        + Decimal(image_out) * prices.image_output
        + Decimal(text_out) * _or(prices.text_output, prices.text_input)
    )
    return total / MILLION


def _or(price: Decimal | None, fallback: Decimal) -> Decimal:
    """`price` where the catalog states one (a stated 0 is a price), else `fallback`."""
    return fallback if price is None else price


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def actual_cost(
    offering: Offering,
    quality: str | None,
    dims: Dimensions | None,
    tier: str | None,
    count: int,
    usage: Mapping[str, object] | None,
) -> Decimal | None:
    """Cost of what was produced: the provider's reported `usage.cost` when it sent one, else token
    prices on `usage` when both exist, else the image table.

    An SVG's `svg_usage` (the author model's tokens, billed on top of the image tokens) makes the cost
    unknown: the catalog has no prices for author models, and a partial sum would understate it.
    """
    pricing = offering.pricing
    if pricing.free:
        return Decimal(0)
    if usage and isinstance(usage.get("svg_usage"), Mapping):
        return None
    reported = _reported_cost(usage)
    if reported is not None:  # what the provider says it charged (OpenRouter's usage.cost) wins
        return reported
    if usage and pricing.tokens is not None:
        return token_cost(pricing.tokens, usage)
    one = image_price(pricing, quality, dims, tier)
    return None if one is None else one * count


def _reported_cost(usage: Mapping[str, object] | None) -> Decimal | None:
    """A provider's own figure for what it charged, in USD (`usage.cost`), when it sent a usable one."""
    value = usage.get("cost") if usage else None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def usd_text(amount: Decimal | None) -> str | None:
    """A stable decimal string for headers and JSON (at most 6 decimal places, no exponent)."""
    if amount is None:
        return None
    quantized = amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP).normalize()
    return format(quantized, "f")
