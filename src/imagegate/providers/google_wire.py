"""Gemini API `generateContent` wire format: request bodies, reply parsing, error translation.

Pure functions (no I/O besides the image pool) used by `imagegate.providers.google`. Facts are from
shared/providers.md section 4.1 and providers-2.md section 1: one user turn of `parts` (the prompt
as `text`, each input image as `inlineData`), `generationConfig.responseModalities` ["TEXT", "IMAGE"]
and `imageConfig` {aspectRatio, imageSize (uppercase K, default 1K)}; the reply's image is an
`inlineData` part of `candidates[0].content`, with `usageMetadata` beside it. No `n`: one image per
call, the gateway fans out. Errors are ``{"error": {"code", "message", "status", "details"}}``; a
wrong key answers 400 INVALID_ARGUMENT with an ErrorInfo reason ``API_KEY_INVALID``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from imagegate.core.types import ProviderJob
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

NAME = "google"
MODALITIES = ("TEXT", "IMAGE")
DEFAULT_TIER = "1K"  # the API's own default imageSize: not sent, so models without tiers never see it
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp"})
# The caller's unknown parameters go into `generationConfig`, except these request-level fields.
TOP_LEVEL_FIELDS = frozenset({"safetySettings", "systemInstruction", "cachedContent"})
# Set by the adapter; a caller's `extra` (or `options`) never overrides them.
OWNED_FIELDS = frozenset(
    {
        "contents",
        "generationConfig",
        "responseModalities",
        "imageConfig",
        "candidateCount",
        "model",
        "prompt",
        "n",
        "size",
        "aspect_ratio",
        "resolution",
        "image",
        "images",
        "mask",
        "markup",
        "tools",
        "toolConfig",
    }
)
# Finish or block reasons that mean the safety/policy system refused: a 400, never failed over.
MODERATION_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"})
MAX_TEXT_CHARS = 200  # the model's own words quoted in an error
MAX_FIELD_CHARS = 64
_SIZE_WORDS = re.compile(r"aspect[_ ]?ratio|image[_ ]?size", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# --- requests ------------------------------------------------------------------------------------


def image_config(job: ProviderJob) -> dict[str, str] | None:
    """`imageConfig` for the size the size system chose; None when the model picks (auto).

    The ratio label comes from the ratio-tier size system; failing that, the chosen pixels reduced
    (1536x1024 -> 3:2). `imageSize` is sent only off the default tier: 2.5 Flash has no tiers.
    """
    size = job.size
    ratio = size.ratio
    if ratio is None and size.dims is not None and not size.auto:
        divisor = math.gcd(size.dims.width, size.dims.height)
        ratio = f"{size.dims.width // divisor}:{size.dims.height // divisor}"
    config: dict[str, str] = {}
    if ratio is not None:
        config["aspectRatio"] = ratio
    if size.tier is not None and size.tier.upper() != DEFAULT_TIER:
        config["imageSize"] = size.tier.upper()
    return config or None


async def request_body(job: ProviderJob, inputs: EditInputs | None) -> dict[str, object]:
    """The `generateContent` body: the prompt, then each input image as PNG `inlineData`."""
    parts: list[dict[str, object]] = [{"text": job.prompt}]
    parts.extend({"inlineData": {"mimeType": "image/png", "data": data}} for data in await input_images(job, inputs))
    body: dict[str, object] = {}
    config: dict[str, object] = {}
    for source in (job.extra, job.options):
        for name, value in source.items():
            if name in OWNED_FIELDS or value is None:
                continue
            (body if name in TOP_LEVEL_FIELDS else config)[name] = value
    config["responseModalities"] = list(MODALITIES)
    chosen = image_config(job)
    if chosen is not None:
        config["imageConfig"] = chosen
    body["contents"] = [{"role": "user", "parts": parts}]
    body["generationConfig"] = config
    return body


async def input_images(job: ProviderJob, inputs: EditInputs | None) -> list[str]:
    """An edit's images as base64 PNG; a mask or markup is refused (Gemini edits from the prompt)."""
    if job.mode != "image-edit":
        return []
    if inputs is None or not inputs.images:
        raise InvalidRequestError("an edit needs at least one image", param="image")
    if inputs.mask is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no mask; describe the edit in the prompt", param="mask")
    if inputs.markup is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no markup", param="markup")
    pngs = await asyncio.gather(*(run_image_task(encode_image, item.image, "png", None) for item in inputs.images))
    return [pybase64.b64encode(data).decode("ascii") for data in pngs]


