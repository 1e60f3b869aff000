"""Sizes: parse the public `size`, `aspect_ratio` and `resolution` and fit them to an offering.

Pure functions over the types in `core.types`. Parsing raises `ParamError` naming the parameter;
`choose_size` never fails on a well-formed request (it picks the nearest supported size and says
what it changed in `SizeChoice.notes`). The gateway never stretches: every rule keeps the shape,
only scaling uniformly and rounding edges to the provider's multiple.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TypeVar

from imagegate.core.quoting import quote
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

__all__ = [
    "MAX_AREA",
    "MAX_EDGE",
    "MAX_RATIO",
    "MEGAPIXEL",
    "MIN_AREA",
    "build_size_request",
    "choose_size",
    "parse_dims",
    "parse_ratio",
    "parse_resolution",
    "ratio_label",
]

MEGAPIXEL = 1024 * 1024
MAX_EDGE = 16384
MAX_RATIO = 100
MIN_AREA = 0.0625 * MEGAPIXEL
MAX_AREA = 64.0 * MEGAPIXEL
EPS = 1e-9
# Discrete lists: only mention the scale when the chosen area is over 2x off the asked one.
_SCALE_NOTE_DISTANCE = math.log(2)

_NUM = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_DIMS_RE = re.compile(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*")
_RATIO_RE = re.compile(rf"\s*{_NUM}\s*:\s*{_NUM}\s*")
_RES_RE = re.compile(rf"\s*{_NUM}\s*(k|mp)?\s*", re.IGNORECASE)
_MAX_TEXT = 40

_T = TypeVar("_T")


# --- parsing ------------------------------------------------------------------------------------


def parse_dims(text: str, param: str = "size") -> Dimensions:
    """Parse ``"WxH"`` (whole positive pixels, each edge at most `MAX_EDGE`)."""
    match = _DIMS_RE.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise ParamError(param, f'{param} must be "WxH" in whole pixels (e.g. "1024x1024"), got {quote(text)}')
    digits = match.group(1), match.group(2)
    if any(len(d.lstrip("0")) > len(str(MAX_EDGE)) for d in digits):
        raise ParamError(param, f"{param} {quote(text.strip())} is too large: each edge must be <= {MAX_EDGE}")
    width, height = int(digits[0]), int(digits[1])
    if width <= 0 or height <= 0:
        raise ParamError(param, f"{param} {quote(text.strip())}: width and height must be positive")
    if width > MAX_EDGE or height > MAX_EDGE:
        raise ParamError(param, f"{param} {quote(text.strip())} is too large: each edge must be <= {MAX_EDGE}")
    return Dimensions(width, height)


def parse_ratio(text: str, param: str = "aspect_ratio") -> tuple[int, int]:
    """Parse ``"W:H"`` (decimals allowed, ``"2.39:1"``) into a reduced integer pair (239, 100)."""
    match = _RATIO_RE.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise ParamError(param, f'{param} must be "W:H" with positive numbers (e.g. "16:9"), got {quote(text)}')
    width, height = Fraction(match.group(1)), Fraction(match.group(2))
    if width <= 0 or height <= 0:
        raise ParamError(param, f"{param} {quote(text.strip())}: both sides must be positive")
    value = width / height
    if not Fraction(1, MAX_RATIO) <= value <= MAX_RATIO:
        raise ParamError(param, f"{param} {quote(text.strip())} must be between 1:{MAX_RATIO} and {MAX_RATIO}:1")
    value = value.limit_denominator(10000)
    return value.numerator, value.denominator


def parse_resolution(text: str) -> float:
    """Parse a scale tier into a pixel area: ``"1K"`` = 1024², ``"0.25"`` = 0.25 * 1024²."""
    return _parse_resolution(text)[0]


def _parse_resolution(text: str) -> tuple[float, str]:
    """Return (area, normalized text). K tiers: (k*1024)²; plain numbers (or "MP"): megapixels."""
    match = _RES_RE.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise ParamError(
            "resolution",
            f'resolution must be a K tier ("1K", "2K") or megapixels ("0.25", "1"), got {quote(text)}',
        )
    number = float(match.group(1))
    is_k = (match.group(2) or "").lower() == "k"
    if number <= 0:
        raise ParamError("resolution", f"resolution {quote(text.strip())} must be positive")
    area = (number * 1024) ** 2 if is_k else number * MEGAPIXEL
    if not MIN_AREA * (1 - EPS) <= area <= MAX_AREA * (1 + EPS):
        raise ParamError(
            "resolution",
            f"resolution {quote(text.strip())} is out of range: allowed 0.25K..8K (0.0625 to 64 megapixels)",
        )
    label = f"{number:g}K" if is_k else f"{number:g}"
    return area, label


def build_size_request(size: str | None, aspect_ratio: str | None, resolution: str | None) -> SizeRequest:
    """Combine the three public size parameters into one `SizeRequest`.

    ``size="WxH"`` wins and the other two are only syntax-checked (and left out of the result).
    ``size="W:H"`` counts as `aspect_ratio` (a different `aspect_ratio` alongside it is a conflict).
    ``size="auto"`` is kept as ``auto=True`` only when neither `aspect_ratio` nor `resolution` is
    given; otherwise those decide and the provider is sent a concrete size.
    """
    ratio = parse_ratio(aspect_ratio) if aspect_ratio is not None else None
    area, res_text = _parse_resolution(resolution) if resolution is not None else (None, None)
    auto = False
    if size is not None:
        if size.strip().lower() == "auto":
            auto = True
        elif ":" in size:
            size_ratio = parse_ratio(size, "size")
            if ratio is not None and ratio != size_ratio:
                raise ParamError(
                    "size",
                    f"size {quote(size.strip())} conflicts with aspect_ratio {quote(aspect_ratio)}",
                    "conflicting_parameters",
                )
            ratio = size_ratio
        else:
            return SizeRequest(dims=parse_dims(size))
    return SizeRequest(
        ratio=ratio,
        ratio_text=None if ratio is None else ratio_label(*ratio),
        area=area,
        resolution_text=res_text,
        auto=auto and ratio is None and area is None,
    )


def ratio_label(width: int, height: int) -> str:
    """The reduced ratio of two positive integers: ``ratio_label(1920, 1080) == "16:9"``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"ratio sides must be positive, got {width}:{height}")
    g = math.gcd(width, height)
    return f"{width // g}:{height // g}"


