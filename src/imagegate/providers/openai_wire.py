"""OpenAI Images API wire format: request fields, multipart edit bodies, reply parsing, error translation.

Pure functions (no I/O besides the image pool) used by `imagegate.providers.openai`. Facts are from
shared/providers.md section 1: GPT image models reject `response_format` (output is always base64),
dall-e models default to `url`; edits are multipart with one `image` part or repeated `image[]`
parts, every other field a string; `moderation` and `style` are generations-only.
"""

from __future__ import annotations

import asyncio
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
import pybase64

from imagegate.core.types import ProviderJob
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamError,
    UpstreamMalformedError,
)
from imagegate.imaging.convert import encode_image
from imagegate.imaging.encoded import Buffer, ImageBytes, InvalidBase64Error
from imagegate.imaging.pool import run_image_task
from imagegate.providers.base import EditInputs
from imagegate.providers.http import retry_after_seconds
from imagegate.providers.ladder import status_error
from imagegate.redaction import MAX_RELAYED_CHARS, relayable

NAME = "openai"
NATIVE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "svg"})
# Fields the adapter sets itself: the caller's `extra` (and `options`) can never override them.
OWNED_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "response_format",
        "stream",
        "partial_images",
        "image",
        "image[]",
        "images",
        "mask",
        "markup",
        "aspect_ratio",
    }
)
GENERATIONS_ONLY = frozenset({"moderation", "style"})
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# OpenAI's parameter names are ours; only the edit image fields differ in spelling.
PARAM_MAP = {"image[]": "image", "images": "image"}
MAX_MESSAGE_CHARS = MAX_RELAYED_CHARS  # upstream words relayed to a caller: redacted, then cut
MAX_FIELD_CHARS = 64  # an upstream code/type/param
_B64_KEY = b'"b64_json":"'
_MARKER = "#"  # not in the base64 alphabet: a marker never passes for image data


def is_dalle(model: str) -> bool:
    return model.startswith("dall-e")


@dataclass(frozen=True)
class WireQuirks:
    """How a host that speaks OpenAI's Images API differs from OpenAI: data, per provider instance.

    `response_format`: ``auto`` is OpenAI's rule (sent as b64_json to dall-e models only, never to GPT
    image models), ``omit`` never sends it, ``b64_json`` always asks for base64. `size_field`:
    ``aspect_ratio`` sends the size as a ratio ("16:9"; xAI) instead of ``size``. `output_fields`:
    False leaves out output_format, background and output_compression (the gateway converts).
    `json_edits`: edits as JSON with data: URLs (``image`` / ``images``) instead of multipart.
    `model_in_body`: False leaves `model` out of the body (Azure: the deployment in the URL is the model).
    """

    response_format: Literal["auto", "omit", "b64_json"] = "auto"
    size_field: Literal["size", "aspect_ratio"] = "size"
    output_fields: bool = True
    json_edits: bool = False
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    model_in_body: bool = True  # False: the URL names the model (Azure's deployments)


OPENAI = WireQuirks()


def request_fields(job: ProviderJob, *, stream: bool, quirks: WireQuirks = OPENAI) -> dict[str, object]:
    """The request body fields for `job`: extra < options < the fields the adapter owns."""
    fields: dict[str, object] = {k: v for k, v in job.extra.items() if k not in OWNED_FIELDS}
    fields.update({k: v for k, v in job.options.items() if k not in OWNED_FIELDS})
    if job.mode == "image-edit":
        for name in GENERATIONS_ONLY:
            fields.pop(name, None)
    fields.update({"model": job.provider_model, "prompt": job.prompt, "n": job.n})
    fields.update(_size_field(job, quirks))
    if job.quality is not None:
        fields["quality"] = job.quality
    dalle = is_dalle(job.provider_model)
    if quirks.response_format == "b64_json" or (quirks.response_format == "auto" and dalle):
        fields["response_format"] = "b64_json"
    if not dalle and quirks.output_fields:
        fields["output_format"] = job.output_format
        if job.background is not None:
            fields["background"] = job.background
        if job.output_compression is not None:
            fields["output_compression"] = job.output_compression
    if stream:
        fields["stream"] = True
        fields["partial_images"] = job.partial_images
    return {k: v for k, v in fields.items() if v is not None}


def _size_field(job: ProviderJob, quirks: WireQuirks) -> dict[str, object]:
    if job.size.auto or job.size.dims is None:
        return {quirks.size_field: "auto"}
    if quirks.size_field == "size":
        return {"size": str(job.size.dims)}
    if job.size.ratio is not None:  # a ratio-tier size system chose this label
        return {"aspect_ratio": job.size.ratio}
    width, height = job.size.dims.width, job.size.dims.height
    divisor = math.gcd(width, height)
    return {"aspect_ratio": f"{width // divisor}:{height // divisor}"}


