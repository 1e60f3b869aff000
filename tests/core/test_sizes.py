"""Size parsing and matching (core/sizes.py), table-driven over real providers' size systems."""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import pytest

from imagegate.core.sizes import (
    build_size_request,
    choose_size,
    parse_dims,
    parse_ratio,
    parse_resolution,
    ratio_label,
)
from imagegate.core.types import (
    Dimensions,
    FreeSizeRule,
    NamedSize,
    ParamError,
    SizeChoice,
    SizeRequest,
    SizeSystem,
    Tier,
)

MP = 1024 * 1024

# --- the size systems under test ---------------------------------------------------------------

GPT_IMAGE_1 = SizeSystem(
    kind="discrete",
    sizes=(NamedSize("1024x1024"), NamedSize("1536x1024"), NamedSize("1024x1536")),
    auto=True,
)
DALL_E_3 = SizeSystem(
    kind="discrete",
    sizes=(NamedSize("1024x1024"), NamedSize("1792x1024"), NamedSize("1024x1792")),
    auto=False,
)
GPT_IMAGE_2_RULE = FreeSizeRule(
    max_edge=3840, max_pixels=3840 * 2160, multiple=16, min_edge=16, min_ratio=1 / 3, max_ratio=3
)
GPT_IMAGE_2 = SizeSystem(kind="free", free=GPT_IMAGE_2_RULE)
FLUX_RULE = FreeSizeRule(max_edge=2048, max_pixels=2048 * 2048, multiple=16, min_edge=256)
FAL_FLUX = SizeSystem(
    kind="discrete",
    sizes=(
        NamedSize("1024x1024", "square_hd"),
        NamedSize("512x512", "square"),
        NamedSize("768x1024", "portrait_4_3"),
        NamedSize("576x1024", "portrait_16_9"),
        NamedSize("1024x768", "landscape_4_3"),
        NamedSize("1024x576", "landscape_16_9"),
    ),
    free=FLUX_RULE,
    default="1024x768",
)
KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
FAL_KONTEXT = SizeSystem(kind="ratio_tiers", ratios=KONTEXT_RATIOS, tiers=(Tier("1", 1),))

GEMINI_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}


def _gemini_tier(name: str, factor: int) -> Tier:
    sizes = {label: f"{w * factor}x{h * factor}" for label, (w, h) in GEMINI_1K.items()}
    return Tier(name, factor * factor, sizes)


GEMINI_3_PRO = SizeSystem(
    kind="ratio_tiers",
    ratios=tuple(GEMINI_1K),
    tiers=(_gemini_tier("1K", 1), _gemini_tier("2K", 2), _gemini_tier("4K", 4)),
    default_tier="1K",
)
REPLICATE_SCHNELL = SizeSystem(
    kind="ratio_tiers",
    ratios=("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"),
    tiers=(Tier("1", 1, multiple=16), Tier("0.25", 0.25, multiple=16)),
    default_tier="1",
)
WIDE = SizeSystem(kind="ratio_tiers", ratios=("1:1", "4:1", "8:1"), tiers=(Tier("1", 1),))
TIE_LANDSCAPE_FIRST = SizeSystem(kind="ratio_tiers", ratios=("2:1", "1:2"), tiers=(Tier("1", 1),))
TIE_PORTRAIT_FIRST = SizeSystem(kind="ratio_tiers", ratios=("1:2", "2:1"), tiers=(Tier("1", 1),))
TIE_DISCRETE = SizeSystem(kind="discrete", sizes=(NamedSize("1536x1024"), NamedSize("1024x1536")))


class Exp(NamedTuple):
    """Expected choice. `note`: None means no notes at all, else a substring of one of the notes."""

    size: str
    preset: str | None = None
    ratio: str | None = None
    tier: str | None = None
    custom: bool = False
    auto: bool = False
    note: str | None = None


# (system, size, aspect_ratio, resolution, expected)
Case = tuple[SizeSystem, str | None, str | None, str | None, Exp]