# --- matching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """The shape and scale to aim for, plus what the caller explicitly asked (for notes)."""

    ratio: float
    area: float
    dims: Dimensions | None
    asked_ratio: str | None
    asked_resolution: str | None


def choose_size(req: SizeRequest, system: SizeSystem) -> SizeChoice:
    """Pick what the offering will be asked to produce for `req` (see DESIGN.md §3)."""
    if req.auto:
        if system.auto:
            return SizeChoice(dims=None, auto=True)
        choice = _choose(SizeRequest(), system)
        note = f"size auto is not supported; using the default {choice.size_text}"
        return replace(choice, notes=(note, *choice.notes))
    return _choose(req, system)


def _choose(req: SizeRequest, system: SizeSystem) -> SizeChoice:
    target = _target(req, system)
    if system.kind == "discrete":
        return _choose_discrete(target, system)
    if system.kind == "free":
        if system.free is None:
            raise ValueError("a free size system needs a FreeSizeRule")
        dims, notes = _fit_free(target, system.free)
        return SizeChoice(dims, notes=notes)
    return _choose_tiers(target, system)


def _target(req: SizeRequest, system: SizeSystem) -> _Target:
    if system.kind == "ratio_tiers":
        default_ratio = _ratio_value(system.default_ratio)
        default_area = _tier_area(_default_tier(system))
    else:
        default_dims = Dimensions.parse(system.default)
        default_ratio, default_area = default_dims.ratio, float(default_dims.pixels)
    asked_ratio = req.ratio_text
    if req.ratio is not None and asked_ratio is None:
        asked_ratio = ratio_label(*req.ratio)
    if req.dims is not None:
        return _Target(req.dims.ratio, float(req.dims.pixels), req.dims, None, None)
    return _Target(
        ratio=default_ratio if req.ratio is None else req.ratio[0] / req.ratio[1],
        area=default_area if req.area is None else req.area,
        dims=None,
        asked_ratio=asked_ratio,
        asked_resolution=None if req.area is None else (req.resolution_text or f"{req.area:g} pixels"),
    )


def _distance(a: float, b: float) -> float:
    """Log distance: the same for 2:1 vs 1:1 as for 1:2 vs 1:1 (and for areas alike)."""
    return abs(math.log(a) - math.log(b))


def _nearest(items: Sequence[_T], key: Callable[[_T], float]) -> list[_T]:
    """All items within EPS of the smallest `key`, in their original order (so ties go first-listed)."""
    if not items:
        raise ValueError("nothing to choose from")
    dists = [key(item) for item in items]
    best = min(dists)
    return [item for item, d in zip(items, dists, strict=True) if d <= best + EPS]