async def edit_json(fields: Mapping[str, object], inputs: EditInputs | None) -> dict[str, object]:
    """A JSON edit body (xAI's form): the images as PNG data: URLs, `image` for one, `images` for several."""
    if inputs is None or not inputs.images:
        raise InvalidRequestError("an edit needs at least one image", param="image")
    pngs = await asyncio.gather(*(run_image_task(encode_image, item.image, "png", None) for item in inputs.images))
    refs = [{"url": "data:image/png;base64," + pybase64.b64encode(data).decode("ascii")} for data in pngs]
    body = dict(fields)
    if len(refs) == 1:
        body["image"] = refs[0]
    else:
        body["images"] = refs
    return body


def form_value(value: object) -> str:
    """A multipart field value as OpenAI's SDK sends it: strings, `true`/`false`, numbers as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


async def edit_form(fields: Mapping[str, object], inputs: EditInputs | None) -> aiohttp.FormData:
    """The multipart body of an edit: images re-encoded as PNG, one `image` part or `image[]` parts."""
    if inputs is None or not inputs.images:
        raise InvalidRequestError("an edit needs at least one image", param="image")
    encoded = [run_image_task(encode_image, item.image, "png", None) for item in inputs.images]
    if inputs.mask is not None:
        encoded.append(run_image_task(encode_image, inputs.mask.image, "png", None))
    pngs = await asyncio.gather(*encoded)
    images, mask = (pngs[:-1], pngs[-1]) if inputs.mask is not None else (pngs, None)
    form = aiohttp.FormData(quote_fields=False)  # quoting would send `image%5B%5D`
    for name, value in form_fields(fields):
        form.add_field(name, value)
    part = "image" if len(images) == 1 else "image[]"
    for index, data in enumerate(images):
        form.add_field(part, data, filename=f"image_{index}.png", content_type="image/png")
    if mask is not None:
        form.add_field("mask", mask, filename="mask.png", content_type="image/png")
    if inputs.markup is not None:
        markup = await run_image_task(encode_image, inputs.markup.image, "png", None)
        form.add_field("markup", markup, filename="markup.png", content_type="image/png")
    return form


def form_fields(fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """Multipart fields: an object (the `svg` options) goes as bracketed names, `svg[model]` and
    `svg[reasoning][effort]`, as OpenAI's SDK sends it; everything else as `form_value` text."""
    out: list[tuple[str, str]] = []

    def add(name: str, value: object) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                add(f"{name}[{key}]", item)
        elif value is not None:
            out.append((name, form_value(value)))

    for name, value in fields.items():
        add(name, value)
    return out


# --- replies -------------------------------------------------------------------------------------


def malformed(message: str, provider: str = NAME) -> UpstreamMalformedError:
    """A 200 we cannot use: the upstream may already have billed it."""
    return UpstreamMalformedError(
        f"{provider}: {message}", provider=provider, upstream_status=200, may_have_charged=True
    )


def decode_b64(value: object, provider: str = NAME) -> bytes:
    if not isinstance(value, str) or not value:
        raise malformed("an image item has no b64_json data", provider)
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise malformed("an image's b64_json is not valid base64", provider) from None


def image_bytes(value: object, texts: Sequence[Buffer] = (), provider: str = NAME) -> ImageBytes:
    """An item's `b64_json` as validated base64: a marker from `split_reply`, or the parsed string."""
    text: Buffer
    if isinstance(value, str) and value.startswith(_MARKER) and texts:
        text = texts[int(value[1:])]
    elif isinstance(value, str) and value:
        text = value.encode("ascii", "replace")
    else:
        raise malformed("an image item has no b64_json data", provider)
    try:
        return ImageBytes.from_b64(text)
    except InvalidBase64Error:
        raise malformed("an image's b64_json is not valid base64", provider) from None


def split_reply(raw: bytes) -> tuple[Any, list[memoryview]]:
    """A 200 reply parsed without parsing its multi-MB base64 strings as JSON values.

    Each `"b64_json":"<text>"` is cut out (the base64 alphabet has no quote or backslash, so the
    value ends at the next quote) and replaced by a marker `#<index>` before the small rest is
    parsed; `image_bytes` resolves the markers. Anything unexpected (an escape such as a backslash-slash in the
    value, whitespace around the colon, a `b64_json` outside the `data` items, markers out of order)
    falls back to parsing the whole body, and the second return value is then empty.
    Raises ValueError (orjson's) when the body is not JSON.
    """
    pieces: list[bytes] = []
    texts: list[memoryview] = []
    view = memoryview(raw)
    pos = 0
    while (key := raw.find(_B64_KEY, pos)) >= 0:
        start = key + len(_B64_KEY)
        end = raw.find(b'"', start)
        if end < 0 or raw.find(b"\\", start, end) >= 0:
            return orjson.loads(raw), []
        pieces += (raw[pos:start], f"{_MARKER}{len(texts)}".encode())
        texts.append(view[start:end])  # no copy: the texts stay views into the reply
        pos = end
    if not texts:
        return orjson.loads(raw), []
    pieces.append(raw[pos:])
    try:
        body = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError:
        return orjson.loads(raw), []
    if _markers(body) != [f"{_MARKER}{i}" for i in range(len(texts))]:
        return orjson.loads(raw), []
    return body, texts


