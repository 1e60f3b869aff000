"""Facts for the catalog pages, derived from the catalog data the API uses (no per-model text here).

Everything returns plain strings and tuples so that the HTML page and `llms.txt` say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from imagegate.core.normalize import MAX_N
from imagegate.core.pricing import usd_text
from imagegate.core.types import (
    DEFAULT_FRAME_MS,
    DEFAULT_FRAMES,
    MAX_FRAMES,
    MIN_FRAMES,
    RASTER_FORMATS,
    Capabilities,
    ModelInfo,
    Offering,
    ParamRule,
    SizeSystem,
)

PROVIDER_NAMES = {
    "openai": "OpenAI",
    "fal": "fal",
    "replicate": "Replicate",
    "google": "Google",
    "vertex": "Vertex AI",
    "xai": "xAI",
    "bfl": "Black Forest Labs",
    "openrouter": "OpenRouter",
    "sandbox": "Sandbox",
}
TOKEN_LABELS = (
    ("text_input", "Text input"),
    ("cached_text_input", "Cached text input"),
    ("image_input", "Image input"),
    ("cached_image_input", "Cached image input"),
    ("image_output", "Image output"),
    ("text_output", "Text output"),
)
OPTION_PARAMS = ("moderation", "user", "seed", "input_fidelity", "style")
EXAMPLE_PROMPT = "A watercolor lighthouse on a cliff at dawn"


def provider_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider, provider)


def money(amount: Decimal) -> str:
    return "$" + (usd_text(amount) or "0")


def starting_price(model: ModelInfo) -> tuple[Decimal | None, str]:
    """The lowest per-image or per-megapixel price across the catalog's paid offerings."""
    best: tuple[Decimal, str] | None = None
    for off in model.offerings:
        candidates = [(p.usd, "image") for p in off.pricing.per_image]
        if off.pricing.per_megapixel is not None:
            candidates.append((off.pricing.per_megapixel, "megapixel"))
        for usd, unit in candidates:
            if best is None or usd < best[0]:
                best = (usd, unit)
    if best is None:
        return None, "unknown"
    return best[0], f"from {money(best[0])} / {best[1]}"


def reference_offering(offerings: list[Offering], mode: str, today: date) -> Offering | None:
    """The first offering (catalog order) that serves `mode` and is not retired: the one routing picks."""
    serving = [o for o in offerings if o.supports(mode)]
    active = [o for o in serving if o.lifecycle.status_on(today) != "retired"]
    chosen = active or serving
    return chosen[0] if chosen else None


def size_text(system: SizeSystem) -> str:
    if system.kind == "ratio_tiers":
        tiers = ", ".join(t.name for t in system.tiers)
        return f"aspect ratios {', '.join(system.ratios)} at {tiers}"
    parts = []
    if system.sizes:
        parts.append(", ".join(f"{s.size} ({s.name})" if s.name else s.size for s in system.sizes))
    if system.free is not None:
        free = system.free
        parts.append(
            f"custom sizes up to {free.max_edge} px per edge and {free.max_pixels:,} pixels, "
            f"multiples of {free.multiple}"
        )
    if system.auto:
        parts.append("auto")
    return "; ".join(parts)


@dataclass(frozen=True)
class ParamRow:
    name: str
    availability: str  # "required" | "supported" | "not available"
    handling: str


def _rule_text(name: str, rule: ParamRule | None) -> tuple[str, str]:
    """Availability and handling of an optional parameter governed by a catalog ParamRule."""
    if rule is None:
        return "not available", "dropped with a warning: the provider has no such option"
    if rule.handling in ("unsupported", "dropped"):
        how = "refused with a 400" if rule.on_unsupported == "error" else "dropped with a warning"
        return "not available", how + (f" ({rule.note})" if rule.note else "")
    text: str = rule.handling
    if rule.wire and rule.wire != name:
        text = f"renamed to {rule.wire}" if rule.handling == "renamed" else f"{rule.handling}, sent as {rule.wire}"
    if rule.map:
        text += "; converted: " + ", ".join(f"{k} → {v}" for k, v in rule.map.items())
    if rule.values:
        text += f"; values: {', '.join(rule.values)}"
    if rule.note:
        text += f" ({rule.note})"
    return "supported", text


def _size_handling(off: Offering) -> str:
    system = off.caps.sizes
    rule = off.caps.params.get("size")
    if system.kind == "ratio_tiers":
        text = "converted to the closest aspect ratio and tier"
    elif system.kind == "free":
        text = "converted: fitted into the size limits (ratio clamped, edges rounded to the multiple)"
    elif any(s.name for s in system.sizes):
        text = "converted to a preset name when it matches one; other sizes fitted as custom sizes"
    elif system.free is not None:
        text = "passthrough for listed sizes; other sizes fitted as custom sizes"
    else:
        text = "passthrough for listed sizes; other sizes converted to the closest listed size"
    if rule is not None and rule.wire:
        text += f"; sent as {rule.wire}" if rule.handling != "renamed" else f"; renamed to {rule.wire}"
    if system.auto:
        auto = "auto is passed through"
    elif system.kind == "ratio_tiers":
        auto = f"auto becomes the default aspect ratio {system.default_ratio}"
    else:
        auto = f"auto becomes the default size {system.default}"
    return f"{text}; {auto}. Sizes: {size_text(system)}"


