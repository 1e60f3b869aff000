"""Pricing: the seed's price table, token prices, per-megapixel and per-tier prices (table-driven)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from imagegate.catalog.loader import load_catalog
from imagegate.core.pricing import actual_cost, estimate, image_price, token_cost, usd_text
from imagegate.core.types import Dimensions, Pricing, TokenPrices

CATALOG = load_catalog()

# The seed's gpt-image-1 price table (DESIGN.md section 2), per image, USD.
SEED_TABLE = [
    ("low", "1024x1024", "0.011"),
    ("medium", "1024x1024", "0.042"),
    ("high", "1024x1024", "0.167"),
    ("low", "1024x1536", "0.016"),
    ("medium", "1024x1536", "0.063"),
    ("high", "1024x1536", "0.25"),
    ("low", "1536x1024", "0.016"),
    ("medium", "1536x1024", "0.063"),
    ("high", "1536x1024", "0.25"),
]


@pytest.mark.parametrize("provider", ["openai", "fal"])
@pytest.mark.parametrize(("quality", "size", "usd"), SEED_TABLE)
def test_seed_price_table(provider: str, quality: str, size: str, usd: str) -> None:
    offering = CATALOG.get("gpt-image-1").offering(provider)
    dims = Dimensions.parse(size)
    assert image_price(offering.pricing, quality, dims, None) == Decimal(usd)
    # Without usage (or at fal) the per-image table is what is charged, times the count.
    assert actual_cost(offering, quality, dims, None, 3, None) == Decimal(usd) * 3


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # 50 text tokens in, 4160 image tokens out (high 1024x1024): 50*5 + 4160*40 per million
        (
            {"input_tokens": 50, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}, "output_tokens": 4160},
            "0.16665",
        ),
        # low 1024x1024: 272 image tokens out
        ({"input_tokens": 20, "output_tokens": 272}, "0.01098"),
        # an edit: 100 text + 1000 image tokens in (200 of them cached), 1056 out
        (
            {
                "input_tokens": 1100,
                "input_tokens_details": {"text_tokens": 100, "image_tokens": 1000, "cached_image_tokens": 200},
                "output_tokens": 1056,
            },
            "0.05124",
        ),
    ],
)
def test_openai_token_cost(usage: dict, expected: str) -> None:
    offering = CATALOG.get("gpt-image-1").offering("openai")
    assert token_cost(offering.pricing.tokens, usage) == Decimal(expected)
    assert actual_cost(offering, "high", Dimensions(1024, 1024), None, 1, usage) == Decimal(expected)


def test_estimate_uses_the_most_expensive_quality_for_auto() -> None:
    offering = CATALOG.get("gpt-image-1").offering("openai")
    assert estimate(offering, "auto", Dimensions(1536, 1024), None, 2) == Decimal("0.50")
    assert estimate(offering, None, None, None, 1) == Decimal("0.25")  # size auto: largest listed


def test_per_megapixel_rounds_up() -> None:
    pricing = Pricing(per_megapixel=Decimal("0.003"))
    assert image_price(pricing, None, Dimensions(1024, 1024), None) == Decimal("0.003")
    assert image_price(pricing, None, Dimensions(1920, 1088), None) == Decimal("0.006")
    fal_schnell = CATALOG.get("flux-1-schnell").offering("fal")
    assert image_price(fal_schnell.pricing, None, Dimensions(1024, 768), None) == Decimal("0.003")


def test_tier_priced_model() -> None:
    gemini = CATALOG.get("gemini-3-pro-image-preview").offering("google")
    assert image_price(gemini.pricing, None, Dimensions(5504, 3072), "4K") == Decimal("0.24")
    assert image_price(gemini.pricing, None, Dimensions(1376, 768), "1K") == Decimal("0.134")


def test_unknown_price_is_none_not_zero() -> None:
    gpt2 = CATALOG.get("gpt-image-2").offering("openai")
    assert image_price(gpt2.pricing, "high", Dimensions(1024, 1024), None) is None
    assert usd_text(None) is None
    assert usd_text(Decimal("0.2500")) == "0.25" and usd_text(Decimal(0)) == "0"


def test_free_pricing() -> None:
    assert image_price(Pricing(free=True), "high", None, None) == Decimal(0)
    assert token_cost(TokenPrices(Decimal(1), Decimal(1), Decimal(1)), {}) == Decimal(0)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # GPT Image 2.5: image output tokens at 30.00, the text (reasoning) output tokens at 10.00
        (
            {
                "input_tokens": 4,
                "input_tokens_details": {"text_tokens": 4, "image_tokens": 0},
                "output_tokens": 22196,
                "output_tokens_details": {"image_tokens": 21938, "text_tokens": 258},
            },
            "0.66074",
        ),
        # an edit with a cached input image: 8.00 per million image tokens in, 2.00 cached
        (
            {
                "input_tokens": 1010,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 1000, "cached_image_tokens": 400},
                "output_tokens": 1000,
                "output_tokens_details": {"image_tokens": 1000, "text_tokens": 0},
            },
            "0.03565",
        ),
    ],
)
def test_token_cost_by_token_kind(usage: dict, expected: str) -> None:
    offering = CATALOG.get("gpt-image-2.5-sunburst").offering("openai")
    assert token_cost(offering.pricing.tokens, usage) == Decimal(expected)


def test_a_stated_text_output_price_is_used_and_an_unstated_one_falls_back() -> None:
    prices = CATALOG.get("gpt-image-1").offering("openai").pricing.tokens
    usage = {"input_tokens": 0, "output_tokens": 100, "output_tokens_details": {"image_tokens": 0, "text_tokens": 100}}
    assert prices.text_output is None
    assert token_cost(prices, usage) == Decimal("0.0005")  # unstated: text output at the text input price
    stated = CATALOG.get("gpt-image-2.6-flare").offering("openai").pricing.tokens
    assert token_cost(stated, usage) == Decimal("0.001")
    assert token_cost(dataclasses.replace(stated, text_output=Decimal(0)), usage) == 0  # a stated 0 is a price


def test_svg_author_tokens_make_the_cost_unknown_never_a_partial_sum() -> None:
    offering = CATALOG.get("gpt-image-2.6-sunburst").offering("openai")
    usage = {
        "input_tokens": 10,
        "output_tokens": 1000,
        "svg_usage": {"model": "gpt-5.5", "input_tokens": 900, "output_tokens": 3000, "total_tokens": 3900},
    }
    assert actual_cost(offering, "medium", Dimensions(1024, 1024), None, 1, usage) is None
    del usage["svg_usage"]
    assert actual_cost(offering, "medium", Dimensions(1024, 1024), None, 1, usage) == Decimal("0.03005")


def test_every_successor_named_in_the_catalog_resolves() -> None:
    for model in CATALOG.models():
        for offering in model.offerings:
            successor = offering.lifecycle.successor
            assert successor is None or CATALOG.get(successor) is not None, (model.id, successor)


@pytest.mark.parametrize(("reported", "expected"), [(0.04, "0.04"), ("0.134546", "0.134546"), (0, "0")])
def test_a_reported_cost_wins_over_the_tables(reported: object, expected: str) -> None:
    offering = CATALOG.get("gpt-image-1").offering("openai")
    usage = {"input_tokens": 50, "output_tokens": 4160, "cost": reported}
    assert actual_cost(offering, "high", Dimensions(1024, 1024), None, 1, usage) == Decimal(expected)


@pytest.mark.parametrize("reported", [True, -1, "abc", float("nan"), None, [1]])
def test_an_unusable_reported_cost_is_ignored(reported: object) -> None:
    offering = CATALOG.get("gpt-image-1").offering("openai")
    usage = {"input_tokens": 50, "input_tokens_details": {"text_tokens": 50}, "output_tokens": 4160, "cost": reported}
    assert actual_cost(offering, "high", Dimensions(1024, 1024), None, 1, usage) == Decimal("0.16665")