DISCRETE_CASES: dict[str, Case] = {
    "gpt1-default": (GPT_IMAGE_1, None, None, None, Exp("1024x1024")),
    "gpt1-listed": (GPT_IMAGE_1, "1536x1024", None, None, Exp("1536x1024")),
    "gpt1-unlisted-by-shape": (GPT_IMAGE_1, "1920x1080", None, None, Exp("1536x1024", note="not available")),
    "gpt1-aspect-16:9": (GPT_IMAGE_1, None, "16:9", None, Exp("1536x1024", note="nearest is 3:2")),
    "gpt1-aspect-9:16": (GPT_IMAGE_1, None, "9:16", None, Exp("1024x1536", note="nearest is 2:3")),
    "gpt1-size-ratio": (GPT_IMAGE_1, "16:9", None, None, Exp("1536x1024", note="nearest is 3:2")),
    "gpt1-size-beats-aspect": (GPT_IMAGE_1, "1024x1536", "16:9", "0.5K", Exp("1024x1536")),
    "gpt1-auto": (GPT_IMAGE_1, "auto", None, None, Exp("auto", auto=True)),
    "gpt1-auto-with-aspect": (GPT_IMAGE_1, "auto", "3:2", None, Exp("1536x1024")),
    "gpt1-scale-note": (GPT_IMAGE_1, None, "1:1", "4K", Exp("1024x1024", note="resolution 4K")),
    "gpt1-1K-no-note": (GPT_IMAGE_1, None, "3:2", "1K", Exp("1536x1024")),
    "dalle3-auto-unsupported": (DALL_E_3, "auto", None, None, Exp("1024x1024", note="auto is not supported")),
    "dalle3-16:9": (DALL_E_3, None, "16:9", None, Exp("1792x1024", note="nearest is 7:4")),
    "dalle3-2:3": (DALL_E_3, "2:3", None, None, Exp("1024x1792", note="nearest is 4:7")),
    "dalle3-1536x1024": (DALL_E_3, "1536x1024", None, None, Exp("1792x1024", note="not available")),
    "tie-first-listed": (TIE_DISCRETE, None, "1:1", None, Exp("1536x1024", note="not available")),
    "flux-default": (FAL_FLUX, None, None, None, Exp("1024x768", preset="landscape_4_3")),
    "flux-preset": (FAL_FLUX, "1024x576", None, None, Exp("1024x576", preset="landscape_16_9")),
    "flux-preset-small": (FAL_FLUX, "512x512", None, None, Exp("512x512", preset="square")),
    "flux-custom": (FAL_FLUX, "1920x1080", None, None, Exp("1920x1088", custom=True, note="rounded")),
    "flux-custom-exact": (FAL_FLUX, "1600x896", None, None, Exp("1600x896", custom=True)),
    "flux-custom-clamped": (FAL_FLUX, "4096x4096", None, None, Exp("2048x2048", custom=True, note="max")),
    "flux-custom-enlarged": (FAL_FLUX, "100x100", None, None, Exp("256x256", custom=True, note="min edge")),
    "flux-custom-lands-on-preset": (
        FAL_FLUX,
        "1020x1020",
        None,
        None,
        Exp("1024x1024", preset="square_hd", note="rounded"),
    ),
    "flux-aspect-16:9": (FAL_FLUX, None, "16:9", None, Exp("1024x576", preset="landscape_16_9")),
    "flux-aspect-3:4": (FAL_FLUX, None, "3:4", None, Exp("768x1024", preset="portrait_4_3")),
    "flux-square-by-scale-small": (FAL_FLUX, None, "1:1", "0.5K", Exp("512x512", preset="square")),
    "flux-square-by-scale-default": (FAL_FLUX, None, "1:1", None, Exp("1024x1024", preset="square_hd")),
    "flux-auto-unsupported": (
        FAL_FLUX,
        "auto",
        None,
        None,
        Exp("1024x768", preset="landscape_4_3", note="auto"),
    ),
}

