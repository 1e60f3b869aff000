"""OpenRouter chat-completions image output: request bodies, reply parsing, error translation.

Pure functions (no I/O besides the image pool) used by `imagegate.providers.openrouter`. Facts are
from shared/providers-2.md sections 9 and 13: `POST {base}/chat/completions` with one user message
(the prompt as a `text` part, each input image as an `image_url` part holding a data: URL),
`modalities` ["image"] for image-only models (Seedream, FLUX.2, ...) and ["image", "text"] for models
that also write (Gemini): the wrong one answers 404 "no endpoints support ...". Size goes as
`image_config` {aspect_ratio, image_size}. The reply's images are
``choices[0].message.images[] = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]``;
`usage` carries tokens and `cost`, the USD OpenRouter charged for the call. Errors are
``{"error": {"code", "message", "metadata"}}``.

Which modalities a model takes is catalog data, not code: the offering's
``[offerings.caps.params.modalities]`` rule lists them in `values` (`modalities_of`); a model the
catalog does not describe gets ["image", "text"], OpenRouter's documented default for image output.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from imagegate.core.types import ModelInfo, ProviderJob
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from imagegate.imaging.convert import encode_image
from imagegate.imaging.encoded import ImageBytes, InvalidBase64Error
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.probe import sniff_format
from imagegate.providers.base import EditInputs
from imagegate.providers.http import retry_after_seconds
from imagegate.providers.ladder import status_error
from imagegate.redaction import MAX_RELAYED_CHARS, relayable

NAME = "openrouter"
MODALITIES_PARAM = "modalities"  # the catalog rule that names a model's output modalities
DEFAULT_MODALITIES: tuple[str, ...] = ("image", "text")
KNOWN_MODALITIES = frozenset({"image", "text"})
DEFAULT_TIER = "1K"  # not sent: models without tiers (Gemini 2.5 Flash) never see image_size
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp"})
# Set by the adapter; a caller's `extra` (or `options`) never overrides them.
OWNED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "modalities",
        "image_config",
        "stream",
        "stream_options",
        "n",
        "prompt",
        "size",
        "aspect_ratio",
        "image",
        "images",
        "mask",
        "markup",
        "tools",
        "tool_choice",
        "models",
        "provider",
        "usage",
    }
)
MAX_TEXT_CHARS = 200  # the model's own words quoted in an error
MAX_FIELD_CHARS = 64
_DATA_URL = re.compile(r"^data:image/([a-z0-9.+-]+);base64,", re.IGNORECASE)
_SIZE_WORDS = re.compile(r"aspect[_ ]?ratio|image[_ ]?size|image_config", re.IGNORECASE)
_MODALITY_WORDS = re.compile(r"modalit", re.IGNORECASE)


# --- which modalities ----------------------------------------------------------------------------


def modalities_of(values: Iterable[str]) -> tuple[str, ...] | None:
    """The output modalities a catalog rule's `values` name, in OpenRouter's order; None if unusable."""
    chosen = {value.strip().lower() for value in values}
    if not chosen or not chosen <= KNOWN_MODALITIES or "image" not in chosen:
        return None
    return tuple(name for name in ("image", "text") if name in chosen)


def modality_map(models: Iterable[ModelInfo], instance: str) -> dict[str, tuple[str, ...]]:
    """OpenRouter model id -> output modalities, from the offerings of `instance` that set the rule."""
    found: dict[str, tuple[str, ...]] = {}
    for model in models:
        offering = model.offering(instance)
        rule = offering.caps.params.get(MODALITIES_PARAM) if offering is not None else None
        chosen = modalities_of(rule.values) if rule is not None else None
        if offering is None or chosen is None:
            continue
        for wire_id in offering.model_ids.values():
            found[wire_id] = chosen
    return found


# --- requests ------------------------------------------------------------------------------------


def image_config(job: ProviderJob) -> dict[str, str] | None:
    """`image_config` for the size the size system chose; None when the model picks (auto).

    The ratio label comes from the ratio-tier size system; failing that, the chosen pixels reduced
    (1536x1024 -> 3:2). `image_size` is sent only off the 1K default (2.5 Flash has no tiers).
    """
    size = job.size
    ratio = size.ratio
    if ratio is None and size.dims is not None and not size.auto:
        divisor = math.gcd(size.dims.width, size.dims.height)
        ratio = f"{size.dims.width // divisor}:{size.dims.height // divisor}"
    config: dict[str, str] = {}
    if ratio is not None:
        config["aspect_ratio"] = ratio
    if size.tier is not None and size.tier.upper() != DEFAULT_TIER:
        config["image_size"] = size.tier.upper()
    return config or None


async def request_body(job: ProviderJob, inputs: EditInputs | None, modalities: tuple[str, ...]) -> dict[str, object]:
    """The chat-completions body: one user message (the prompt, then each input image as a data: URL)."""
    images = await input_images(job, inputs)
    content: str | list[dict[str, object]] = job.prompt
    if images:
        content = [{"type": "text", "text": job.prompt}]
        content.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    body: dict[str, object] = {}
    for source in (job.extra, job.options):
        for name, value in source.items():
            if name not in OWNED_FIELDS and value is not None:
                body[name] = value
    body["model"] = job.provider_model
    body["messages"] = [{"role": "user", "content": content}]
    body["modalities"] = list(modalities)
    chosen = image_config(job)
    if chosen is not None:
        body["image_config"] = chosen
    return body


async def input_images(job: ProviderJob, inputs: EditInputs | None) -> list[str]:
    """An edit's images as PNG data: URLs; a mask or markup is refused (edits come from the prompt)."""
    if job.mode != "image-edit":
        return []
    if inputs is None or not inputs.images:
        raise InvalidRequestError("an edit needs at least one image", param="image")
    if inputs.mask is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no mask; describe the edit in the prompt", param="mask")
    if inputs.markup is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no markup", param="markup")
    pngs = await asyncio.gather(*(run_image_task(encode_image, item.image, "png", None) for item in inputs.images))
    return ["data:image/png;base64," + pybase64.b64encode(data).decode("ascii") for data in pngs]


