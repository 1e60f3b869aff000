"""Normalization: turn a public request into provider jobs for one offering (DESIGN.md section 4).

Pure: given the caller's request and an offering's capabilities, decide what is sent, what the
gateway emulates, and record each decision. Raises `ParamError` for what cannot be honoured.
"""

from __future__ import annotations

from imagegate.core.quoting import clip, quote
from imagegate.core.sizes import choose_size
from imagegate.core.types import (
    DEFAULT_FRAME_MS,
    DEFAULT_FRAMES,
    MAX_FRAME_MS,
    Capabilities,
    Decision,
    Handling,
    Offering,
    ParamError,
    Plan,
    ProviderJob,
    PublicRequest,
    SizeChoice,
    SizeRequest,
)

# Formats that can carry an alpha channel, and those where output_compression means something.
ALPHA_FORMATS = frozenset({"png", "webp", "gif", "avif", "svg"})
LOSSY_FORMATS = frozenset({"jpeg", "webp", "avif"})
# Unknown parameters are passed to the provider's body; none may name an address or a credential.
_FORBIDDEN_EXTRA = ("url", "webhook", "key", "token", "secret", "header", "host", "endpoint", "auth")
_RESERVED = frozenset({"model", "prompt", "image", "images", "mask", "markup", "stream", "partial_images"})
MAX_N = 10


def plan_request(request: PublicRequest, offering: Offering) -> Plan:
    """Normalize `request` for `offering`; the offering must support `request.mode`."""
    caps = offering.caps
    decisions: list[Decision] = []
    warnings: list[str] = []
    _check_prompt(request, caps)
    size = choose_size(request.size, caps.sizes)
    decisions.append(_size_decision(request.size, size))
    warnings.extend(size.notes)
    final_format, job_format, fmt_decision = _choose_format(request, caps)
    decisions.append(fmt_decision)
    native = _native_outputs(request, caps, job_format, decisions)
    _check_markup(request, caps, decisions)
    background = _choose_background(request, caps, final_format, decisions, warnings)
    final_compression, job_compression = _choose_compression(request, caps, final_format, job_format, decisions)
    quality = _choose_quality(request, caps, decisions, warnings)
    options = _choose_options(request, caps, decisions, warnings) | native
    extra = _check_extra(request.extra, decisions)
    counts = _fan_out(request.n, caps, decisions)
    provider_model = offering.model_ids[request.mode]
    jobs: list[ProviderJob] = []
    first = 0
    for count in counts:
        jobs.append(
            ProviderJob(
                mode=request.mode,
                provider_model=provider_model,
                prompt=request.prompt,
                size=size,
                n=count,
                output_format=job_format,
                output_compression=job_compression,
                quality=quality,
                background=background,
                options=dict(options),
                extra=dict(extra),
                first_index=first,
            )
        )
        first += count
    convert = job_format != final_format or (final_compression is not None and job_compression is None)
    return Plan(
        jobs=tuple(jobs),
        decisions=tuple(decisions),
        final_format=final_format,
        final_compression=final_compression,
        convert=convert,
        warnings=tuple(warnings),
    )


def _check_prompt(request: PublicRequest, caps: Capabilities) -> None:
    if not request.prompt.strip():
        raise ParamError("prompt", "prompt must not be empty", "missing_required_parameter")
    if len(request.prompt) > caps.max_prompt_chars:
        raise ParamError(
            "prompt",
            f"prompt is {len(request.prompt)} characters; this model accepts at most {caps.max_prompt_chars}",
            "string_above_max_length",
        )
    if not 1 <= request.n <= MAX_N:
        raise ParamError("n", f"n must be between 1 and {MAX_N}, got {request.n}")


def _size_asked(size: SizeRequest) -> str:
    if size.dims is not None:
        return str(size.dims)
    parts = [p for p in (size.ratio_text, size.resolution_text) if p]
    if parts:
        return " @ ".join(parts)
    return "auto" if size.auto else "default"


def _size_decision(asked: SizeRequest, chosen: SizeChoice) -> Decision:
    if chosen.auto:
        sent = "auto"
    elif chosen.preset is not None:
        sent = chosen.preset
    elif chosen.ratio is not None:
        sent = f"aspect_ratio {chosen.ratio}" + (f" @ {chosen.tier}" if chosen.tier else "")
    else:
        sent = chosen.size_text
    exact = asked.dims is not None and chosen.dims == asked.dims and chosen.preset is None
    handling: Handling = "passthrough" if exact or (asked.auto and chosen.auto) else "converted"
    note = "; ".join(chosen.notes)
    if chosen.dims is not None and sent != chosen.size_text:
        note = (note + "; " if note else "") + f"produces {chosen.size_text}"
    return Decision("size", _size_asked(asked), sent, handling, note)