def _format_handling(off: Offering) -> str:
    caps = off.caps
    rule = caps.params.get("output_format")
    native = ", ".join(f"{f} (as {rule.map[f]})" if rule and f in rule.map else f for f in caps.formats)
    text = f"passthrough for {native}"
    if rule and rule.map:
        text = f"converted for {native}"
    others = [f for f in RASTER_FORMATS if f not in caps.formats and not (f == "gif" and caps.animated_gif)]
    if others:
        text += f"; emulated for {', '.join(others)} (converted by the gateway)"
    if caps.animated_gif:
        text += "; gif: an animated GIF made by the provider"
    text += "; svg: made by the provider" if caps.svg else "; svg: refused (no faithful raster-to-vector conversion)"
    return text + f"; default {caps.default_format}"


def _animation_and_svg_rows(caps: Capabilities, mode: str) -> list[ParamRow]:
    rows: list[ParamRow] = []
    if caps.animated_gif:
        text = (
            f"passthrough with output_format gif: {MIN_FRAMES}-{MAX_FRAMES} frames (default {DEFAULT_FRAMES}), "
            f"frame_duration_ms default {DEFAULT_FRAME_MS}; no stream, no mask"
        )
        rows.append(ParamRow("frame_count / frame_duration_ms", "supported", text))
    else:
        text = "refused with a 400: this provider cannot animate (gif without frame_count is a one-frame GIF)"
        rows.append(ParamRow("frame_count / frame_duration_ms", "not available", text))
    if caps.svg:
        rows.append(ParamRow("svg", "supported", "passthrough with output_format svg (author model, effort); n=1"))
    else:
        rows.append(ParamRow("svg", "not available", "refused with a 400: no SVG output here"))
    if mode == "image-edit":
        if caps.markup:
            rows.append(
                ParamRow("markup", "supported", "passthrough: transparent PNG, first image's size; not with mask")
            )
        else:
            rows.append(ParamRow("markup", "not available", "refused with a 400: no faithful emulation exists"))
    return rows


def _compression_handling(off: Offering) -> str:
    caps = off.caps
    rule = caps.params.get("output_compression")
    if not caps.compression:
        return "emulated: applied by the gateway's encoder for jpeg, webp and avif; ignored for png and gif"
    native = ", ".join(f for f in caps.formats if f in ("jpeg", "webp", "avif"))
    head = f"renamed to {rule.wire}" if rule and rule.wire else "passthrough"
    return f"{head} for {native}; emulated by the gateway for other lossy formats; ignored for png and gif"


def _look_rows(caps: Capabilities) -> list[ParamRow]:
    rows: list[ParamRow] = []
    quality_rule = caps.params.get("quality")
    if caps.qualities:
        text = f"passthrough for {', '.join(caps.qualities)}"
        if quality_rule and quality_rule.map:
            text = "converted: " + ", ".join(f"{k} → {v}" for k, v in quality_rule.map.items())
            text += f"; native values {', '.join(caps.qualities)}"
        rows.append(ParamRow("quality", "supported", text))
    else:
        rows.append(ParamRow("quality", "not available", "dropped with a warning: no quality setting"))
    if caps.backgrounds:
        rows.append(ParamRow("background", "supported", f"passthrough for {', '.join(caps.backgrounds)}"))
    else:
        rows.append(
            ParamRow("background", "not available", "transparent is refused with a 400; opaque and auto are dropped")
        )
    return rows


def _input_rows(model: ModelInfo, off: Offering, mode: str, others_with_mask: tuple[Offering, ...]) -> list[ParamRow]:
    caps = off.caps
    rows: list[ParamRow] = []
    if mode == "image-edit":
        rows.append(ParamRow("image", "required", f"1 to {model.max_input_images} input images (PNG, JPEG, WebP)"))
        if caps.mask:
            rows.append(ParamRow("mask", "supported", "passthrough: PNG with alpha, same size as the first image"))
        elif others_with_mask:
            names = ", ".join(provider_name(o.provider) for o in others_with_mask)
            text = f"{provider_name(off.provider)} takes no mask; requests with a mask are routed to {names}"
            rows.append(ParamRow("mask", "supported", text))
        else:
            rows.append(ParamRow("mask", "not available", "refused: no provider of this model takes a mask"))
    else:
        rows.append(ParamRow("image", "not available", "text-to-image takes no input image (use image-edit)"))
        rows.append(ParamRow("mask", "not available", "edits only"))
    return rows


