"""fal.ai wire format: request bodies, queue handles, result parsing and error translation.

Pure functions used by `imagegate.providers.fal`; no I/O here. Facts from shared/providers.md §2:
`Authorization: Key <key>`, queue submit to the full endpoint path, status/result/cancel URLs on
`owner/alias` only, FastAPI-style 422 bodies (``{"detail": [{"loc", "msg", "type"}]}``) with
``content_policy_violation`` for safety blocks, and ``{"images": [{url, content_type, ...}]}`` output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import pybase64

from imagegate.core.types import ProviderJob, SizeChoice
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from imagegate.imaging.probe import sniff_format
from imagegate.providers.http import UpstreamResponse, retry_after_seconds
from imagegate.providers.ladder import status_error
from imagegate.redaction import MAX_RELAYED_CHARS, relayable

NAME = "fal"
POLICY_VIOLATION = "content_policy_violation"
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "avif"})
# fal field (the first `loc` entry after "body") -> our public parameter.
FIELD_PARAMS = {
    "image_size": "size",
    "aspect_ratio": "size",
    "num_images": "n",
    "output_format": "output_format",
    "image_urls": "image",
    "image_url": "image",
    "quality": "quality",
    "background": "background",
    "prompt": "prompt",
}
# Edit endpoints and the field their input images go in. Unknown edit endpoints: "kontext" in the
# id (but not `.../kontext/multi`) takes one `image_url`, everything else a list of `image_urls`.
IMAGE_FIELDS = {
    "fal-ai/gpt-image-1/edit-image": "image_urls",
    "fal-ai/flux-pro/kontext": "image_url",
    "fal-ai/flux-pro/kontext/max": "image_url",
    "fal-ai/flux-pro/kontext/multi": "image_urls",
}
# Endpoints whose `image_size` takes "WxH" text (their sizes are a fixed list without preset names).
TEXT_SIZE_ENDPOINTS = frozenset({"fal-ai/gpt-image-1/text-to-image", "fal-ai/gpt-image-1/edit-image"})
# Endpoints whose schema has no `num_images` (one image per call: the gateway fans out) or no
# `output_format` (the model's own format: the gateway converts): those fields are left out.
UNSENT_FIELDS: dict[str, frozenset[str]] = {
    "fal-ai/bytedance/seedream/v4.5/text-to-image": frozenset({"output_format"}),
    "fal-ai/bytedance/seedream/v4.5/edit": frozenset({"output_format"}),
    "fal-ai/flux-2-pro": frozenset({"num_images"}),
    "fal-ai/flux-2-pro/edit": frozenset({"num_images"}),
    "fal-ai/recraft/v3/text-to-image": frozenset({"num_images", "output_format"}),
    "fal-ai/ideogram/v3": frozenset({"output_format"}),
}
_DETAIL_CHARS = MAX_RELAYED_CHARS  # upstream words relayed to a caller: redacted, then cut
_FIELD_CHARS = 64


# --- request ---------------------------------------------------------------------------------


def image_field(endpoint_id: str) -> str:
    known = IMAGE_FIELDS.get(endpoint_id)
    if known is not None:
        return known
    if "kontext" in endpoint_id and not endpoint_id.endswith("/multi"):
        return "image_url"
    return "image_urls"


def size_fields(size: SizeChoice, endpoint_id: str) -> dict[str, object]:
    """`image_size` (preset, {width, height}, "auto" or "WxH") or Kontext's `aspect_ratio`. A
    listed size without a preset name is "WxH" text on `TEXT_SIZE_ENDPOINTS`; any other size
    (custom, or from a free size system) is {width, height}."""
    if size.preset is not None:
        return {"image_size": size.preset}
    if size.ratio is not None:
        return {"aspect_ratio": size.ratio}
    if size.auto or size.dims is None:
        return {"image_size": "auto"} if size.auto else {}
    if size.custom or endpoint_id not in TEXT_SIZE_ENDPOINTS:
        return {"image_size": {"width": size.dims.width, "height": size.dims.height}}
    return {"image_size": str(size.dims)}


def build_body(job: ProviderJob, image_uris: list[str] | None) -> dict[str, object]:
    """The model input: caller extras first, then catalog options, then the fields we own (less
    those the endpoint does not take, `UNSENT_FIELDS`)."""
    body: dict[str, object] = dict(job.extra)
    body.update(job.options)
    owned: dict[str, object] = {"prompt": job.prompt, **size_fields(job.size, job.provider_model)}
    owned["num_images"] = job.n
    owned["output_format"] = job.output_format
    if job.quality is not None:
        owned["quality"] = job.quality
    if job.background is not None:
        owned["background"] = job.background
    if image_uris is not None:
        field = image_field(job.provider_model)
        owned[field] = image_uris[0] if field == "image_url" else list(image_uris)
    for name in UNSENT_FIELDS.get(job.provider_model, ()):
        owned.pop(name, None)
    body.update(owned)
    return body


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + pybase64.b64encode(data).decode("ascii")


# --- queue handle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueHandle:
    """A submitted job. `trusted` is False when fal named URLs off the configured queue host: then
    the URLs here are the ones built by the owner/alias rule on the configured host instead."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    trusted: bool = True


