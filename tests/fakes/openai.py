"""A fake OpenAI Images API: a real aiohttp server on 127.0.0.1 (shared/providers.md section 1).

POST /v1/images/generations (JSON); POST /v1/images/edits (multipart with `image` or repeated
`image[]` parts and optional `mask` or `markup` parts, or JSON with `images: [{"image_url": "data:..."}]`);
GET /files/{name} (dall-e `url` results); /_fake/* (the fault-script control routes).
It checks the bearer key, validates like OpenAI (openai-python 3.57's image models and parameters:
GPT Image 2.5 qualities and markup, GPT Image 2.6 complexity and gif/svg output), answers with real
images (animated GIFs, SVG documents), plausible usage and OpenAI's headers, streams
partial/completed events, and obeys its `FaultScript`. A prompt with ``BLOCKED_BY_SAFETY`` is
refused as by OpenAI's safety system.

Run alone: ``python -m tests.fakes.openai --port 8900 [--key sk-fake] [--latency 0.2] [--image PATH]``
(``--image``: every non-streamed png/jpeg/webp result is that file's bytes, e.g. bench/request_path.py's PNGs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pybase64
from aiohttp import BodyPartReader, web
from PIL import Image

from tests.fakes.faults import (
    Fault,
    RecordedRequest,
    echo,
    lower_headers,
    reset_connection,
    truncated_response,
)
from tests.fakes.images import make_gif, make_image, make_svg
from tests.fakes.server import FakeAPI

BLOCK_WORD = "BLOCKED_BY_SAFETY"
MAX_BODY = 256 * 1024 * 1024
GPT_SIZES = ("1024x1024", "1024x1536", "1536x1024")
GPT_QUALITIES = ("low", "medium", "high", "auto")
RICH_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")  # GPT Image 2.5 and 2.6
FORMATS = ("png", "jpeg", "webp")
RICH_FORMATS = (*FORMATS, "gif", "svg")  # GPT Image 2.6
BACKGROUNDS = ("transparent", "opaque", "auto")
COMPLEXITIES = ("low", "medium", "high")
SVG_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SVG_AUTHOR = "gpt-5.5"  # who writes the SVG when the request names no `svg.model`
GIF_FRAMES = (2, 16, 9)  # frame_count: lowest, highest, default
GIF_FRAME_MS = 200  # frame_duration_ms default
_GPT_DISCRETE = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest")
_GPT_2 = ("gpt-image-2", "gpt-image-2-2026-04-21")
_GPT_2_5 = tuple(f"gpt-image-2.5-{name}{snap}" for name in ("sunburst", "flare") for snap in ("", "-2026-09-08"))
_GPT_2_6 = ("gpt-image-2.6-sunburst", "gpt-image-2.6-flare")
_FIDELITIES = {"gpt-image-1-mini": ("low",)}  # other discrete GPT models: high and low; gpt-image-2 on: none
_OUTPUT_TOKENS = {  # per image (1024², 1536-class); low/medium/high are gpt-image-1's numbers
    "low": (272, 408),
    "medium": (1056, 1584),
    "high": (4160, 6240),
    "xhigh": (6240, 9360),
    "max": (8320, 12480),
}
_PLANNING_TOKENS = {"low": 96, "medium": 256, "high": 768}  # 2.5/2.6 reasoning text, by complexity
_SVG_REASONING = {"none": 0, "minimal": 64, "low": 512, "medium": 2048, "high": 6144, "xhigh": 12288, "max": 24576}
_KEPT_FILES = 256
_STATUS_ERRORS: dict[int, tuple[str, str | None]] = {  # message, code (type invalid_request_error)
    400: ("Invalid request.", "invalid_value"),
    401: ("Incorrect API key provided.", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", None),
    404: ("The model does not exist or you do not have access to it.", "model_not_found"),
    429: ("Rate limit reached for requests. Please try again later.", "rate_limit_exceeded"),
}


# --- what OpenAI accepts -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model's rules. The fields after `edits` describe the GPT Image 1.x/2/2.5/2.6 differences."""

    sizes: tuple[str, ...]  # () = any WxH within gpt-image-2's rules
    max_n: int
    qualities: tuple[str, ...]
    max_prompt: int
    gpt: bool
    edits: bool
    formats: tuple[str, ...] = FORMATS
    fidelities: tuple[str, ...] = ()  # accepted input_fidelity values; () = the parameter is refused
    markup: bool = False  # GPT Image 2.5 and 2.6
    complexity: bool = False  # GPT Image 2.6
    reasoning: bool = False  # bills planning text as output text tokens (2.5 and 2.6)