def _choose_format(request: PublicRequest, caps: Capabilities) -> tuple[str, str, Decision]:
    asked = request.output_format
    if asked == "svg" and not caps.svg:
        raise ParamError(
            "output_format",
            "this model/provider cannot make SVG, and a raster image has no faithful conversion to a vector one",
            "unsupported_value",
        )
    if asked == "gif" and request.frame_count is not None and not caps.animated_gif:
        raise ParamError(
            "frame_count",
            "this model/provider cannot make animated GIFs; without frame_count a still image is returned as a "
            "one-frame GIF",
            "unsupported_parameter",
        )
    if asked == "svg":
        return (
            "svg",
            "svg",
            Decision("output_format", "svg", "svg", "passthrough", "a vector image, made by the provider"),
        )
    if asked == "gif" and caps.animated_gif:
        return (
            "gif",
            "gif",
            Decision("output_format", "gif", "gif", "passthrough", "animated GIF, made by the provider"),
        )
    if asked is None:
        return (
            caps.default_format,
            caps.default_format,
            Decision("output_format", None, caps.default_format, "passthrough", "provider default"),
        )
    if asked in caps.formats:
        return asked, asked, Decision("output_format", asked, asked, "passthrough")
    # Emulate: ask for a lossless native format (keeps alpha) and convert in the gateway.
    job_format = "png" if "png" in caps.formats else caps.default_format
    note = f"provider returns {job_format}; converted to {asked} by the gateway"
    if asked == "gif":
        note += " (a one-frame GIF: this provider cannot animate)"
    return asked, job_format, Decision("output_format", asked, job_format, "emulated", note)


def _native_outputs(
    request: PublicRequest, caps: Capabilities, job_format: str, decisions: list[Decision]
) -> dict[str, object]:
    """The wire options of a provider-made animated GIF or SVG, and the rules they bring (OpenAI's)."""
    options: dict[str, object] = {}
    if job_format == "gif" and caps.animated_gif:
        for param, asked in (("stream", request.stream), ("mask", request.has_mask)):
            if asked:
                raise ParamError(param, f"an animated GIF cannot be made with {param}", "unsupported_parameter")
        frames = request.frame_count
        options["frame_count"] = frames if frames is not None else DEFAULT_FRAMES
        note = "" if frames is not None else f"provider default: {DEFAULT_FRAMES} frames"
        decisions.append(Decision("frame_count", frames, options["frame_count"], "passthrough", note))
        delay = request.frame_duration_ms
        if delay is not None:
            sent = min(delay, MAX_FRAME_MS)
            options["frame_duration_ms"] = sent
            handling: Handling = "passthrough" if sent == delay else "converted"
            capped = f"capped at {MAX_FRAME_MS} ms per frame" if sent != delay else "rounded to 10 ms in the GIF"
            decisions.append(Decision("frame_duration_ms", delay, sent, handling, capped))
        else:
            decisions.append(
                Decision("frame_duration_ms", None, None, "passthrough", f"provider default {DEFAULT_FRAME_MS} ms")
            )
    if job_format == "svg" and request.svg is not None:
        options["svg"] = dict(request.svg)
        decisions.append(Decision("svg", dict(request.svg), dict(request.svg), "passthrough"))
    return options


def _check_markup(request: PublicRequest, caps: Capabilities, decisions: list[Decision]) -> None:
    if not request.has_markup:
        return
    if not caps.markup:
        raise ParamError(
            "markup",
            "this model/provider cannot take a markup overlay, and there is no faithful way to emulate one",
            "unsupported_parameter",
        )
    decisions.append(Decision("markup", "overlay", "overlay", "passthrough", "a transparent PNG over the first image"))


def _choose_background(
    request: PublicRequest,
    caps: Capabilities,
    final_format: str,
    decisions: list[Decision],
    warnings: list[str],
) -> str | None:
    asked = request.background
    if asked is None:
        return None
    if asked == "transparent" and final_format not in ALPHA_FORMATS:
        raise ParamError(
            "background",
            f"background 'transparent' needs an output format with alpha (png, webp, gif, avif, svg); "
            f"{final_format} has none",
            "unsupported_value",
        )
    if asked in caps.backgrounds:
        decisions.append(Decision("background", asked, asked, "passthrough"))
        return asked
    if asked == "transparent":
        raise ParamError(
            "background", "this model/provider cannot produce transparent backgrounds", "unsupported_value"
        )
    decisions.append(Decision("background", asked, None, "dropped", "provider has no background option"))
    if asked != "auto":
        warnings.append(f"background '{asked}' is not configurable here; the provider default is used")
    return None


