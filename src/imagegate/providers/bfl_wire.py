"""Black Forest Labs API wire format: request bodies, polling URLs, poll replies, costs, errors.

Pure functions (no I/O besides the image pool) used by `imagegate.providers.bfl`. Facts are from
shared/providers.md section 6 and providers-2.md section 4: ``POST {base}/{endpoint}`` with the
``x-key`` header answers ``{id, polling_url, cost, input_mp, output_mp}`` (`cost` in credits,
1 credit = $0.01); ``GET polling_url`` answers ``{id, status, result: {sample, seed, ...}}`` with
`status` one of Pending, Ready, Request Moderated, Content Moderated, Error, Task not found; the
`sample` URL expires after 10 minutes. Sizes go as `width`/`height` (FLUX.2, FLUX 1.1 [pro]) or as
an `aspect_ratio` string (Ultra, Kontext); edit inputs as base64 `input_image`, `input_image_2`, ...
Errors are FastAPI-style: ``{"detail": "..."}`` or, for 422, ``{"detail": [{loc, msg, type}]}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

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
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.probe import sniff_format
from imagegate.providers.base import EditInputs
from imagegate.providers.http import retry_after_seconds
from imagegate.providers.ladder import status_error
from imagegate.redaction import MAX_RELAYED_CHARS, relayable

NAME = "bfl"
USD_PER_CREDIT = Decimal("0.01")  # BFL's bfl-api skill: "1 credit = $0.01"
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp"})
MAX_INPUT_IMAGES = 10  # input_image .. input_image_10: more than any BFL model takes
PENDING = frozenset({"Pending", "Queued", "Processing"})
READY = "Ready"
MODERATED = {
    "Request Moderated": "the request was flagged by BFL's moderation",
    "Content Moderated": "the generated image was flagged by BFL's moderation",
}
FAILED = "Error"
NOT_FOUND = "Task not found"
# Set by the adapter; a caller's `extra` (or `options`) never overrides them.
OWNED_FIELDS = frozenset(
    {"prompt", "width", "height", "aspect_ratio", "output_format", "webhook_url", "webhook_secret", "input_image"}
    | {f"input_image_{index}" for index in range(2, MAX_INPUT_IMAGES + 1)}
)
# BFL field -> our public parameter, for a 422's `loc`.
FIELD_PARAMS = {
    "width": "size",
    "height": "size",
    "aspect_ratio": "size",
    "output_format": "output_format",
    "prompt": "prompt",
    "input_image": "image",
}
_FIELD_CHARS = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- requests ------------------------------------------------------------------------------------


def size_fields(job: ProviderJob) -> dict[str, object]:
    """`aspect_ratio` for ratio systems (Ultra, Kontext), else `width`/`height`; nothing for auto."""
    size = job.size
    if size.ratio is not None:
        return {"aspect_ratio": size.ratio}
    if size.auto or size.dims is None:
        return {}
    return {"width": size.dims.width, "height": size.dims.height}


async def request_body(job: ProviderJob, inputs: EditInputs | None) -> dict[str, object]:
    """The submit body: caller extras, then catalog options, then the fields the adapter owns."""
    body: dict[str, object] = {}
    for source in (job.extra, job.options):
        for name, value in source.items():
            if name not in OWNED_FIELDS and value is not None:
                body[name] = value
    body["prompt"] = job.prompt
    body.update(size_fields(job))
    body["output_format"] = job.output_format
    for index, data in enumerate(await input_images(job, inputs)):
        body["input_image" if index == 0 else f"input_image_{index + 1}"] = data
    return body


async def input_images(job: ProviderJob, inputs: EditInputs | None) -> list[str]:
    """An edit's images as base64 PNG; a mask or markup is refused (BFL edits from the prompt)."""
    if job.mode != "image-edit":
        return []
    if inputs is None or not inputs.images:
        raise InvalidRequestError("an edit needs at least one image", param="image")
    if inputs.mask is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no mask; describe the edit in the prompt", param="mask")
    if inputs.markup is not None:
        raise InvalidRequestError(f"{job.provider_model} takes no markup", param="markup")
    if len(inputs.images) > MAX_INPUT_IMAGES:
        raise InvalidRequestError(f"at most {MAX_INPUT_IMAGES} input images", param="image")
    pngs = await asyncio.gather(*(run_image_task(encode_image, item.image, "png", None) for item in inputs.images))
    return [pybase64.b64encode(data).decode("ascii") for data in pngs]


# --- where the key may go ------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    return parts.scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[parts.scheme]