def param_rows(
    model: ModelInfo, off: Offering, mode: str, others_with_mask: tuple[Offering, ...] = ()
) -> list[ParamRow]:
    """How each public parameter is handled for `mode` by the reference offering `off`.

    `others_with_mask` are the other serving offerings that accept a mask (edits with a mask go there).
    """
    caps = off.caps
    rows = [ParamRow("prompt", "required", f"passthrough; up to {caps.max_prompt_chars:,} characters")]
    per_call = max(1, caps.max_n)
    n_text = "passthrough" if caps.n_wire == "n" else f"renamed to {caps.n_wire}"
    n_text += f" up to {per_call}"
    if per_call < MAX_N:
        n_text += f"; emulated beyond {per_call}: the gateway fans out parallel calls (n up to {MAX_N})"
    rows.append(ParamRow("n", "supported", n_text))
    rows.append(ParamRow("size", "supported", _size_handling(off)))
    rows.append(ParamRow("aspect_ratio", "supported", "converted: combined with resolution into a size (see size)"))
    rows.append(ParamRow("resolution", "supported", "converted: sets the scale (1K = 1 MP) of the chosen size"))
    rows += _look_rows(caps)
    rows.append(ParamRow("output_format", "supported", _format_handling(off)))
    rows.append(ParamRow("output_compression", "supported", _compression_handling(off)))
    rows += _animation_and_svg_rows(caps, mode)
    rows.append(
        ParamRow(
            "response_format",
            "supported",
            "b64_json: bytes inline; url: emulated via a signed gateway link to /v1/files/{id}",
        )
    )
    for name in OPTION_PARAMS:
        availability, text = _rule_text(name, caps.params.get(name))
        rows.append(ParamRow(name, availability, text))
    rows += _input_rows(model, off, mode, others_with_mask)
    if caps.streaming:
        stream = "passthrough: server-sent partial images (partial_images 0-3), n must be 1"
    else:
        stream = "emulated: one completed event after the image is made (no partial images), n must be 1"
    rows.append(ParamRow("stream / partial_images", "supported", stream))
    rows.append(ParamRow("dry_run", "supported", "handled by the gateway: returns the price estimate, calls no one"))
    return rows


def mode_rows(
    model: ModelInfo, offerings: list[Offering], mode: str, today: date
) -> tuple[Offering | None, list[ParamRow]]:
    """The reference offering of `mode` and its parameter rows (empty when no offering serves it)."""
    ref = reference_offering(offerings, mode, today)
    if ref is None:
        return None, []
    masks = tuple(
        o
        for o in offerings
        if o is not ref and o.supports(mode) and o.caps.mask and o.lifecycle.status_on(today) != "retired"
    )
    return ref, param_rows(model, ref, mode, masks)


SERVING_LABELS = {"no_key": "not configured: no API key", "not_configured": "not configured here"}


def offering_status(off: Offering, today: date) -> str:
    lc = off.lifecycle
    status = lc.status_on(today)
    if status == "active":
        return "active"
    when = lc.retired_on if status == "retired" else lc.deprecated_on
    text = f"{status} at {provider_name(off.provider)}"
    if when is not None:
        text += f" on {when.isoformat()}"
    if lc.successor:
        text += f"; successor: {lc.successor}"
    return text


def price_lines(off: Offering) -> list[str]:
    p = off.pricing
    lines = []
    if p.free:
        lines.append("free")
    for row in p.per_image:
        size = "any size" if row.size == "*" else row.size
        lines.append(f"{row.quality} {size}: {money(row.usd)} per image")
    if p.per_megapixel is not None:
        lines.append(f"{money(p.per_megapixel)} per megapixel")
    if p.tokens is not None:
        for key, label in TOKEN_LABELS:
            value = getattr(p.tokens, key)
            if value is not None:
                lines.append(f"{label} tokens: {money(value)} per million")
    if not lines:
        lines.append("price unknown")
    if p.notes:
        lines.append(f"note: {p.notes}")
    return lines