FREE_CASES: dict[str, Case] = {
    "default": (GPT_IMAGE_2, None, None, None, Exp("1024x1024")),
    "exact": (GPT_IMAGE_2, "1024x1536", None, None, Exp("1024x1536")),
    "max": (GPT_IMAGE_2, "3840x2160", None, None, Exp("3840x2160")),
    "round-half-up": (GPT_IMAGE_2, "1920x1080", None, None, Exp("1920x1088", note="multiples of 16")),
    "round-square": (GPT_IMAGE_2, "1000x1000", None, None, Exp("1008x1008", note="multiples of 16")),
    "too-many-pixels": (GPT_IMAGE_2, "5000x5000", None, None, Exp("2880x2880", note="max 8294400 pixels")),
    "square-over-pixels": (GPT_IMAGE_2, "3840x3840", None, None, Exp("2880x2880", note="pixels")),
    "edge": (GPT_IMAGE_2, "4000x2000", None, None, Exp("3840x1920", note="max edge 3840")),
    "ratio-clamp-wide": (GPT_IMAGE_2, "9000x1000", None, None, Exp("3840x1280", note="using 3:1")),
    "ratio-clamp-tall": (GPT_IMAGE_2, "1000x9000", None, None, Exp("1280x3840", note="using 1:3")),
    "ratio-clamp-small": (GPT_IMAGE_2, "100x10", None, None, Exp("48x16", note="using 3:1")),
    "ratio-clamp-aspect": (GPT_IMAGE_2, None, "5:1", "1K", Exp("1776x592", note="outside the supported")),
    "min-edge": (GPT_IMAGE_2, "10x10", None, None, Exp("16x16", note="min edge 16")),
    "aspect-1K": (GPT_IMAGE_2, None, "16:9", "1K", Exp("1360x768")),
    "aspect-size-ratio": (GPT_IMAGE_2, "16:9", None, "1", Exp("1360x768")),
    "aspect-default-area": (GPT_IMAGE_2, None, "1:1", None, Exp("1024x1024")),
    "resolution-only": (GPT_IMAGE_2, None, None, "2K", Exp("2048x2048")),
    "resolution-too-big": (GPT_IMAGE_2, None, "1:1", "4K", Exp("2880x2880", note="pixels")),
    "size-beats-others": (GPT_IMAGE_2, "1536x1024", "9:16", "4K", Exp("1536x1024")),
    "auto-unsupported": (GPT_IMAGE_2, "auto", None, None, Exp("1024x1024", note="auto")),
}

TIER_CASES: dict[str, Case] = {
    "kontext-default": (FAL_KONTEXT, None, None, None, Exp("1024x1024", ratio="1:1", tier="1")),
    "kontext-16:9": (FAL_KONTEXT, None, "16:9", None, Exp("1360x768", ratio="16:9", tier="1")),
    "kontext-21:9": (FAL_KONTEXT, None, "21:9", None, Exp("1568x672", ratio="21:9", tier="1")),
    "kontext-9:21": (FAL_KONTEXT, "9:21", None, None, Exp("672x1568", ratio="9:21", tier="1")),
    "kontext-2.39:1": (
        FAL_KONTEXT,
        None,
        "2.39:1",
        None,
        Exp("1568x672", ratio="21:9", tier="1", note="21:9"),
    ),
    "kontext-1:4": (FAL_KONTEXT, None, "1:4", None, Exp("672x1568", ratio="9:21", tier="1", note="9:21")),
    "kontext-dims": (
        FAL_KONTEXT,
        "1920x1080",
        None,
        None,
        Exp("1360x768", ratio="16:9", tier="1", note="1920x1080"),
    ),
    "kontext-4K": (FAL_KONTEXT, None, "1:1", "4K", Exp("1024x1024", ratio="1:1", tier="1", note="tier is 1")),
    "gemini-default": (GEMINI_3_PRO, None, None, None, Exp("1024x1024", ratio="1:1", tier="1K")),
    "gemini-16:9-4K": (GEMINI_3_PRO, None, "16:9", "4K", Exp("5504x3072", ratio="16:9", tier="4K")),
    "gemini-16:9-4MP": (GEMINI_3_PRO, None, "16:9", "4", Exp("2752x1536", ratio="16:9", tier="2K")),
    "gemini-1K": (GEMINI_3_PRO, None, None, "1K", Exp("1024x1024", ratio="1:1", tier="1K")),
    "gemini-1MP": (GEMINI_3_PRO, None, None, "1", Exp("1024x1024", ratio="1:1", tier="1K")),
    "gemini-3K-nearest-4K": (
        GEMINI_3_PRO,
        None,
        "1:1",
        "3K",
        Exp("4096x4096", ratio="1:1", tier="4K", note="3K"),
    ),
    "gemini-1.5K-nearest-2K": (
        GEMINI_3_PRO,
        None,
        "1:1",
        "1.5K",
        Exp("2048x2048", ratio="1:1", tier="2K", note="1.5K"),
    ),
    "gemini-0.5K-nearest-1K": (
        GEMINI_3_PRO,
        None,
        "3:2",
        "0.5K",
        Exp("1264x848", ratio="3:2", tier="1K", note="0.5K"),
    ),
    "gemini-4:5-2K": (GEMINI_3_PRO, None, "4:5", "2K", Exp("1856x2304", ratio="4:5", tier="2K")),
    "gemini-dims-exact": (GEMINI_3_PRO, "2048x2048", None, None, Exp("2048x2048", ratio="1:1", tier="2K")),
    "gemini-dims-nearest": (
        GEMINI_3_PRO,
        "1920x1080",
        "1:1",
        "4K",
        Exp("1376x768", ratio="16:9", tier="1K", note="1920x1080"),
    ),
    "gemini-dims-2K": (
        GEMINI_3_PRO,
        "2560x1440",
        None,
        None,
        Exp("2752x1536", ratio="16:9", tier="2K", note="2560x1440"),
    ),
    "gemini-auto": (GEMINI_3_PRO, "auto", None, None, Exp("1024x1024", ratio="1:1", tier="1K", note="auto")),
    "schnell-16:9": (REPLICATE_SCHNELL, None, "16:9", None, Exp("1360x768", ratio="16:9", tier="1")),
    "schnell-16:9-0.5K": (REPLICATE_SCHNELL, None, "16:9", "0.5K", Exp("688x384", ratio="16:9", tier="0.25")),
    "schnell-16:9-0.25MP": (
        REPLICATE_SCHNELL,
        None,
        "16:9",
        "0.25",
        Exp("688x384", ratio="16:9", tier="0.25"),
    ),
    "schnell-1K": (REPLICATE_SCHNELL, None, "1:1", "1K", Exp("1024x1024", ratio="1:1", tier="1")),
    "schnell-0.7K-nearest": (
        REPLICATE_SCHNELL,
        None,
        "1:1",
        "0.7K",
        Exp("512x512", ratio="1:1", tier="0.25", note="0.7K"),
    ),
    "schnell-4:5": (REPLICATE_SCHNELL, None, "4:5", None, Exp("912x1152", ratio="4:5", tier="1")),
    "wide-7:1": (WIDE, None, "7:1", None, Exp("2896x368", ratio="8:1", tier="1", note="7:1 not available")),
    "wide-5:1": (WIDE, None, "5:1", None, Exp("2048x512", ratio="4:1", tier="1", note="nearest is 4:1")),
    "wide-size-7:1": (WIDE, "7:1", None, None, Exp("2896x368", ratio="8:1", tier="1", note="nearest is 8:1")),
    "tie-landscape-first": (
        TIE_LANDSCAPE_FIRST,
        None,
        "1:1",
        None,
        Exp("1456x720", ratio="2:1", tier="1", note="nearest is 2:1"),
    ),
    "tie-portrait-first": (
        TIE_PORTRAIT_FIRST,
        None,
        "1:1",
        None,
        Exp("720x1456", ratio="1:2", tier="1", note="nearest is 1:2"),
    ),
}