# --- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a 200 carried: the images (thought parts skipped), usage in OpenAI's shape (`usage_of`),
    and the reply's id and model."""

    images: list[tuple[ImageBytes, str]]
    usage: dict[str, object] | None
    response_id: str | None
    model_version: str | None


def malformed(message: str, provider: str = NAME) -> UpstreamMalformedError:
    """A 200 we cannot use: the model ran, so it may have billed."""
    return UpstreamMalformedError(
        f"{provider}: {message}", provider=provider, upstream_status=200, may_have_charged=True
    )


def parse_reply(body: object, want: int, provider: str = NAME) -> Reply:
    """The images of `candidates[0]` (at most `want`), or the error a refusal or a text-only answer is."""
    if not isinstance(body, dict):
        raise malformed("the reply is not a JSON object", provider)
    if "error" in body:
        _, status, _, _ = error_fields(body)
        raise malformed(f"the reply carries an error ({status or 'no status'}) instead of content", provider)
    usage = body.get("usageMetadata")
    response_id = body.get("responseId")
    model_version = body.get("modelVersion")
    candidates = body.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    if not isinstance(candidate, dict):
        raise _no_candidate(body, provider)
    parts = _parts(candidate)
    images = [_image(part["inlineData"], provider) for part in parts if _is_image(part)][: max(1, want)]
    if not images:
        raise _no_image(candidate, parts, provider)
    return Reply(
        images=images,
        usage=usage_of(usage),
        response_id=response_id if isinstance(response_id, str) and response_id else None,
        model_version=model_version if isinstance(model_version, str) and model_version else None,
    )