def app_path(endpoint_id: str) -> str:
    """`owner/alias`: status, result and cancel URLs drop the endpoint's subpath."""
    return "/".join(endpoint_id.strip("/").split("/")[:2])


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def same_origin(url: str, base: str) -> bool:
    """Same scheme, host and port: the only place the key may be sent."""
    origin = _origin(url)
    return origin is not None and origin == _origin(base)


def parse_submit(response: UpstreamResponse, queue_url: str, endpoint_id: str) -> QueueHandle:
    body = response.json(NAME)
    request_id = body.get("request_id") if isinstance(body, dict) else None
    if not isinstance(request_id, str) or not request_id:
        raise UpstreamMalformedError(
            f"fal accepted the job without a request id{_detail_suffix(body)}", provider=NAME, may_have_charged=True
        )
    base = f"{queue_url}/{app_path(endpoint_id)}/requests/{request_id}"
    built = {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}
    urls: dict[str, str] = {}
    trusted = True
    for name, fallback in built.items():
        value = body.get(name)
        if value is None:
            urls[name] = fallback
        elif isinstance(value, str) and same_origin(value, queue_url):
            urls[name] = value
        else:
            trusted = False
    if not trusted:
        urls = built
    return QueueHandle(request_id, urls["status_url"], urls["response_url"], urls["cancel_url"], trusted)


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    url: str
    content_type: str | None


def parse_status(response: UpstreamResponse) -> dict[str, Any]:
    body = response.json(NAME)
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise UpstreamMalformedError("fal sent a job status without a status", provider=NAME, may_have_charged=True)
    return body


def parse_output(response: UpstreamResponse) -> tuple[dict[str, Any], list[ImageRef]]:
    """The model output and its image references; a 200 without usable images is malformed."""
    body = response.json(NAME)
    images = body.get("images") if isinstance(body, dict) else None
    refs: list[ImageRef] = []
    if isinstance(images, list):
        for item in images:
            url = item.get("url") if isinstance(item, dict) else None
            if not isinstance(url, str) or not url:
                refs = []
                break
            content_type = item.get("content_type")
            refs.append(ImageRef(url, content_type if isinstance(content_type, str) else None))
    if not refs:
        raise UpstreamMalformedError(
            f"fal returned no images{_detail_suffix(body)}",
            provider=NAME,
            upstream_status=response.status,
            may_have_charged=True,
        )
    assert isinstance(body, dict)
    return body, refs