def _check(choice: SizeChoice, exp: Exp) -> None:
    got = (choice.size_text, choice.preset, choice.ratio, choice.tier, choice.custom, choice.auto)
    assert got == (exp.size, exp.preset, exp.ratio, exp.tier, exp.custom, exp.auto)
    if exp.note is None:
        assert choice.notes == ()
    else:
        assert any(exp.note in note for note in choice.notes), choice.notes


@pytest.mark.parametrize(
    ("system", "size", "aspect", "resolution", "exp"),
    [pytest.param(*case, id=name) for name, case in (DISCRETE_CASES | FREE_CASES | TIER_CASES).items()],
)
def test_choose_size(
    system: SizeSystem, size: str | None, aspect: str | None, resolution: str | None, exp: Exp
) -> None:
    _check(choose_size(build_size_request(size, aspect, resolution), system), exp)


@pytest.mark.parametrize(
    "system", [GPT_IMAGE_1, DALL_E_3, GPT_IMAGE_2, FAL_FLUX, FAL_KONTEXT, GEMINI_3_PRO, REPLICATE_SCHNELL]
)
@pytest.mark.parametrize(("k_tier", "mp_tier"), [("0.5K", "0.25"), ("1K", "1"), ("2K", "4"), ("4K", "16")])
def test_k_and_megapixel_tiers_are_the_same_area(system: SizeSystem, k_tier: str, mp_tier: str) -> None:
    assert parse_resolution(k_tier) == parse_resolution(mp_tier)
    by_k = choose_size(build_size_request(None, "3:2", k_tier), system)
    by_mp = choose_size(build_size_request(None, "3:2", mp_tier), system)
    assert (by_k.dims, by_k.tier, by_k.ratio) == (by_mp.dims, by_mp.tier, by_mp.ratio)