def model_spec(model: str) -> ModelSpec | None:
    """The rules for one of openai-python 3.57's `ImageModel` ids; None (a 400 on `model`) for anything else."""
    if model in _GPT_DISCRETE:
        fidelities = _FIDELITIES.get(model, ("high", "low"))
        return ModelSpec(GPT_SIZES, 10, GPT_QUALITIES, 32000, True, True, fidelities=fidelities)
    if model in _GPT_2:
        return ModelSpec((), 10, GPT_QUALITIES, 32000, True, True)
    if model in _GPT_2_5:
        return ModelSpec((), 10, RICH_QUALITIES, 32000, True, True, markup=True, reasoning=True)
    if model in _GPT_2_6:
        return ModelSpec(
            (), 10, RICH_QUALITIES, 32000, True, True, RICH_FORMATS, markup=True, complexity=True, reasoning=True
        )
    if model == "dall-e-3":
        return ModelSpec(("1024x1024", "1792x1024", "1024x1792"), 1, ("standard", "hd"), 4000, False, False)
    if model == "dall-e-2":
        return ModelSpec(("256x256", "512x512", "1024x1024"), 10, ("standard",), 1000, False, True)
    return None


def error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ApiError(Exception):
    """An OpenAI-shaped 400."""

    def __init__(self, message: str, param: str | None, code: str | None = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, "invalid_request_error", self.param, self.code)


@dataclass
class Incoming:
    """A request as read off the wire: JSON values, or strings for multipart fields."""

    fields: dict[str, Any] = field(default_factory=dict)
    form: bool = False
    json: Any = None
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    markup: bytes | None = None
    files: list[tuple[str, str, int]] = field(default_factory=list)
    problem: ApiError | None = None


@dataclass
class Call:
    """A validated request (filled in step by step by `validate`)."""

    endpoint: str
    model: str
    prompt: str
    n: int = 1
    size: str = "auto"
    dims: tuple[int, int] = (1024, 1024)
    quality: str | None = None
    background: str | None = None
    output_format: str = "png"
    response_format: str = "b64_json"
    stream: bool = False
    partial_images: int = 0
    input_dims: tuple[tuple[int, int], ...] = ()
    input_fidelity: str | None = None
    complexity: str | None = None
    frame_count: int = GIF_FRAMES[2]
    frame_duration_ms: int = GIF_FRAME_MS
    svg_model: str = SVG_AUTHOR
    svg_effort: str | None = None
    moderation: str | None = None
    safety_identifier: str | None = None  # the effective one: safety_identifier, else user
    markup_dims: tuple[int, int] | None = None
    reasoning: bool = False

    @property
    def resolved_quality(self) -> str:
        return self.quality if self.quality in _OUTPUT_TOKENS else "medium"


async def read_incoming(request: web.Request, endpoint: str) -> Incoming:
    if endpoint == "edits" and request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return Incoming(problem=ApiError("We could not parse the JSON body of your request.", None, None))
    if not isinstance(body, dict):
        return Incoming(json=body, problem=ApiError("The request body must be a JSON object.", None, None))
    incoming = Incoming(fields=dict(body), json=body)
    if endpoint == "edits":
        try:  # the JSON edit form: images: [{"image_url": ...}], mask / markup: {"image_url": ...}
            refs = body.get("images")
            incoming.images = [_data_url(ref, "images") for ref in refs] if isinstance(refs, list) else []
            incoming.mask = _data_url(body["mask"], "mask") if body.get("mask") is not None else None
            incoming.markup = _data_url(body["markup"], "markup") if body.get("markup") is not None else None
        except ApiError as exc:
            incoming.problem = exc
    return incoming