def _choose_compression(
    request: PublicRequest,
    caps: Capabilities,
    final_format: str,
    job_format: str,
    decisions: list[Decision],
) -> tuple[int | None, int | None]:
    asked = request.output_compression
    if asked is None:
        return None, None
    if not 0 <= asked <= 100:
        raise ParamError("output_compression", f"output_compression must be between 0 and 100, got {asked}")
    if final_format not in LOSSY_FORMATS:
        note = f"{final_format} output is lossless; compression ignored"
        decisions.append(Decision("output_compression", asked, None, "dropped", note))
        return None, None
    if caps.compression and job_format == final_format:
        decisions.append(Decision("output_compression", asked, asked, "passthrough"))
        return asked, asked
    decisions.append(Decision("output_compression", asked, None, "emulated", "applied by the gateway's encoder"))
    return asked, None


def _choose_quality(
    request: PublicRequest, caps: Capabilities, decisions: list[Decision], warnings: list[str]
) -> str | None:
    asked = request.quality
    if asked is None:
        return None
    rule = caps.params.get("quality")
    if rule is not None and asked in rule.map:
        sent = rule.map[asked]
        decisions.append(Decision("quality", asked, sent, "converted", rule.note))
        return sent
    if asked in caps.qualities:
        decisions.append(Decision("quality", asked, asked, "passthrough"))
        return asked
    if not caps.qualities:
        decisions.append(Decision("quality", asked, None, "dropped", "provider has no quality setting"))
        if asked != "auto":
            warnings.append(f"quality {quote(asked)} is not configurable for this model/provider")
        return None
    allowed = sorted(set(caps.qualities) | set(rule.map if rule else {}))
    raise ParamError("quality", f"quality {quote(asked)} is not supported; use one of {', '.join(allowed)}")


def _choose_options(
    request: PublicRequest, caps: Capabilities, decisions: list[Decision], warnings: list[str]
) -> dict[str, object]:
    options: dict[str, object] = {}
    for name, value in request.options.items():
        if value is None:
            continue
        rule = caps.params.get(name)
        if rule is None or rule.handling in ("unsupported", "dropped"):
            if rule is not None and rule.on_unsupported == "error":
                raise ParamError(name, f"'{name}' is not supported by this model/provider", "unsupported_value")
            note = rule.note if rule is not None and rule.note else "not supported by this provider"
            decisions.append(Decision(name, value, None, "dropped", note))
            warnings.append(f"'{name}' was dropped: {note}")
            continue
        text = str(value)
        if rule.values and text not in rule.values and text not in rule.map:
            raise ParamError(name, f"{name} {quote(text)} is not supported; use one of {', '.join(rule.values)}")
        sent: object = rule.map.get(text, value)
        wire = rule.wire or name
        handling: Handling = "converted" if text in rule.map else ("renamed" if wire != name else rule.handling)
        options[wire] = sent
        decisions.append(Decision(name, value, sent if wire == name else {wire: sent}, handling, rule.note))
    return options


def _check_extra(extra: dict[str, object], decisions: list[Decision]) -> dict[str, object]:
    for name, value in extra.items():
        lowered = name.lower()
        if lowered in _RESERVED or any(word in lowered for word in _FORBIDDEN_EXTRA):
            raise ParamError(
                clip(name),
                f"{quote(name)} cannot be passed through: upstream addresses and credentials come only from "
                "server configuration",
                "unsupported_parameter",
            )
        decisions.append(Decision(name, value, value, "passthrough", "unknown parameter passed to provider"))
    return dict(extra)


def _fan_out(n: int, caps: Capabilities, decisions: list[Decision]) -> list[int]:
    per_call = max(1, caps.max_n)
    if n <= per_call:
        handling: Handling = "renamed" if caps.n_wire != "n" else "passthrough"
        sent: object = n if caps.n_wire == "n" else {caps.n_wire: n}
        decisions.append(Decision("n", n, sent, handling))
        return [n]
    counts = [per_call] * (n // per_call)
    if n % per_call:
        counts.append(n % per_call)
    note = f"provider makes at most {per_call} per call; {len(counts)} calls in parallel"
    decisions.append(Decision("n", n, counts, "emulated", note))
    return counts