def test_auto_on_a_system_with_auto_is_passed_through() -> None:
    choice = choose_size(SizeRequest(auto=True), GPT_IMAGE_1)
    assert choice == SizeChoice(dims=None, auto=True)


# --- parsing -----------------------------------------------------------------------------------

PARSE_ERRORS: list[tuple[str | None, str | None, str | None, str]] = [
    ("", None, None, "size"),
    ("   ", None, None, "size"),
    ("abc", None, None, "size"),
    ("0x10", None, None, "size"),
    ("10x0", None, None, "size"),
    ("-5x5", None, None, "size"),
    ("1024x", None, None, "size"),
    ("x1024", None, None, "size"),
    ("10x10x10", None, None, "size"),
    ("1024.5x1024", None, None, "size"),
    ("99999x10", None, None, "size"),
    ("16385x16", None, None, "size"),
    ("1" * 5000 + "x10", None, None, "size"),
    ("16:9", "4:3", None, "size"),
    ("200:1", None, None, "size"),
    ("0:1", None, None, "size"),
    (None, "0:1", None, "aspect_ratio"),
    (None, "16:0", None, "aspect_ratio"),
    (None, "a:b", None, "aspect_ratio"),
    (None, "16-9", None, "aspect_ratio"),
    (None, "16", None, "aspect_ratio"),
    (None, "1:101", None, "aspect_ratio"),
    (None, "", None, "aspect_ratio"),
    ("1024x1024", "16-9", None, "aspect_ratio"),
    (None, None, "3Q", "resolution"),
    (None, None, "-1", "resolution"),
    (None, None, "0", "resolution"),
    (None, None, "0K", "resolution"),
    (None, None, "1000", "resolution"),
    (None, None, "8.5K", "resolution"),
    (None, None, "0.06", "resolution"),
    (None, None, "", "resolution"),
    ("1024x1024", None, "huge", "resolution"),
]


@pytest.mark.parametrize(("size", "aspect", "resolution", "param"), PARSE_ERRORS)
def test_parse_errors_name_the_parameter(
    size: str | None, aspect: str | None, resolution: str | None, param: str
) -> None:
    with pytest.raises(ParamError) as info:
        build_size_request(size, aspect, resolution)
    assert info.value.param == param
    assert info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024x768", Dimensions(1024, 768)),
        (" 1024X768 ", Dimensions(1024, 768)),
        ("1024 x 768", Dimensions(1024, 768)),
        ("16384x1", Dimensions(16384, 1)),
        ("01024x0768", Dimensions(1024, 768)),
    ],
)
def test_parse_dims(text: str, expected: Dimensions) -> None:
    assert parse_dims(text) == expected


def test_parse_dims_uses_the_given_param() -> None:
    with pytest.raises(ParamError) as info:
        parse_dims("nope", param="image_size")
    assert info.value.param == "image_size"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:9", (16, 9)),
        (" 32 : 18 ", (16, 9)),
        ("2.39:1", (239, 100)),
        ("1:1.5", (2, 3)),
        ("100:1", (100, 1)),
        ("1:100", (1, 100)),
    ],
)
def test_parse_ratio(text: str, expected: tuple[int, int]) -> None:
    assert parse_ratio(text) == expected


@pytest.mark.parametrize(
    ("text", "area"),
    [
        ("1K", MP),
        ("1k", MP),
        ("0.5K", MP / 4),
        ("1.5K", 2.25 * MP),
        ("4K", 16 * MP),
        ("8K", 64 * MP),
        ("0.25K", MP / 16),
        ("1", MP),
        ("0.25", MP / 4),
        ("4", 4 * MP),
        ("64", 64 * MP),
        ("0.0625", MP / 16),
        (" 2MP ", 2 * MP),
    ],
)
def test_parse_resolution(text: str, area: float) -> None:
    assert parse_resolution(text) == pytest.approx(area)