async def _read_multipart(request: web.Request) -> Incoming:
    incoming = Incoming(form=True)
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name or ""
        if name in ("image", "image[]", "mask", "markup") or part.filename:
            data = bytes(await part.read())
            incoming.files.append((name, part.headers.get("Content-Type", "application/octet-stream"), len(data)))
            if name == "mask":
                incoming.mask = data
            elif name == "markup":
                incoming.markup = data
            elif name in ("image", "image[]"):
                incoming.images.append(data)
        else:
            incoming.fields[name] = await part.text()
    return incoming


def _data_url(ref: object, param: str) -> bytes:
    url = ref.get("image_url") if isinstance(ref, dict) else None
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise ApiError("The fake only accepts base64 data URLs in image_url.", param, "invalid_image_url")
    try:
        return pybase64.b64decode(url.partition(";base64,")[2], validate=True)
    except ValueError:
        raise ApiError("Invalid base64 image data.", param, "invalid_image_url") from None


def validate(incoming: Incoming, endpoint: str) -> Call:
    if incoming.problem is not None:
        raise incoming.problem
    f = incoming.fields
    model = _text(f, "model") or ("dall-e-2" if endpoint == "generations" else "gpt-image-1.5")
    spec = model_spec(model)
    if spec is None or (endpoint == "edits" and not spec.edits):
        raise ApiError(f"Invalid value: '{model}'. Value must be an image model for /images/{endpoint}.", "model")
    prompt = _text(f, "prompt")
    if not prompt:
        raise ApiError("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if len(prompt) > spec.max_prompt:
        message = f"Invalid 'prompt': string too long. Expected a string with maximum length {spec.max_prompt}."
        raise ApiError(message, "prompt", "string_above_max_length")
    call = Call(endpoint, model, prompt, n=_int(f, "n", 1, 1, 10), reasoning=spec.reasoning)
    if call.n > spec.max_n:
        raise ApiError(f"Invalid 'n': {model} only supports n=1.", "n", "integer_above_max_value")
    _refuse_foreign(f, spec, endpoint, incoming.markup is not None)
    if incoming.markup is not None and incoming.mask is not None:
        raise ApiError("Invalid parameter: 'markup' cannot be combined with 'mask'.", "markup")
    call.size, call.dims = _size(f, spec)
    _check_output(call, f, spec)
    call.stream = f.get("stream") in (True, "true")
    if call.stream and not spec.gpt:
        raise ApiError(f"Streaming is not supported for model '{model}'.", "stream")
    call.partial_images = _int(f, "partial_images", 0, 0, 3)
    _check_gif(call, f, incoming.mask is not None)
    _check_svg(call, f, incoming.form)
    call.input_fidelity = _choice(f, "input_fidelity", ("low", "high"))
    if call.input_fidelity is not None and call.input_fidelity not in spec.fidelities:
        if not spec.fidelities:
            message = f"Invalid parameter: 'input_fidelity' is not supported for {model}; omit this parameter."
            raise ApiError(message, "input_fidelity", "unsupported_parameter")
        message = f"input_fidelity '{call.input_fidelity}' is not supported for {model}."
        raise ApiError(message, "input_fidelity", "unsupported_value")
    call.moderation = _choice(f, "moderation", ("low", "auto"))
    call.safety_identifier = _text(f, "safety_identifier") or _text(f, "user") or None
    call.input_dims = _input_dims(incoming, model) if endpoint == "edits" else ()
    if incoming.markup is not None:
        call.markup_dims = _check_markup(incoming.markup, call.input_dims[0])
    return call


def _refuse_foreign(f: dict[str, Any], spec: ModelSpec, endpoint: str, markup: bool) -> None:
    """Parameters the model or the endpoint does not take at all."""
    if spec.gpt and f.get("response_format") is not None:
        message = "Invalid parameter: 'response_format'. Unsupported for GPT image models: they always return b64_json."
        raise ApiError(message, "response_format", "unsupported_parameter")
    for name in ("moderation", "style") if endpoint == "edits" else ("markup",):
        if f.get(name) is not None:
            raise ApiError(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if f.get("complexity") is not None and not spec.complexity:
        raise ApiError("Invalid parameter: 'complexity' is only supported for GPT Image 2.6 models.", "complexity")
    if markup and not spec.markup:
        raise ApiError("Invalid parameter: 'markup' is only supported for GPT Image 2.5 and 2.6 models.", "markup")


def _check_output(call: Call, f: dict[str, Any], spec: ModelSpec) -> None:
    qualities = (*spec.qualities, "standard") if call.endpoint == "edits" and spec.gpt else spec.qualities
    if spec.gpt and _text(f, "quality") in ("xhigh", "max") and "max" not in qualities:
        message = f"Invalid value: '{f['quality']}'. Quality 'xhigh' and 'max' need a GPT Image 2.5 or 2.6 model."
        raise ApiError(message, "quality", "unsupported_value")
    call.quality = _choice(f, "quality", qualities)
    output_format = _text(f, "output_format") or "png"
    if output_format in RICH_FORMATS and output_format not in spec.formats and spec.gpt:
        message = f"Invalid value: '{output_format}'. Output format '{output_format}' needs a GPT Image 2.6 model."
        raise ApiError(message, "output_format", "unsupported_value")
    output_format = _choice(f, "output_format", spec.formats) or "png"
    call.background = _choice(f, "background", BACKGROUNDS)
    if call.background == "transparent" and output_format not in ("png", "webp"):
        raise ApiError("Transparent background requires output_format 'png' or 'webp'.", "background")
    compression = _int(f, "output_compression", 100, 0, 100)
    if output_format in ("gif", "svg") and f.get("output_compression") is not None:
        message = f"Invalid parameter: 'output_compression' is not supported with output_format '{output_format}'."
        raise ApiError(message, "output_compression", "unsupported_parameter")
    if compression < 100 and output_format == "png":
        raise ApiError("Compression less than 100 is not supported for PNG output format.", "output_compression")
    call.complexity = _choice(f, "complexity", COMPLEXITIES)
    call.output_format = output_format if spec.gpt else "png"
    call.response_format = _choice(f, "response_format", ("url", "b64_json")) or ("b64_json" if spec.gpt else "url")


def _check_gif(call: Call, f: dict[str, Any], mask: bool) -> None:
    """frame_count / frame_duration_ms only with gif; gif has no stream, partials, or mask."""
    if call.output_format != "gif":
        for name in ("frame_count", "frame_duration_ms"):
            if f.get(name) is not None:
                message = f"Invalid parameter: '{name}' is only supported with output_format 'gif'."
                raise ApiError(message, name, "unsupported_parameter")
        return
    low, high, default = GIF_FRAMES
    call.frame_count = _int(f, "frame_count", default, low, high)
    call.frame_duration_ms = _int(f, "frame_duration_ms", GIF_FRAME_MS, 1, 2**31 - 1)
    _refuse_for_format(call, f, "gif")
    if mask:
        raise ApiError("Invalid parameter: 'mask' is not supported with output_format 'gif'.", "mask")


def _check_svg(call: Call, f: dict[str, Any], form: bool) -> None:
    """`svg` (or multipart `svg[model]`, `svg[reasoning][effort]`) only with svg output; svg output: n=1, no stream."""
    svg = _svg_object(f, form)
    if call.output_format != "svg":
        if svg is not None:
            raise ApiError("Invalid parameter: 'svg' is only supported with output_format 'svg'.", "svg")
        return
    if call.n != 1:
        raise ApiError("Invalid 'n': output_format 'svg' only supports n=1.", "n", "integer_above_max_value")
    _refuse_for_format(call, f, "svg")
    if svg is None:
        return
    author = svg.get("model")
    if not isinstance(author, str) or not author:
        raise ApiError("Missing required parameter: 'svg.model'.", "svg.model", "missing_required_parameter")
    call.svg_model = author
    reasoning = svg.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise ApiError("Invalid type for 'svg.reasoning': expected an object.", "svg.reasoning", "invalid_type")
    effort = (reasoning or {}).get("effort")
    if effort is not None and effort not in SVG_EFFORTS:
        message = f"Invalid value: '{effort}'. Supported values are: {_listing(SVG_EFFORTS)}."
        raise ApiError(message, "svg.reasoning.effort")
    call.svg_effort = effort


def _svg_object(f: dict[str, Any], form: bool) -> dict[str, Any] | None:
    """The `svg` object: JSON's value, or multipart's bracketed fields folded back into one."""
    if not form:
        value = f.get("svg")
        if value is not None and not isinstance(value, dict):
            raise ApiError("Invalid type for 'svg': expected an object.", "svg", "invalid_type")
        return value
    keys = [key for key in f if key == "svg" or key.startswith("svg[")]
    if not keys:
        return None
    svg: dict[str, Any] = {}
    for key in keys:
        if key == "svg[model]":
            svg["model"] = f[key]
        elif key == "svg[reasoning][effort]":
            svg["reasoning"] = {"effort": f[key]}
        else:
            raise ApiError(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    return svg


def _refuse_for_format(call: Call, f: dict[str, Any], output_format: str) -> None:
    for name, given in (("stream", call.stream), ("partial_images", f.get("partial_images") is not None)):
        if given:
            message = f"Invalid parameter: '{name}' is not supported with output_format '{output_format}'."
            raise ApiError(message, name, "unsupported_parameter")


def _check_markup(data: bytes, first: tuple[int, int]) -> tuple[int, int]:
    """Markup must be a PNG with alpha, at least one fully transparent pixel, and the first image's size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            kind, size = image.format, image.size
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            alpha = image.convert("RGBA").getchannel("A").getextrema() if has_alpha else (255, 255)
    except OSError:
        kind, size, has_alpha, alpha = None, (0, 0), False, (255, 255)
    if kind != "PNG" or not has_alpha:
        raise ApiError("Invalid markup: it must be a PNG image with an alpha channel.", "markup", "invalid_image")
    if alpha[0] != 0:
        raise ApiError("Invalid markup: it must contain at least one transparent pixel.", "markup", "invalid_image")
    if size != first:
        shown = f"{size[0]}x{size[1]} vs {first[0]}x{first[1]}"
        raise ApiError(
            f"Invalid markup: the markup and the first image must have the same dimensions ({shown}).", "markup"
        )
    return size


def _size(f: dict[str, Any], spec: ModelSpec) -> tuple[str, tuple[int, int]]:
    size = _text(f, "size") or ("auto" if spec.gpt else "1024x1024")
    if size == "auto" and spec.gpt:
        return size, (1024, 1024)
    if spec.sizes:
        if size in spec.sizes:
            return size, _dims(size)
        allowed = [*spec.sizes, "auto"] if spec.gpt else list(spec.sizes)
        raise ApiError(f"Invalid value: '{size}'. Supported values are: {_listing(allowed)}.", "size")
    width, height = _dims(size) if re.fullmatch(r"[1-9]\d{0,4}x[1-9]\d{0,4}", size) else (0, 0)
    if not width:
        raise ApiError(f"Invalid value: '{size}'. Expected 'auto' or a size such as '1024x1024'.", "size")
    if width % 16 or height % 16:
        raise ApiError(f"Invalid size '{size}': width and height must be multiples of 16.", "size")
    if max(width, height) > 3 * min(width, height):
        raise ApiError(f"Invalid size '{size}': the aspect ratio must be between 1:3 and 3:1.", "size")
    if max(width, height) > 3840 or width * height > 3840 * 2160:
        raise ApiError(f"Invalid size '{size}': the largest supported size is 3840x2160.", "size")
    return size, (width, height)


def _input_dims(incoming: Incoming, model: str) -> tuple[tuple[int, int], ...]:
    count = len(incoming.images)
    if count == 0:
        raise ApiError("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    limit = 1 if model == "dall-e-2" else 16
    if count > limit:
        message = f"Invalid 'image': array too long. Expected an array with maximum length {limit}, but got {count}."
        raise ApiError(message, "image", "array_above_max_length")
    dims = tuple(_probe(data, f"image {i + 1}", "image") for i, data in enumerate(incoming.images))
    if incoming.mask is not None:
        mask = _probe(incoming.mask, "mask", "mask")
        if mask != dims[0]:
            shown = f"{mask[0]}x{mask[1]} vs {dims[0][0]}x{dims[0][1]}"
            raise ApiError(f"Invalid mask: the mask and the image must have the same dimensions ({shown}).", "mask")
    return dims


def _probe(data: bytes, what: str, param: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in ("PNG", "JPEG", "WEBP"):
                return image.size
    except OSError:
        pass
    raise ApiError(f"Invalid image file or mode for {what}, please check your image file.", param, "invalid_image")


def _image_tokens(width: int, height: int) -> int:
    """Input tokens for one input image (a 512-pixel tile grid)."""
    return 65 + 129 * math.ceil(width / 512) * math.ceil(height / 512)


def usage_for(call: Call) -> dict[str, Any]:
    """`usage`: image tokens by quality and pixel count (times frames for gif); 2.5/2.6 add planning text."""
    width, height = call.dims
    square, wide = _OUTPUT_TOKENS[call.resolved_quality]
    per_image = {(1024, 1024): square, (1024, 1536): wide, (1536, 1024): wide}.get((width, height))
    per_image = per_image or max(16, round(square * width * height / (1024 * 1024)))  # gpt-image-2 free sizes
    if call.output_format == "gif":
        per_image *= call.frame_count
    images = 1 if call.stream else call.n
    output_images = per_image * images
    text = max(1, len(call.prompt) // 4)
    planning = _PLANNING_TOKENS[call.complexity or "medium"] + text // 2 if call.reasoning else 0
    output_text = planning * images
    image = sum(_image_tokens(w, h) for w, h in call.input_dims)
    if call.markup_dims is not None:
        image += _image_tokens(*call.markup_dims)
    if call.input_fidelity == "high" and call.input_dims:
        image += 4096
    output = output_images + output_text
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "output_tokens_details": {"image_tokens": output_images, "text_tokens": output_text},
        "total_tokens": text + image + output,
    }


def svg_usage_for(call: Call, svg: bytes) -> dict[str, Any]:
    """`svg_usage`: the SVG author read the prompt and the reference image, reasoned, then wrote `svg`."""
    width, height = call.dims
    input_tokens = max(1, len(call.prompt) // 4) + _image_tokens(width, height)
    reasoning = _SVG_REASONING[call.svg_effort or "medium"]
    output = reasoning + max(1, len(svg) // 4)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
        "total_tokens": input_tokens + output,
        "model": call.svg_model,
    }


def _dims(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def _text(f: dict[str, Any], name: str) -> str | None:
    value = f.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ApiError(
        f"Invalid type for '{name}': expected a string, but got {type(value).__name__}.", name, "invalid_type"
    )


def _int(f: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = f.get(name)
    if value is None:
        return default
    try:
        number = int(value) if not isinstance(value, bool | float) else int("not a number")
    except ValueError:
        message = f"Invalid type for '{name}': expected an integer, but got {value!r}."
        raise ApiError(message, name, "invalid_type") from None
    if number < low:
        message = f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, got {number}."
        raise ApiError(message, name, "integer_below_min_value")
    if number > high:
        message = f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, got {number}."
        raise ApiError(message, name, "integer_above_max_value")
    return number


def _listing(values: list[str] | tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _choice(f: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = _text(f, name)
    if value is None or value in allowed:
        return value
    raise ApiError(f"Invalid value: '{value}'. Supported values are: {_listing(allowed)}.", name)


# --- the server ----------------------------------------------------------------------------------


class FakeOpenAI(FakeAPI):
    """The fake server. `script` scripts faults; `requests` records every /v1/images request."""

    base_path = "/v1"
    thread_name = "fake-openai"
    max_body = MAX_BODY

    def __init__(self, key: str = "sk-fake", seed: int = 0) -> None:
        super().__init__(seed)
        self.key = key
        self.latency = 0.0
        self.image: bytes | None = None  # when set, every non-streamed result is these bytes
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._remaining = 500

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_get("/files/{name}", self._file)
        return app

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        return await self._images(request, "generations")

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        return await self._images(request, "edits")

    async def _file(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["name"])
        if data is None:
            return web.json_response(error_body("File not found.", "invalid_request_error", None, None), status=404)
        return web.Response(body=data, content_type="image/png")

    async def _images(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        started = time.monotonic()
        incoming = await read_incoming(request, endpoint)
        fields = dict(incoming.fields) if incoming.form else {}
        recorded = RecordedRequest(request.method, request.path, lower_headers(request), incoming.json, fields)
        recorded.files = list(incoming.files)
        self.requests.append(recorded)
        if self.script.latency + self.latency > 0:
            await asyncio.sleep(self.script.latency + self.latency)
        fault = self.script.next()
        if fault is not None:
            faulted = await self._apply_fault(request, fault, incoming)
            if faulted is not None:
                return faulted
        headers = self._headers(started)
        denied = self._check_key(request)
        if denied is not None:
            return _json(401, denied, headers)
        try:
            call = validate(incoming, endpoint)
        except ApiError as exc:
            return _json(400, exc.body(), headers)
        if BLOCK_WORD in call.prompt:
            return _json(400, _blocked_body(), headers)
        if call.stream:
            return await self._stream(request, call, headers)
        return _json(200, self._result(request, call), headers)

    def _check_key(self, request: web.Request) -> dict[str, Any] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.key:
            return None
        if not token:
            return error_body("You didn't provide an API key.", "invalid_request_error", None, None)
        shown = f"{token[:3]}*****{token[-4:]}" if len(token) > 8 else "*****"
        message = f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com."
        return error_body(message, "invalid_request_error", None, "invalid_api_key")

    def _headers(self, started: float) -> dict[str, str]:
        self._remaining = self._remaining - 1 if self._remaining > 1 else 500
        return {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-processing-ms": str(max(1, int((time.monotonic() - started) * 1000))),
            "openai-version": "2020-10-01",
            "openai-organization": "fake-org",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": str(self._remaining),
            "x-ratelimit-reset-requests": "120ms",
        }

    async def _apply_fault(self, request: web.Request, fault: Fault, incoming: Incoming) -> web.StreamResponse | None:
        """The faulty answer, or None to answer normally (after a `latency` fault's delay)."""
        headers = self._headers(time.monotonic())
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "stall":
            await self.wait_stopping()
        if fault.kind == "reset":
            return await reset_connection(request)
        if fault.kind == "truncate":
            body = orjson.dumps({"created": int(time.time()), "data": [{"b64_json": _b64(make_image(1024, 1024))}]})
            return await truncated_response(request, body, "application/json")
        headers.update(echo(fault.headers, request))
        if fault.kind == "malformed":
            text = fault.body if isinstance(fault.body, str) else "<html><body>upstream hiccup</body></html>"
            return web.Response(status=200, body=echo(text, request).encode(), headers=headers)
        if fault.kind == "error_200":
            body = error_body("The server had an error while processing your request.", "server_error", None, None)
            body = echo(fault.body, request) if fault.body is not None else body
            if incoming.fields.get("stream") in (True, "true"):  # an SSE `error` event, as the SDK expects
                response = await _open_sse(request, headers)
                await response.write(b"event: error\ndata: " + orjson.dumps({"type": "error", **body}) + b"\n\n")
                await response.write_eof()
                return response
            return _json(200, body, headers)
        body = echo(fault.body, request) if fault.body is not None else _status_body(fault.status)
        return _json(fault.status, body, headers)

    def _result(self, request: web.Request, call: Call) -> dict[str, Any]:
        width, height = call.dims
        transparent = call.background == "transparent"
        fmt = call.output_format
        extra: dict[str, Any] = {}
        if fmt == "gif":
            frames, delay = call.frame_count, call.frame_duration_ms
            images = [make_gif(width, height, frames, delay, seed=self.seed + i) for i in range(call.n)]
        elif fmt == "svg":
            images = [make_svg(width, height, call.prompt, seed=self.seed)]
            extra["svg_usage"] = svg_usage_for(call, images[0])
        else:
            images = [
                make_image(width, height, fmt, seed=self.seed + i, transparent=transparent) for i in range(call.n)
            ]
            if self.image is not None:  # --image: a fixed file, e.g. the benchmarks' realistic 2.6 MB PNG
                images = [self.image] * call.n
        if call.safety_identifier:
            extra["safety_identifier"] = call.safety_identifier
        if call.model.startswith("dall-e"):
            return {
                "created": int(time.time()),
                "data": [self._dalle_item(request, call, data) for data in images],
                **extra,
            }
        return {
            "created": int(time.time()),
            "data": [{"b64_json": _b64(data)} for data in images],
            "background": "transparent" if transparent else "opaque",
            "output_format": call.output_format,
            "quality": call.resolved_quality,
            "size": f"{width}x{height}",
            "usage": usage_for(call),
            **extra,
        }

    def _dalle_item(self, request: web.Request, call: Call, data: bytes) -> dict[str, Any]:
        item: dict[str, Any] = {"b64_json": _b64(data)}
        if call.response_format == "url":
            name = f"img-{uuid.uuid4().hex}.png"
            self._files[name] = data
            while len(self._files) > _KEPT_FILES:
                self._files.popitem(last=False)
            item = {"url": f"http://{request.host}/files/{name}"}
        if call.model == "dall-e-3":
            item["revised_prompt"] = f"A detailed, vivid illustration of {call.prompt}"
        return item

    async def _stream(self, request: web.Request, call: Call, headers: dict[str, str]) -> web.StreamResponse:
        """`partial_images` previews, then one completed event (one image, whatever `n` says)."""
        response = await _open_sse(request, headers)
        prefix = "image_edit" if call.endpoint == "edits" else "image_generation"
        width, height = call.dims
        transparent = call.background == "transparent"
        common = {
            "size": call.size,
            "quality": call.quality or "auto",
            "background": call.background or "auto",
            "output_format": call.output_format,
        }
        for index in range(call.partial_images):
            data = make_image(width, height, call.output_format, seed=self.seed + 1000 + index, transparent=transparent)
            event = {"type": f"{prefix}.partial_image", "b64_json": _b64(data), "partial_image_index": index}
            await response.write(_sse({**event, "created_at": int(time.time()), **common}))
        final = make_image(width, height, call.output_format, seed=self.seed, transparent=transparent)
        done = {"type": f"{prefix}.completed", "b64_json": _b64(final), "created_at": int(time.time()), **common}
        await response.write(_sse({**done, "usage": usage_for(call)}))
        await response.write_eof()
        return response


# --- helpers -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


def _json(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _open_sse(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    sse_headers = {**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    response = web.StreamResponse(status=200, headers=sse_headers)
    await response.prepare(request)
    return response


def _status_body(status: int) -> dict[str, Any]:
    if status >= 500:
        return error_body("The server had an error while processing your request.", "server_error", None, None)
    message, code = _STATUS_ERRORS.get(status, (f"HTTP {status}", None))
    return error_body(message, "invalid_request_error", None, code)


def _blocked_body() -> dict[str, Any]:
    message = "Your request was rejected by the safety system. If you believe this is an error, contact us."
    body = error_body(message, "image_generation_user_error", None, "moderation_blocked")
    body["error"]["moderation_details"] = {"moderation_stage": "input", "categories": ["test-block-word"]}
    return body


async def _serve_forever(port: int, key: str, latency: float, seed: int, image: bytes | None) -> None:
    fake = FakeOpenAI(key=key, seed=seed)
    fake.latency = latency
    fake.image = image
    print(await fake.start(port), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI Images API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--key", default="sk-fake")
    parser.add_argument("--latency", type=float, default=0.0, help="extra seconds per image request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", type=Path, default=None, help="serve this file as every non-streamed image")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        image = args.image.read_bytes() if args.image is not None else None
        asyncio.run(_serve_forever(args.port, args.key, args.latency, args.seed, image))


if __name__ == "__main__":
    main()