def _ratio_value(label: str) -> float:
    w, h = parse_ratio(label)
    return w / h


def _fmt_ratio(value: float) -> str:
    """A float ratio as text: 3.0 -> "3:1", 1/3 -> "1:3", 16/9 -> "1.778:1"."""
    if value >= 1:
        return f"{round(value, 3):g}:1"
    return f"1:{round(1 / value, 3):g}"


# --- discrete -----------------------------------------------------------------------------------


def _choose_discrete(t: _Target, system: SizeSystem) -> SizeChoice:
    sizes = system.sizes
    if t.dims is not None:
        listed = _listed(sizes, t.dims)
        if listed is not None:
            return SizeChoice(listed.dims, preset=listed.name)
        if system.free is not None:
            dims, notes = _fit_free(t, system.free)
            listed = _listed(sizes, dims)
            if listed is not None:
                return SizeChoice(dims, preset=listed.name, notes=notes)
            return SizeChoice(dims, custom=True, notes=notes)
    by_shape = _nearest(sizes, lambda s: _distance(s.dims.ratio, t.ratio))
    best = _nearest(by_shape, lambda s: _distance(s.dims.pixels, t.area))[0]
    return SizeChoice(best.dims, preset=best.name, notes=_discrete_notes(t, best.dims))


def _listed(sizes: Sequence[NamedSize], dims: Dimensions) -> NamedSize | None:
    return next((s for s in sizes if s.dims == dims), None)


def _discrete_notes(t: _Target, dims: Dimensions) -> tuple[str, ...]:
    if t.dims is not None:
        return (f"size {t.dims} not available; nearest is {dims}",)
    notes: list[str] = []
    if t.asked_ratio is not None and _distance(dims.ratio, t.ratio) > EPS:
        label = ratio_label(dims.width, dims.height)
        notes.append(f"aspect ratio {t.asked_ratio} not available; nearest is {label} ({dims})")
    if t.asked_resolution is not None and _distance(dims.pixels, t.area) > _SCALE_NOTE_DISTANCE + EPS:
        notes.append(f"resolution {t.asked_resolution} not available; nearest is {dims}")
    return tuple(notes)


# --- free ---------------------------------------------------------------------------------------


def _fit_free(t: _Target, rule: FreeSizeRule) -> tuple[Dimensions, tuple[str, ...]]:
    """Clamp the ratio, scale uniformly into the limits, then round edges to `rule.multiple`."""
    notes: list[str] = []
    if t.dims is not None:
        w, h = float(t.dims.width), float(t.dims.height)
    else:
        w, h = math.sqrt(t.area * t.ratio), math.sqrt(t.area / t.ratio)
    lo, hi = _ratio_bounds(rule)
    ratio = w / h
    if ratio > hi * (1 + EPS) or ratio < lo * (1 - EPS):
        clamped = min(max(ratio, lo), hi)
        area = w * h
        w, h = math.sqrt(area * clamped), math.sqrt(area / clamped)
        notes.append(
            f"aspect ratio {_fmt_ratio(ratio)} is outside the supported "
            f"{_fmt_ratio(lo)}..{_fmt_ratio(hi)}; using {_fmt_ratio(clamped)}"
        )
    w, h, note = _scale_into(w, h, rule)
    if note:
        notes.append(note)
    dims = _round_free(w, h, rule)
    if t.dims is not None and not notes and dims != t.dims:
        notes.append(f"rounded {t.dims} to multiples of {rule.multiple}: {dims}")
    return dims, tuple(notes)