def decode_data_uri(uri: str, max_bytes: int) -> tuple[bytes, str | None]:
    """Bytes and MIME type of a base64 `data:` URI (fal's `sync_mode` output)."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64"):
        raise UpstreamMalformedError("fal returned a data URI that is not base64", provider=NAME, may_have_charged=True)
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise UpstreamMalformedError(f"fal image is over the {max_bytes} byte cap", provider=NAME)
    try:
        data = pybase64.b64decode(payload, validate=True)
    except ValueError:
        raise UpstreamMalformedError(
            "fal returned a data URI with bad base64", provider=NAME, may_have_charged=True
        ) from None
    mime = header[len("data:") : -len(";base64")].split(";")[0].strip().lower()
    return data, mime or None


def image_format(data: bytes, content_type: str | None) -> str:
    """The format by the bytes' magic. The declared content type is not trusted: a CDN error page
    served as ``image/jpeg`` (or an image labelled wrongly) must not pass as a picture."""
    sniffed = sniff_format(data)
    if sniffed in IMAGE_FORMATS:
        return sniffed
    declared = (content_type or "unknown").split(";")[0].strip().lower()
    raise UpstreamMalformedError(
        f"fal returned a file that is not an image (declared {relayable(declared, 60)})",
        provider=NAME,
        may_have_charged=True,
    )


def result_metadata(output: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, object]:
    meta: dict[str, object] = {}
    seed = output.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        meta["seed"] = seed
    metrics = status.get("metrics") if status else None
    timings = output.get("timings")
    inference = metrics.get("inference_time") if isinstance(metrics, dict) else None
    if inference is None and isinstance(timings, dict):
        inference = timings.get("inference")
    if isinstance(inference, int | float) and not isinstance(inference, bool):
        meta["inference_time"] = float(inference)
    flags = output.get("has_nsfw_concepts")
    if isinstance(flags, list) and any(flag is True for flag in flags):
        meta["has_nsfw_concepts"] = [flag is True for flag in flags]
    return meta


# --- errors --------------------------------------------------------------------------------------


def translate_error(response: UpstreamResponse, stage: str) -> ImagegateError:
    """An error reply as our exception. `stage`: "submit" (incl. sync runs), "status" or "result"."""
    status = response.status
    if status in (401, 403):  # never echo the body: it may quote the credential
        return status_error(NAME, status)
    body = _loads(response.body)
    if status in (400, 422):
        return _rejected(body, response.headers, status)
    if status == 504 and response.headers.get("x-fal-request-timeout-type", "").lower() == "user":
        return UpstreamTimeoutError(
            "fal dropped the request: it did not start before its timeout",
            provider=NAME,
            retryable=False,
            upstream_status=status,
        )
    not_found = "does not serve this endpoint" if stage == "submit" else "no longer knows this request"
    return status_error(
        NAME,
        status,
        detail=_detail_suffix(body),
        retry_after=retry_after_seconds(response.headers),
        not_found=not_found,
    )


def job_failed(status: Mapping[str, Any]) -> ImagegateError:
    """A COMPLETED status that carries `error` (used when the result fetch says nothing better)."""
    error_type = status.get("error_type")
    message = _short(status.get("error")) or "the job failed"
    if error_type == POLICY_VIOLATION:
        return ModerationBlockedError(f"fal: {message}")
    return UpstreamError(f"fal job failed: {message}", provider=NAME, retryable=True, may_have_charged=False)


def _rejected(body: Any, headers: Mapping[str, str], status: int) -> ImagegateError:
    detail = body.get("detail") if isinstance(body, dict) else None
    items = [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []
    error_type = body.get("error_type") if isinstance(body, dict) else None
    error_type = error_type or headers.get("x-fal-error-type")
    policy = [item for item in items if item.get("type") == POLICY_VIOLATION]
    if policy or error_type == POLICY_VIOLATION:
        message = _short(policy[0].get("msg")) if policy else _short(detail)
        return ModerationBlockedError(f"fal: {message or 'the safety system refused the request'}")
    if items:
        field = _loc_field(items[0].get("loc"))
        param = FIELD_PARAMS.get(field, field) if field else None
        return InvalidRequestError(f"fal: {_short(items[0].get('msg')) or 'invalid value'}", param=param)
    if isinstance(detail, str) and detail:
        return InvalidRequestError(f"fal: {_short(detail)}")
    return InvalidRequestError(f"fal rejected the request (HTTP {status})")


def _loc_field(loc: object) -> str | None:
    if not isinstance(loc, list):
        return None
    for part in loc:
        if isinstance(part, str) and part != "body":
            return relayable(part, _FIELD_CHARS)
    return None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        return None


def _short(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | dict):
        text = orjson.dumps(value).decode()
    else:
        return ""
    return relayable(text, _DETAIL_CHARS)  # credential patterns masked (a proxy may echo our header)


def _detail_suffix(body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    text = _short(detail)
    return f": {text}" if text else ""
