"""Plain data types shared by the pure core: capabilities, size systems, prices, lifecycle, jobs.

Everything here is a frozen stdlib dataclass so that `core/` imports nothing outside the standard
library. The catalog loader validates the TOML data files into these types with pydantic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

MODES: tuple[str, ...] = ("text-to-image", "image-edit")
Mode = Literal["text-to-image", "image-edit"]
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif", "avif", "svg")
OutputFormat = Literal["png", "jpeg", "webp", "gif", "avif", "svg"]
RASTER_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif", "avif")
# Animated GIF output (OpenAI's `frame_count` / `frame_duration_ms`, openai SDK 3.57).
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES, DEFAULT_FRAME_MS = 2, 16, 9, 200
MAX_FRAME_MS = 655_350  # OpenAI caps the encoded delay here (a GIF delay is 16 bits of 10 ms)
Handling = Literal["passthrough", "renamed", "converted", "emulated", "unsupported", "dropped"]
Status = Literal["active", "deprecated", "retired"]


class ParamError(ValueError):
    """A public parameter cannot be accepted. The service turns it into a 400 naming `param`."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimensions:
    width: int
    height: int

    @property
    def ratio(self) -> float:
        return self.width / self.height

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @classmethod
    def parse(cls, text: str) -> Dimensions:
        """Parse a trusted ``"WxH"`` string from catalog data (user input goes through sizes.py)."""
        w, _, h = text.lower().partition("x")
        return cls(int(w), int(h))


@dataclass(frozen=True)
class NamedSize:
    """One entry of a discrete size list; `name` is the provider's preset name when it has one."""

    size: str
    name: str | None = None

    @property
    def dims(self) -> Dimensions:
        return Dimensions.parse(self.size)


@dataclass(frozen=True)
class FreeSizeRule:
    """Any WxH inside these limits. Ratios are width/height."""

    max_edge: int
    max_pixels: int
    multiple: int = 1
    min_edge: int = 1
    min_pixels: int = 0
    min_ratio: float = 0.0
    max_ratio: float = math.inf


@dataclass(frozen=True)
class Tier:
    """A scale tier of a ratio-based size system.

    `megapixels` is the tier's nominal area in units of 1024*1024 pixels ("1K" = 1, "2K" = 4).
    `sizes` maps a ratio label ("16:9") to the exact pixel size the provider produces; where a
    ratio is missing, the size is computed from the area and rounded to `multiple`.
    """

    name: str
    megapixels: float
    sizes: dict[str, str] = field(default_factory=dict)
    multiple: int = 16


@dataclass(frozen=True)
class SizeSystem:
    """How an offering is told the output size.

    - ``discrete``: one of `sizes` (optionally named presets); if `free` is also set, any other
      WxH may be sent as a custom size within those limits.
    - ``free``: any WxH within `free`.
    - ``ratio_tiers``: one of `ratios` ("16:9") times one of `tiers` ("1K", or megapixels).
    `auto` says the provider accepts ``size="auto"``; `default` is the size produced when the
    caller asks for nothing (for ratio_tiers: `default_ratio` at `default_tier`).
    """

    kind: Literal["discrete", "free", "ratio_tiers"]
    sizes: tuple[NamedSize, ...] = ()
    free: FreeSizeRule | None = None
    ratios: tuple[str, ...] = ()
    tiers: tuple[Tier, ...] = ()
    auto: bool = False
    default: str = "1024x1024"
    default_ratio: str = "1:1"
    default_tier: str | None = None


@dataclass(frozen=True)
class SizeRequest:
    """The caller's size wishes after parsing `size`, `aspect_ratio` and `resolution`.

    `size` (WxH) wins; otherwise `ratio` decides shape and `area` (from `resolution`) scale.
    """

    dims: Dimensions | None = None
    ratio: tuple[int, int] | None = None
    ratio_text: str | None = None
    area: float | None = None
    resolution_text: str | None = None
    auto: bool = False


@dataclass(frozen=True)
class SizeChoice:
    """What the offering will be asked to produce.

    `dims` is None only when the provider was sent ``auto`` and picks the size itself.
    `preset` is the discrete size's preset name, `ratio`/`tier` the labels for ratio_tiers systems,
    and `custom` is True when a free WxH (not a listed size) was chosen.
    """

    dims: Dimensions | None
    auto: bool = False
    preset: str | None = None
    ratio: str | None = None
    tier: str | None = None
    custom: bool = False
    notes: tuple[str, ...] = ()

    @property
    def size_text(self) -> str:
        return "auto" if self.dims is None else str(self.dims)


# --- capabilities -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRule:
    """How one optional public parameter is handled by an offering.

    `wire` is the provider's field name when it differs (renamed); `values` restricts accepted
    values (empty: any); `map` converts public values to the provider's; `on_unsupported` says
    whether an unsupported parameter is refused (400) or dropped with a warning.
    """

    handling: Handling = "passthrough"
    wire: str | None = None
    values: tuple[str, ...] = ()
    map: dict[str, str] = field(default_factory=dict)
    on_unsupported: Literal["error", "drop"] = "error"
    note: str = ""