def _markers(body: object) -> list[str]:
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    found = [item.get("b64_json") for item in items if isinstance(item, dict)]
    return [value for value in found if isinstance(value, str) and value.startswith(_MARKER)]


def reply_format(body: Mapping[str, Any], default: str) -> str:
    fmt = body.get("output_format")
    return fmt if isinstance(fmt, str) and fmt in NATIVE_FORMATS else default


def known(value: object) -> str | None:
    """A reported quality/background, or None where OpenAI says `auto` (not what was produced)."""
    return value if isinstance(value, str) and value and value != "auto" else None


def usage_of(body: Mapping[str, Any]) -> dict[str, object] | None:
    """The reply's `usage`, with the SVG author's `svg_usage` (a sibling in the reply) folded in."""
    usage = body.get("usage")
    svg_usage = body.get("svg_usage")
    if not isinstance(usage, dict):
        return {"svg_usage": dict(svg_usage)} if isinstance(svg_usage, dict) else None
    merged = dict(usage)
    if isinstance(svg_usage, dict):
        merged["svg_usage"] = dict(svg_usage)
    return merged


def result_items(body: object, provider: str = NAME) -> list[dict[str, Any]]:
    """The `data` items of a 200 reply; a 200 carrying `error`, or no images, is malformed."""
    if not isinstance(body, dict):
        raise malformed("the reply is not a JSON object", provider)
    if "error" in body:
        code, _, _, _ = error_fields(body)
        raise malformed(f"the reply carries an error ({code or 'no code'}) instead of images", provider)
    items = body.get("data")
    if not isinstance(items, list) or not items:
        raise malformed("the reply has no images", provider)
    if not all(isinstance(item, dict) for item in items):
        raise malformed("an image item is not an object", provider)
    return items


# --- errors --------------------------------------------------------------------------------------


def error_fields(body: object) -> tuple[str | None, str | None, str | None, str]:
    """(code, type, param, message) of an OpenAI error body; tolerant of anything else.

    Every value is upstream text that may be relayed: credential patterns are masked and it is cut
    (a proxy may echo our `Authorization` header); the provider boundary masks configured keys too.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        message = relayable(error, MAX_MESSAGE_CHARS) if isinstance(error, str) else ""
        return None, None, None, message

    def text(key: str, limit: int = MAX_FIELD_CHARS) -> str | None:
        value = error.get(key)
        return relayable(value, limit) if isinstance(value, str) and value else None

    return text("code"), text("type"), text("param"), text("message", MAX_MESSAGE_CHARS) or ""


def parse_error_body(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def translate_error(status: int, headers: Mapping[str, str], raw: bytes, provider: str = NAME) -> ImagegateError:
    """An OpenAI error reply as one of ours. Never repeats the key nor OpenAI's words on 401/403."""
    code, kind, param, message = error_fields(parse_error_body(raw))
    detail = f": {message}" if message else ""
    if status in (400, 422):
        if code in MODERATION_CODES:
            return ModerationBlockedError(f"{provider}: {message or 'the request was rejected by the safety system'}")
        mapped = PARAM_MAP.get(param, param) if param else None
        return InvalidRequestError(f"{provider}: {message or f'HTTP {status}'}", param=mapped)
    if status in (401, 403):
        return status_error(provider, status)  # OpenAI's words on a refused key are never relayed
    quota = code == "insufficient_quota" or kind == "insufficient_quota"
    return status_error(
        provider,
        status,
        detail=detail,
        retry_after=retry_after_seconds(headers),
        retryable=headers.get("x-should-retry", "").strip().lower() != "false",
        quota_exhausted=status == 429 and quota,
    )


def stream_error(payload: Mapping[str, Any], provider: str = NAME) -> ImagegateError:
    """An `error` object inside an event stream (the SDK raises on any data object with `error`)."""
    code, _, _, message = error_fields(payload)
    if code in MODERATION_CODES:
        return ModerationBlockedError(f"{provider}: {message or 'the request was rejected by the safety system'}")
    return UpstreamError(
        f"{provider} stream failed{f': {message}' if message else ''}",
        provider=provider,
        upstream_status=200,
        may_have_charged=True,
    )