def _parent_domain(host: str) -> str | None:
    """``bfl.ai`` for ``api.bfl.ai``; None for an IP address or a host of fewer than three labels."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.split(".")
    return ".".join(labels[1:]) if len(labels) >= 3 else None


def trusted_url(url: str, base_url: str) -> bool:
    """May the key go to `url`? The configured API's own origin, or (same scheme, default port) a
    sibling host of its domain: ``api.eu.bfl.ai`` or ``api.us1.bfl.ai`` for ``api.bfl.ai``."""
    origin, base = _origin(url), _origin(base_url)
    if origin is None or base is None or origin[0] != base[0]:
        return False
    if origin == base:
        return True
    parent = _parent_domain(base[1])
    return parent is not None and origin[1].endswith("." + parent) and origin[2] == _DEFAULT_PORTS[origin[0]]


# --- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """A submit reply: the task, where to poll it, and what BFL says it costs (credits)."""

    task_id: str
    polling_url: str
    cost_credits: Decimal | None
    input_mp: float | None
    output_mp: float | None


@dataclass(frozen=True)
class Ready:
    """A finished task: its result URL (short-lived) and seed."""

    sample_url: str
    seed: int | None


def malformed(message: str, provider: str = NAME, charged: bool = True) -> UpstreamMalformedError:
    return UpstreamMalformedError(f"{provider}: {message}", provider=provider, may_have_charged=charged)


def parse_submit(body: object, provider: str = NAME) -> Submitted:
    if not isinstance(body, dict):
        raise malformed("the submit reply is not a JSON object", provider)
    task_id, polling_url = body.get("id"), body.get("polling_url")
    if not isinstance(task_id, str) or not task_id or not isinstance(polling_url, str) or not polling_url:
        raise malformed("the submit reply has no id or polling_url", provider)
    return Submitted(
        task_id, polling_url, credits(body.get("cost")), _number(body.get("input_mp")), _number(body.get("output_mp"))
    )


def credits(value: object) -> Decimal | None:
    """BFL's `cost` as a Decimal of credits; None when absent or not a non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def cost_usd(cost_credits: Decimal | None) -> Decimal | None:
    return None if cost_credits is None else cost_credits * USD_PER_CREDIT


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_poll(body: object, provider: str = NAME) -> Ready | None:
    """None while the task runs; its result when Ready; the error a terminal status means."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise malformed("a poll reply without a status", provider)
    status = body["status"]
    if status in PENDING:
        return None
    if status == READY:
        result = body.get("result")
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise malformed("the task is Ready but names no result image", provider)
        seed = result.get("seed") if isinstance(result, dict) else None
        return Ready(sample, seed if isinstance(seed, int) and not isinstance(seed, bool) else None)
    raise status_failure(status, body, provider)


def status_failure(status: str, body: Mapping[str, Any], provider: str = NAME) -> ImagegateError:
    """A terminal status other than Ready as one of our errors."""
    said = _short(body.get("details")) or _short(body.get("error"))
    detail = f": {said}" if said else ""
    if status in MODERATED:
        return ModerationBlockedError(f"{provider}: {MODERATED[status]} ({status}){detail}")
    if status == FAILED:
        return UpstreamError(
            f"{provider}: the generation failed (Error){detail}", provider=provider, may_have_charged=True
        )
    if status == NOT_FOUND:
        return UpstreamError(
            f"{provider} no longer knows the task (Task not found)", provider=provider, may_have_charged=True
        )
    return malformed(f"a poll reply with an unknown status {relayable(status, _FIELD_CHARS)!r}", provider)


def image_format(data: bytes, provider: str = NAME) -> str:
    """The format by the bytes' magic: an error page served as an image never passes."""
    fmt = sniff_format(data)
    if fmt not in IMAGE_FORMATS:
        raise malformed("the result file is not a PNG, JPEG or WebP image", provider)
    return fmt


# --- errors --------------------------------------------------------------------------------------


def translate_error(
    status: int, headers: Mapping[str, str], raw: bytes, provider: str = NAME, *, polling: bool = False
) -> ImagegateError:
    """A BFL error reply as one of ours. Never repeats BFL's words where the key is refused."""
    if status in (401, 403):
        return status_error(provider, status)
    body = _loads(raw)
    detail = body.get("detail") if isinstance(body, dict) else None
    if status in (400, 422) and not polling:
        return _rejected(detail, status, provider)
    said = _short(detail)
    suffix = f": {said}" if said else ""
    retry_after = retry_after_seconds(headers)
    if status == 504:
        return UpstreamTimeoutError(
            f"{provider} timed out on its side{suffix}",
            provider=provider,
            upstream_status=status,
            retry_after=retry_after,
            may_have_charged=polling,
        )
    error = status_error(
        provider,
        status,
        detail=suffix,
        retry_after=retry_after,
        not_found="no longer knows the task" if polling else "does not serve this model",
    )
    if polling:
        error.may_have_charged = True  # the task was accepted: it may run and bill anyway
    return error


def _rejected(detail: object, status: int, provider: str) -> ImagegateError:
    items = [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []
    if items:
        field = _loc_field(items[0].get("loc"))
        param = FIELD_PARAMS.get(field or "", "image" if field and field.startswith("input_image") else field)
        return InvalidRequestError(f"{provider}: {_short(items[0].get('msg')) or 'invalid value'}", param=param)
    said = _short(detail)
    return InvalidRequestError(f"{provider}: {said}" if said else f"{provider} rejected the request (HTTP {status})")


def _loc_field(loc: object) -> str | None:
    for part in loc if isinstance(loc, list) else []:
        if isinstance(part, str) and part != "body":
            return relayable(part, _FIELD_CHARS)
    return None


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _short(value: object) -> str:
    """Upstream words fit to relay (credential patterns masked, cut); "" for nothing useful."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | dict) and value:
        text = orjson.dumps(value).decode()
    else:
        return ""
    return relayable(text, MAX_RELAYED_CHARS)