# --- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a 200 carried: the images, usage in OpenAI's image shape plus OpenRouter's `cost` (USD),
    the generation id and the model that answered."""

    images: list[tuple[ImageBytes, str]]
    usage: dict[str, object] | None
    response_id: str | None
    model: str | None


def malformed(message: str, provider: str = NAME) -> UpstreamMalformedError:
    """A 200 we cannot use: the model ran, so it may have billed."""
    return UpstreamMalformedError(
        f"{provider}: {message}", provider=provider, upstream_status=200, may_have_charged=True
    )


def parse_reply(body: object, want: int, provider: str = NAME) -> Reply:
    """The images of `choices[0].message` (at most `want`), or the error a text-only answer is."""
    if not isinstance(body, dict):
        raise malformed("the reply is not a JSON object", provider)
    if "error" in body:
        code, _ = error_fields(body)
        raise malformed(f"the reply carries an error ({code or 'no code'}) instead of a completion", provider)
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise malformed("the reply has no message", provider)
    message: dict[str, Any] = choice["message"]
    items = message.get("images")
    found = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    images = [_image(item, provider) for item in found[: max(1, want)]]
    if not images:
        raise _no_image(choice, message, provider)
    response_id = body.get("id")
    model = body.get("model")
    return Reply(
        images=images,
        usage=usage_of(body.get("usage")),
        response_id=response_id if isinstance(response_id, str) and response_id else None,
        model=model if isinstance(model, str) and model else None,
    )


def _image(item: Mapping[str, Any], provider: str) -> tuple[ImageBytes, str]:
    """A data: URL's validated base64 and the format its magic bytes name (the declared type is not
    trusted). Any other URL is refused: the gateway never fetches an address an upstream names."""
    holder = item.get("image_url")
    url = holder.get("url") if isinstance(holder, dict) else holder
    if not isinstance(url, str) or not url:
        raise malformed("an image has no URL", provider)
    found = _DATA_URL.match(url)
    if found is None:
        raise malformed("an image is not a base64 data: URL", provider)
    text = url[found.end() :]
    try:
        content = ImageBytes.from_b64(text.encode("ascii", "replace"))
        head = pybase64.b64decode(text[:64], validate=True)
    except (InvalidBase64Error, ValueError):
        raise malformed("an image's data is not valid base64", provider) from None
    fmt = sniff_format(head)
    if fmt not in IMAGE_FORMATS:
        raise malformed("an image is not a PNG, JPEG or WebP image", provider)
    return content, fmt


def _no_image(choice: Mapping[str, Any], message: Mapping[str, Any], provider: str) -> ImagegateError:
    """A message without an image: the model answered in words (or refused in words)."""
    reason = choice.get("native_finish_reason") or choice.get("finish_reason")
    reason = relayable(reason, MAX_FIELD_CHARS) if isinstance(reason, str) and reason else "none"
    said = _text_of(message.get("content")) or _text_of(message.get("refusal"))
    quoted = f"; the model said: {relayable(said, MAX_TEXT_CHARS)}" if said.strip() else ""
    return malformed(f"the model answered without an image (finish_reason {reason}){quoted}", provider)


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def usage_of(usage: object) -> dict[str, object] | None:
    """OpenRouter's `usage` as OpenAI's image `usage`, plus `cost`: the USD OpenRouter charged.

    Output tokens split into image tokens (`completion_tokens_details.image_tokens`) and the rest
    (text and reasoning). `cost` stays the JSON number OpenRouter sent (summed across a fan-out).
    """
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details")
    image = _count(details.get("image_tokens")) if isinstance(details, dict) else 0
    result: dict[str, object] = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
        "output_tokens_details": {"text_tokens": max(0, completion - image), "image_tokens": image},
    }
    cost = cost_of(usage)
    if cost is not None:
        result["cost"] = cost
    return result


def cost_of(usage: Mapping[str, Any]) -> float | int | None:
    """`usage.cost` when it is a finite, non-negative JSON number."""
    cost = usage.get("cost")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost < 0:
        return None
    return cost


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# --- errors --------------------------------------------------------------------------------------


def error_fields(body: object) -> tuple[int | None, str]:
    """(code, message) of an OpenRouter error body, the message made safe to relay; tolerant of
    anything else. The provider masks its configured key too (a proxy may echo the headers)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, relayable(error, MAX_RELAYED_CHARS) if isinstance(error, str) else ""
    code = error.get("code")
    message = error.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        relayable(message, MAX_RELAYED_CHARS) if isinstance(message, str) else "",
    )