def _edge_limits(rule: FreeSizeRule) -> tuple[int, int]:
    """(smallest, largest) edge that is a multiple of `rule.multiple` and inside the edge limits."""
    m = max(rule.multiple, 1)
    low = max(m, math.ceil(rule.min_edge / m) * m)
    high = max(m, (rule.max_edge // m) * m)
    return low, high


def _ratio_bounds(rule: FreeSizeRule) -> tuple[float, float]:
    """The ratio range actually reachable: the declared one narrowed by the edge and pixel limits."""
    low, high = _edge_limits(rule)
    widest = min(rule.max_ratio, high / low, rule.max_pixels / (low * low))
    narrowest = max(rule.min_ratio, low / high, (low * low) / rule.max_pixels)
    return narrowest, widest


def _scale_into(w: float, h: float, rule: FreeSizeRule) -> tuple[float, float, str]:
    """One uniform factor that brings (w, h) inside the edge and pixel limits (max limits win)."""
    low, high = _edge_limits(rule)
    by_edge = high / max(w, h)
    by_pixels = math.sqrt(rule.max_pixels / (w * h))
    down = min(by_edge, by_pixels)
    up_edge, up_pixels = low / min(w, h), math.sqrt(rule.min_pixels / (w * h))
    up = max(up_edge, up_pixels)
    asked = f"{round(w)}x{round(h)}"
    if down < 1 - EPS:
        limit = f"max edge {rule.max_edge}" if by_edge <= by_pixels else f"max {rule.max_pixels} pixels"
        return w * down, h * down, f"scaled {asked} down to fit the {limit}"
    if up > 1 + EPS:
        scale = min(up, down)
        limit = f"min edge {rule.min_edge}" if up_edge >= up_pixels else f"min {rule.min_pixels} pixels"
        return w * scale, h * scale, f"scaled {asked} up to fit the {limit}"
    return w, h, ""


def _round_free(w: float, h: float, rule: FreeSizeRule) -> Dimensions:
    """Round each edge to the nearest multiple (halves go up); on a limit, try floor/ceil instead.

    If the nearest rounding breaks a limit, the floor/ceil combination that fits with the smallest
    shape error (then scale error) wins.
    """
    m = max(rule.multiple, 1)
    nearest = Dimensions(max(m, math.floor(w / m + 0.5) * m), max(m, math.floor(h / m + 0.5) * m))
    if _fits(nearest, rule):
        return nearest
    options = [Dimensions(a, b) for a in _floor_ceil(w, m) for b in _floor_ceil(h, m)]
    fitting = [d for d in options if _fits(d, rule)]
    if not fitting:
        return nearest
    return min(fitting, key=lambda d: (_distance(d.ratio, w / h), _distance(d.pixels, w * h)))


def _floor_ceil(x: float, m: int) -> list[int]:
    below = math.floor(x / m + EPS) * m
    values = [below, below + m] if below < x - EPS else [below]
    return [v for v in values if v >= m] or [m]


def _fits(d: Dimensions, rule: FreeSizeRule) -> bool:
    edges_ok = rule.min_edge <= min(d.width, d.height) and max(d.width, d.height) <= rule.max_edge
    pixels_ok = rule.min_pixels <= d.pixels <= rule.max_pixels
    ratio_ok = rule.min_ratio * (1 - EPS) <= d.ratio <= rule.max_ratio * (1 + EPS)
    return edges_ok and pixels_ok and ratio_ok


# --- ratio tiers --------------------------------------------------------------------------------


def _default_tier(system: SizeSystem) -> Tier:
    if not system.tiers:
        raise ValueError("a ratio_tiers size system needs at least one tier")
    named = [tier for tier in system.tiers if tier.name == system.default_tier]
    return named[0] if named else system.tiers[0]


def _tier_area(tier: Tier) -> float:
    return tier.megapixels * MEGAPIXEL


def _choose_tiers(t: _Target, system: SizeSystem) -> SizeChoice:
    if not system.tiers:
        raise ValueError("a ratio_tiers size system needs at least one tier")
    label = _nearest(system.ratios, lambda r: _distance(_ratio_value(r), t.ratio))[0]
    tier = _nearest(system.tiers, lambda tr: _distance(_tier_area(tr), t.area))[0]
    dims = _tier_dims(tier, label)
    notes: list[str] = []
    if t.dims is not None and dims != t.dims:
        notes.append(f"size {t.dims} not available; nearest is {label} at {tier.name} ({dims})")
    if t.asked_ratio is not None and _distance(_ratio_value(label), t.ratio) > EPS:
        notes.append(f"aspect ratio {t.asked_ratio} not available; nearest is {label}")
    if t.asked_resolution is not None and _distance(_tier_area(tier), t.area) > 1e-6:
        notes.append(f"resolution {t.asked_resolution} not available; nearest tier is {tier.name}")
    return SizeChoice(dims, ratio=label, tier=tier.name, notes=tuple(notes))


def _tier_dims(tier: Tier, label: str) -> Dimensions:
    """The tier's listed size for `label`, else one computed from its area, rounded to its multiple."""
    listed = tier.sizes.get(label)
    if listed is not None:
        return Dimensions.parse(listed)
    ratio, area, m = _ratio_value(label), _tier_area(tier), max(tier.multiple, 1)
    width = max(m, math.floor(math.sqrt(area * ratio) / m + 0.5) * m)
    height = max(m, math.floor(math.sqrt(area / ratio) / m + 0.5) * m)
    return Dimensions(width, height)