@dataclass(frozen=True)
class Capabilities:
    sizes: SizeSystem
    max_n: int = 1
    n_wire: str = "n"
    formats: tuple[str, ...] = ("png",)
    default_format: str = "png"
    compression: bool = False
    qualities: tuple[str, ...] = ()
    default_quality: str | None = None
    backgrounds: tuple[str, ...] = ()
    max_input_images: int = 0
    mask: bool = False
    max_prompt_chars: int = 32000
    streaming: bool = False
    params: dict[str, ParamRule] = field(default_factory=dict)
    # Outputs that only some models make natively (no faithful conversion exists for the others):
    # `animated_gif`: `output_format` gif with `frame_count` / `frame_duration_ms`;
    # `svg`: `output_format` svg (a vector image, n=1, not streamed), with the optional `svg` object;
    # `markup`: edits guided by a transparent overlay on the first image (never with a mask).
    animated_gif: bool = False
    svg: bool = False
    markup: bool = False


# --- money ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePrice:
    quality: str
    size: str
    usd: Decimal


@dataclass(frozen=True)
class TokenPrices:
    """USD per one million tokens."""

    text_input: Decimal
    image_input: Decimal
    image_output: Decimal
    cached_text_input: Decimal | None = None
    cached_image_input: Decimal | None = None
    text_output: Decimal | None = None


@dataclass(frozen=True)
class Pricing:
    per_image: tuple[ImagePrice, ...] = ()
    tokens: TokenPrices | None = None
    per_megapixel: Decimal | None = None
    free: bool = False
    notes: str = ""


# --- lifecycle and catalog entries -------------------------------------------------------------


@dataclass(frozen=True)
class Lifecycle:
    status: Status = "active"
    deprecated_on: date | None = None
    retired_on: date | None = None
    successor: str | None = None
    note: str = ""

    def status_on(self, day: date) -> Status:
        """The status in force on `day`: dates move an offering along, never back."""
        if self.status == "retired" or (self.retired_on is not None and day >= self.retired_on):
            return "retired"
        if self.status == "deprecated" or (self.deprecated_on is not None and day >= self.deprecated_on):
            return "deprecated"
        return "active"


@dataclass(frozen=True)
class Offering:
    """A model served by one provider instance (`provider`: the `[providers.NAME]` table's name).
    `kind` names the instance's provider kind when it differs from `provider` (an ``xai`` instance
    of the ``openai-compatible`` kind)."""

    provider: str
    model_ids: dict[str, str]
    caps: Capabilities
    pricing: Pricing = field(default_factory=Pricing)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    notes: str = ""
    kind: str | None = None

    def supports(self, mode: str) -> bool:
        return mode in self.model_ids


@dataclass(frozen=True)
class ModelInfo:
    id: str
    display_name: str
    creator: str
    family: str
    modes: tuple[str, ...]
    max_input_images: int
    max_resolution: str
    offerings: tuple[Offering, ...]
    tags: tuple[str, ...] = ()
    overview: str = ""
    aliases: tuple[str, ...] = ()

    def offering(self, provider: str) -> Offering | None:
        for off in self.offerings:
            if off.provider == provider:
                return off
        return None


# --- the normalized request and the job a provider receives -------------------------------------


@dataclass(frozen=True)
class Decision:
    """One normalization decision, reported back to the caller."""

    param: str
    asked: object
    sent: object
    handling: Handling
    note: str = ""


@dataclass(frozen=True)
class PublicRequest:
    """The caller's request, already type-checked by the web schemas, before any provider is chosen."""

    mode: Mode
    prompt: str
    n: int = 1
    size: SizeRequest = field(default_factory=SizeRequest)
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    options: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    input_images: int = 0
    has_mask: bool = False
    has_markup: bool = False
    stream: bool = False
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    svg: dict[str, object] | None = None


@dataclass(frozen=True)
class ProviderJob:
    """What one provider call is asked to do, in the offering's own terms.

    `n` is images for this call (after fan-out). `output_format` is a format the provider
    produces natively; `final_format` is what the caller gets (converted by the gateway when the
    two differ). `options` are wire-named parameters the offering accepts; `extra` the caller's
    unknown parameters, passed through untouched.
    """

    mode: Mode
    provider_model: str
    prompt: str
    size: SizeChoice
    n: int
    output_format: str
    output_compression: int | None
    quality: str | None
    background: str | None
    options: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    first_index: int = 0
    partial_images: int = 0


@dataclass(frozen=True)
class Plan:
    """The result of normalizing a request for one offering."""

    jobs: tuple[ProviderJob, ...]
    decisions: tuple[Decision, ...]
    final_format: str
    final_compression: int | None
    convert: bool
    warnings: tuple[str, ...] = ()