def flagged(body: object) -> bool:
    """A moderation refusal: OpenRouter's 403 carries `metadata.reasons` / `flagged_input`."""
    error = body.get("error") if isinstance(body, dict) else None
    metadata = error.get("metadata") if isinstance(error, dict) else None
    return isinstance(metadata, dict) and ("reasons" in metadata or "flagged_input" in metadata)


def parse_error_body(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def translate_error(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    modalities: tuple[str, ...],
    provider: str = NAME,
) -> ImagegateError:
    """An OpenRouter error reply as one of ours. Never repeats its words where the key is refused."""
    body = parse_error_body(raw)
    _, message = error_fields(body)
    detail = f": {message}" if message else ""
    if status == 403 and flagged(body):
        return ModerationBlockedError(f"{provider}: the moderation system refused the prompt{detail}")
    if status in (401, 403):
        return status_error(provider, status)
    if status == 404 and _MODALITY_WORDS.search(message):
        sent = "+".join(modalities)
        hint = "; the offering's caps.params.modalities must list the model's output modalities"
        return UpstreamError(
            f"{provider} has no endpoint for this model with output modalities {sent}{hint}{detail}",
            provider=provider,
            upstream_status=status,
        )
    if status in (400, 422):
        param = "size" if _SIZE_WORDS.search(message) else None
        return InvalidRequestError(f"{provider}: {message or f'HTTP {status}'}", param=param)
    retry_after = retry_after_seconds(headers)
    if status in (408, 504):
        return UpstreamTimeoutError(
            f"{provider} timed out on its side{detail}",
            provider=provider,
            upstream_status=status,
            retry_after=retry_after,
        )
    return status_error(provider, status, detail=detail, retry_after=retry_after, not_found="does not serve this model")