@pytest.mark.parametrize(
    ("size", "aspect", "resolution", "expected"),
    [
        (None, None, None, SizeRequest()),
        ("auto", None, None, SizeRequest(auto=True)),
        (" AUTO ", None, None, SizeRequest(auto=True)),
        ("auto", "16:9", None, SizeRequest(ratio=(16, 9), ratio_text="16:9")),
        ("auto", None, "2K", SizeRequest(area=4 * MP, resolution_text="2K")),
        ("1920x1080", "1:1", "4K", SizeRequest(dims=Dimensions(1920, 1080))),
        ("16:9", None, None, SizeRequest(ratio=(16, 9), ratio_text="16:9")),
        ("32:18", "16:9", None, SizeRequest(ratio=(16, 9), ratio_text="16:9")),
        (
            None,
            "2.39:1",
            "1k",
            SizeRequest(ratio=(239, 100), ratio_text="239:100", area=MP, resolution_text="1K"),
        ),
        (None, None, "0.50", SizeRequest(area=MP / 2, resolution_text="0.5")),
    ],
)
def test_build_size_request(
    size: str | None, aspect: str | None, resolution: str | None, expected: SizeRequest
) -> None:
    assert build_size_request(size, aspect, resolution) == expected


@pytest.mark.parametrize(("w", "h", "label"), [(1920, 1080, "16:9"), (1024, 1024, "1:1"), (1024, 1536, "2:3")])
def test_ratio_label(w: int, h: int, label: str) -> None:
    assert ratio_label(w, h) == label


# --- properties ----------------------------------------------------------------------------------

RESOLUTIONS = ("0.5K", "1K", "1.5K", "2K", "3K", "4K", "0.25", "1", "2", "4", "8")


def _random_request(rng: random.Random) -> SizeRequest:
    if rng.random() < 0.5:
        return build_size_request(f"{rng.randint(16, 12000)}x{rng.randint(16, 12000)}", None, None)
    ratio = f"{rng.randint(1, 30)}:{rng.randint(1, 30)}"
    resolution = rng.choice((*RESOLUTIONS, None))
    return build_size_request(None, ratio, resolution)


def _requested(req: SizeRequest) -> tuple[float, float]:
    """(ratio, area) a request asks for (area defaults to 1 MP, the systems' default)."""
    if req.dims is not None:
        return req.dims.ratio, req.dims.pixels
    assert req.ratio is not None
    return req.ratio[0] / req.ratio[1], req.area if req.area is not None else MP


def test_free_sizes_always_fit_the_limits_and_keep_the_shape() -> None:
    rng = random.Random(0)
    rule = GPT_IMAGE_2_RULE
    for _ in range(400):
        req = _random_request(rng)
        dims = choose_size(req, GPT_IMAGE_2).dims
        assert dims is not None
        w, h = dims.width, dims.height
        assert w % rule.multiple == 0 and h % rule.multiple == 0, (req, dims)
        assert rule.min_edge <= min(w, h) and max(w, h) <= rule.max_edge, (req, dims)
        assert w * h <= rule.max_pixels, (req, dims)
        assert rule.min_ratio - 1e-9 <= w / h <= rule.max_ratio + 1e-9, (req, dims)
        asked_ratio, asked_area = _requested(req)
        clamped = min(max(asked_ratio, rule.min_ratio), rule.max_ratio)
        error = abs(math.log(w / h) - math.log(clamped))
        # Rounding each edge to 16 moves the ratio by at most ~16/2 * (1/w + 1/h).
        bound = max(0.03, rule.multiple * (1 / w + 1 / h))
        assert error <= bound, (req, dims)
        if asked_area >= 0.25 * MP and min(w, h) >= 300:
            assert error <= 0.03, (req, dims)


@pytest.mark.parametrize("system", [FAL_KONTEXT, GEMINI_3_PRO, REPLICATE_SCHNELL, WIDE])
def test_ratio_tier_choices_are_the_nearest_and_keep_the_shape(system: SizeSystem) -> None:
    rng = random.Random(0)
    for _ in range(300):
        req = _random_request(rng)
        choice = choose_size(req, system)
        assert choice.dims is not None and choice.ratio in system.ratios
        tier = next(t for t in system.tiers if t.name == choice.tier)
        assert choice.dims.width % tier.multiple == 0 and choice.dims.height % tier.multiple == 0
        asked_ratio, asked_area = _requested(req)
        rw, rh = parse_ratio(choice.ratio)
        shape = abs(math.log(asked_ratio) - math.log(rw / rh))
        for other in system.ratios:
            ow, oh = parse_ratio(other)
            assert shape <= abs(math.log(asked_ratio) - math.log(ow / oh)) + 1e-9, (req, choice)
        scale = abs(math.log(asked_area) - math.log(tier.megapixels * MP))
        for other_tier in system.tiers:
            assert scale <= abs(math.log(asked_area) - math.log(other_tier.megapixels * MP)) + 1e-9
        assert abs(math.log(choice.dims.ratio) - math.log(rw / rh)) <= 0.03, (req, choice)