def _parts(candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


def _is_image(part: Mapping[str, Any]) -> bool:
    """An answer image: `inlineData` of an image type, not a thought (Gemini 3 draws interim images)."""
    data = part.get("inlineData")
    if part.get("thought") is True or not isinstance(data, dict):
        return False
    mime = data.get("mimeType")
    return not isinstance(mime, str) or mime.lower().startswith("image/")


def _image(data: Mapping[str, Any], provider: str) -> tuple[ImageBytes, str]:
    """Validated base64 and the format its magic bytes name (the declared mimeType is not trusted)."""
    text = data.get("data")
    if not isinstance(text, str) or not text:
        raise malformed("an image part has no data", provider)
    try:
        content = ImageBytes.from_b64(text.encode("ascii", "replace"))
        head = pybase64.b64decode(text[:64], validate=True)
    except (InvalidBase64Error, ValueError):
        raise malformed("an image part's data is not valid base64", provider) from None
    fmt = sniff_format(head)
    if fmt not in IMAGE_FORMATS:
        raise malformed("an image part is not a PNG, JPEG or WebP image", provider)
    return content, fmt


def _no_candidate(body: Mapping[str, Any], provider: str) -> ImagegateError:
    """No candidates: a blocked prompt (`promptFeedback.blockReason`), or a reply we cannot read."""
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(reason, str) and reason:
        message = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
        detail = f": {relayable(message, MAX_TEXT_CHARS)}" if isinstance(message, str) and message else ""
        return ModerationBlockedError(
            f"{provider}: the prompt was blocked ({relayable(reason, MAX_FIELD_CHARS)}){detail}"
        )
    return malformed("the reply has no candidates", provider)


def _no_image(candidate: Mapping[str, Any], parts: Sequence[Mapping[str, Any]], provider: str) -> ImagegateError:
    """A candidate without an image: refused by the safety system, or the model answered in words."""
    reason = candidate.get("finishReason")
    reason = relayable(reason, MAX_FIELD_CHARS) if isinstance(reason, str) and reason else "none"
    finish_message = candidate.get("finishMessage")
    if reason in MODERATION_REASONS:
        detail = f": {relayable(finish_message, MAX_TEXT_CHARS)}" if isinstance(finish_message, str) else ""
        return ModerationBlockedError(f"{provider}: the safety system withheld the image ({reason}){detail}")
    texts = [part["text"] for part in parts if isinstance(part.get("text"), str) and part.get("thought") is not True]
    said = " ".join(texts) or (finish_message if isinstance(finish_message, str) else "")
    quoted = f"; the model said: {relayable(said, MAX_TEXT_CHARS)}" if said.strip() else ""
    return malformed(f"the model answered without an image (finishReason {reason}){quoted}", provider)


def usage_of(metadata: object) -> dict[str, object] | None:
    """`usageMetadata` as OpenAI's image `usage` (the gateway's response shape, what pricing reads).

    Input tokens split by modality (`promptTokensDetails`); output tokens are the candidates' plus
    the thoughts' (Google bills thinking as output text), split into image and text tokens by
    `candidatesTokensDetails`. Where no details come, all candidate tokens count as image tokens.
    """
    if not isinstance(metadata, dict):
        return None
    prompt = _count(metadata.get("promptTokenCount"))
    candidates = _count(metadata.get("candidatesTokenCount"))
    thoughts = _count(metadata.get("thoughtsTokenCount"))
    usage: dict[str, object] = {
        "input_tokens": prompt,
        "output_tokens": candidates + thoughts,
        "total_tokens": _count(metadata.get("totalTokenCount")) or prompt + candidates + thoughts,
    }
    inputs = _by_modality(metadata.get("promptTokensDetails"))
    if inputs:
        usage["input_tokens_details"] = {"text_tokens": inputs.get("TEXT", 0), "image_tokens": inputs.get("IMAGE", 0)}
    outputs = _by_modality(metadata.get("candidatesTokensDetails"))
    text_out = outputs.get("TEXT", 0) if outputs else 0
    usage["output_tokens_details"] = {
        "text_tokens": text_out + thoughts,
        "image_tokens": outputs.get("IMAGE", 0) if outputs else candidates,
    }
    return usage


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _by_modality(details: object) -> dict[str, int]:
    """``[{"modality": "IMAGE", "tokenCount": 1290}, ...]`` summed per modality."""
    counts: dict[str, int] = {}
    for item in details if isinstance(details, list) else []:
        modality = item.get("modality") if isinstance(item, dict) else None
        if isinstance(modality, str):
            counts[modality] = counts.get(modality, 0) + _count(item.get("tokenCount"))
    return counts


def metadata_of(reply: Reply) -> dict[str, object]:
    return {"model_version": reply.model_version} if reply.model_version else {}


# --- errors --------------------------------------------------------------------------------------


def error_fields(body: object) -> tuple[int | None, str | None, str, list[dict[str, Any]]]:
    """(code, status, message, details) of a Google error body; tolerant of anything else.

    The message is upstream text that may be relayed: credential patterns masked, cut; the
    provider masks its configured key too (a proxy may echo the request's headers).
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, list) and body and isinstance(body[0], dict):  # some proxies wrap it in a list
        error = body[0].get("error")
    if not isinstance(error, dict):
        return None, None, relayable(error, MAX_RELAYED_CHARS) if isinstance(error, str) else "", []
    code = error.get("code")
    status = error.get("status")
    message = error.get("message")
    details = error.get("details")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        relayable(status, MAX_FIELD_CHARS) if isinstance(status, str) and status else None,
        relayable(message, MAX_RELAYED_CHARS) if isinstance(message, str) else "",
        [item for item in details if isinstance(item, dict)] if isinstance(details, list) else [],
    )


def _reasons(details: Sequence[Mapping[str, Any]]) -> set[str]:
    return {item["reason"] for item in details if isinstance(item.get("reason"), str)}


def retry_delay(details: Sequence[Mapping[str, Any]]) -> float | None:
    """`RetryInfo.retryDelay` ("23s", "1.5s") from the error details, in seconds."""
    for item in details:
        kind = item.get("@type")
        delay = item.get("retryDelay")
        if isinstance(kind, str) and kind.endswith("RetryInfo") and isinstance(delay, str):
            found = _DURATION.match(delay)
            if found:
                return float(found.group(1))
    return None


def parse_error_body(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def translate_error(status: int, headers: Mapping[str, str], raw: bytes, provider: str = NAME) -> ImagegateError:
    """A Google error reply as one of ours. Never repeats Google's words where the key is refused."""
    _, state, message, details = error_fields(parse_error_body(raw))
    detail = f": {message}" if message else ""
    if status in (401, 403) or _reasons(details) & AUTH_REASONS:  # Google answers a bad key with 400
        return status_error(provider, status, refused_credentials=True)
    if status == 400 and state == "FAILED_PRECONDITION":  # e.g. billing or region: not the caller's input
        return UpstreamError(f"{provider} cannot serve the request{detail}", provider=provider, upstream_status=status)
    if status in (400, 422):
        param = "size" if _SIZE_WORDS.search(message) else None
        return InvalidRequestError(f"{provider}: {message or f'HTTP {status}'}", param=param)
    retry_after = retry_after_seconds(headers)
    if retry_after is None:
        retry_after = retry_delay(details)
    if status == 504:
        return UpstreamTimeoutError(
            f"{provider} timed out on its side{detail}",
            provider=provider,
            upstream_status=status,
            retry_after=retry_after,
        )
    return status_error(provider, status, detail=detail, retry_after=retry_after, not_found="does not serve this model")