def faq(
    model: ModelInfo, offerings: list[Offering], today: date, ready: set[str] | None = None
) -> list[tuple[str, str]]:
    """The model page's questions; `ready` names the providers this gateway can call now (None: all)."""
    name = model.display_name
    _, price = starting_price(model)
    paid = [provider_name(o.provider) for o in offerings if not o.pricing.free]
    cost = (
        f"Prices start {price} ({', '.join(paid)}); the sandbox is free."
        if price != "unknown"
        else "No confirmed price is listed; the sandbox is free."
    )
    sizes = {size_text(o.caps.sizes) for o in offerings}
    size_answer = f"Up to {model.max_resolution}. " + " | ".join(sorted(sizes))
    if "image-edit" in model.modes:
        mask = any(o.caps.mask for o in offerings if o.supports("image-edit"))
        edit = f"Yes: up to {model.max_input_images} input images" + (", with an optional mask." if mask else ".")
    else:
        edit = "No, it only generates images from text."
    states = [offering_status(o, today) for o in offerings]
    retired = [s for s in states if s != "active"]
    live = [o for o in offerings if o.lifecycle.status_on(today) != "retired"]
    available = [provider_name(o.provider) for o in live if ready is None or o.provider in ready]
    unconfigured = [provider_name(o.provider) for o in live if ready is not None and o.provider not in ready]
    if available:
        alive = f"Yes, served here by {', '.join(available)}."
    elif live:
        alive = "Not on this gateway right now: no provider of it is configured."
    else:
        alive = "No, every provider has retired it."
    if unconfigured:
        alive += f" Also offered by {', '.join(unconfigured)} (not configured here)."
    if retired:
        alive += " Note: " + "; ".join(retired) + "."
    return [
        (f"How much does {name} cost?", cost),
        (f"Which sizes does {name} support?", size_answer),
        (f"Can {name} edit images, and how many inputs does it take?", edit),
        (f"Is {name} still available?", alive),
    ]


def examples(model: ModelInfo, off: Offering | None, base: str) -> dict[str, str]:
    size = off.caps.sizes.default if off else "1024x1024"
    out = f"{model.id}.png"
    python = f'''"""Generate one image with {model.id} through imagegate and save it to {out}."""

import base64
import os

from openai import OpenAI

client = OpenAI(
    base_url="{base}",
    api_key=os.environ.get("IMAGEGATE_API_KEY", "not-needed-in-open-mode"),
)
result = client.images.generate(
    model="{model.id}",
    prompt="{EXAMPLE_PROMPT}",
    size="{size}",
    output_format="png",
    response_format="b64_json",
)
with open("{out}", "wb") as f:
    f.write(base64.b64decode(result.data[0].b64_json))
print("saved {out}")
'''
    javascript = f"""import OpenAI from "openai";
import {{ writeFile }} from "node:fs/promises";

const client = new OpenAI({{
  baseURL: "{base}",
  apiKey: process.env.IMAGEGATE_API_KEY ?? "not-needed-in-open-mode",
}});
const result = await client.images.generate({{
  model: "{model.id}",
  prompt: "{EXAMPLE_PROMPT}",
  size: "{size}",
  output_format: "png",
  response_format: "b64_json",
}});
await writeFile("{out}", Buffer.from(result.data[0].b64_json, "base64"));
console.log("saved {out}");
"""
    curl = f"""curl -s {base}/images/generations \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $IMAGEGATE_API_KEY" \\
  -d '{{"model": "{model.id}", "prompt": "{EXAMPLE_PROMPT}", "size": "{size}", "response_format": "b64_json"}}' \\
  | python3 -c 'import base64, json, sys; print(json.load(sys.stdin)["data"][0]["b64_json"])' \\
  | base64 -d > {out}
"""
    return {"Python": python, "JavaScript": javascript, "cURL": curl}


def llms_text(model: ModelInfo, offerings: list[Offering], today: date, base: str) -> str:
    _, price = starting_price(model)
    lines = [
        f"# {model.display_name} ({model.id})",
        "",
        model.overview.strip(),
        "",
        f"- Model id: {model.id}" + (f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""),
        f"- Creator: {model.creator}",
        f"- Family: {model.family}",
        f"- Modes: {', '.join(model.modes)}",
        f"- Max resolution: {model.max_resolution}",
        f"- Max input images: {model.max_input_images}",
        f"- Tags: {', '.join(model.tags)}",
        f"- Starting price: {price}",
        f"- API base URL (OpenAI-compatible): {base}",
        "",
        "## Providers and pricing",
    ]
    for off in offerings:
        lines += ["", f"### {provider_name(off.provider)} ({offering_status(off, today)})"]
        lines += [f"- {line}" for line in price_lines(off)]
        lines.append(f"- sizes: {size_text(off.caps.sizes)}")
        if off.notes:
            lines.append(f"- notes: {off.notes}")
    for mode in model.modes:
        ref = reference_offering(offerings, mode, today)
        if ref is None:
            continue
        lines += ["", f"## Parameters: {mode} (reference offering: {provider_name(ref.provider)})", ""]
        lines += [f"- {r.name}: {r.availability}; {r.handling}" for r in mode_rows(model, offerings, mode, today)[1]]
    lines += ["", "## FAQ", ""]
    for question, answer in faq(model, offerings, today):
        lines += [f"Q: {question}", f"A: {answer}", ""]
    ref = reference_offering(offerings, model.modes[0], today)
    lines += ["## Python example", "", examples(model, ref, base)["Python"]]
    return "\n".join(lines)
