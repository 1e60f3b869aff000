"""Replicate wire format: prediction requests, prediction objects, output files and errors.

Pure functions used by `imagegate.providers.replicate`; no I/O here. Facts from shared/providers.md
section 3 and providers-2.md section 3: official models are run with
``POST /models/{owner}/{name}/predictions`` and a version pin with ``POST /predictions`` and
``"version"``, both with ``{"input": {...}}``; a prediction is ``{id, status, output, error, urls:
{get, cancel}, metrics}`` with `status` one of starting, processing, succeeded, failed, canceled;
file outputs are URLs (a list, or one string for single-image models); errors are RFC 7807 problem
details ``{title, status, detail, invalid_fields?}``.

Each model names its input fields differently (providers-2.md §3: "a per-model input builder, not
one mapping"), so where the gateway's fields go is data: an `InputMap` read from the offering's
catalog capabilities (`input_map`), not a branch per model here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pybase64

from imagegate.core.types import Capabilities, ProviderJob, SizeChoice
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from imagegate.imaging.probe import sniff_format
from imagegate.providers.http import retry_after_seconds
from imagegate.providers.ladder import status_error
from imagegate.redaction import MAX_RELAYED_CHARS, relayable

NAME = "replicate"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
RUNNING = frozenset({"starting", "processing"})
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "avif"})
# Words in a failed prediction's `error` that mean the model's safety checker withheld the output
# (⚠ not in the protocol facts: seen in FLUX models' failure texts). Such a failure is the caller's.
MODERATION_WORDS = ("nsfw",)
_VERSION = re.compile(r"^[0-9a-f]{16,128}$")
_MODEL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIELD_CHARS = 64


# --- where each field goes ---------------------------------------------------------------------


@dataclass(frozen=True)
class InputMap:
    """The input field names of one Replicate model (None: the model has no such field).

    `ratio`/`tier`: the size as an aspect ratio and a size tier (flux: ``aspect_ratio`` and
    ``megapixels``); `formats` renames our format names (``jpeg`` -> ``jpg``); `image` is the field
    of edit inputs, a list when `image_list` (a single data URI otherwise).
    """

    n: str | None = "num_outputs"
    ratio: str | None = "aspect_ratio"
    tier: str | None = None
    output_format: str | None = "output_format"
    formats: Mapping[str, str] = field(default_factory=dict)
    compression: str | None = None
    image: str | None = None
    image_list: bool = False

    def owned(self) -> frozenset[str]:
        """Every field this map fills in (plus the prompt)."""
        names = (self.n, self.ratio, self.tier, self.output_format, self.compression, self.image)
        return frozenset({"prompt", *(name for name in names if name)})


# Used for a model the catalog does not describe (an operator's version pin, say): FLUX.1's fields.
DEFAULT_INPUT = InputMap(tier="megapixels", formats={"jpeg": "jpg"}, compression="output_quality")


def input_map(caps: Capabilities) -> InputMap:
    """The `InputMap` an offering's capabilities spell out in the catalog.

    - `n_wire` names the count field (only sent where `max_n` > 1);
    - ``params.size.wire`` the aspect-ratio field, ``params.size_tier.wire`` the tier field;
    - ``params.output_format`` its field (`wire`, default ``output_format``) and value `map`;
    - ``params.output_compression.wire`` the quality field (where `compression` is true);
    - ``params.image.wire`` the edit-image field, a list where `max_input_images` > 1.
    """
    params = caps.params
    size, tier, fmt = params.get("size"), params.get("size_tier"), params.get("output_format")
    compression, image = params.get("output_compression"), params.get("image")
    return InputMap(
        n=caps.n_wire if caps.max_n > 1 else None,
        ratio=(size.wire if size is not None and size.wire else "aspect_ratio"),
        tier=tier.wire if tier is not None and tier.wire else None,
        output_format=(fmt.wire if fmt is not None and fmt.wire else "output_format"),
        formats=dict(fmt.map) if fmt is not None else {},
        compression=compression.wire if caps.compression and compression is not None and compression.wire else None,
        image=image.wire if image is not None and image.wire else None,
        image_list=caps.max_input_images > 1,
    )


# --- requests -----------------------------------------------------------------------------------


def prediction_path(model: str) -> tuple[str, str | None]:
    """(path under the base URL, version) for `model`: ``owner/name`` runs the official model;
    ``owner/name:<version>`` (or a bare version id) pins a version through ``/predictions``."""
    name, colon, version = model.partition(":")
    if not colon and _VERSION.match(model):
        return "/predictions", model
    if colon:
        if not _VERSION.match(version):
            raise InvalidRequestError(f"replicate version {relayable(version, _FIELD_CHARS)!r} is not a version id")
        return "/predictions", version
    parts = name.split("/")
    if len(parts) != 2 or not all(_MODEL_PART.match(part) for part in parts):
        raise InvalidRequestError(f"{relayable(model, _FIELD_CHARS)!r} is not a Replicate model (owner/name)")
    return f"/models/{quote(parts[0], safe='')}/{quote(parts[1], safe='')}/predictions", None


def size_fields(size: SizeChoice, fields: InputMap) -> dict[str, object]:
    """Aspect ratio and tier of the chosen size (a ratio reduced from WxH when no label came)."""
    out: dict[str, object] = {}
    if size.auto:
        return out
    ratio = size.ratio
    if ratio is None and size.dims is not None:
        divisor = math.gcd(size.dims.width, size.dims.height)
        ratio = f"{size.dims.width // divisor}:{size.dims.height // divisor}"
    if fields.ratio and ratio is not None:
        out[fields.ratio] = ratio
    if fields.tier and size.tier is not None:
        out[fields.tier] = size.tier
    return out


def build_input(job: ProviderJob, fields: InputMap, image_uris: list[str] | None) -> dict[str, object]:
    """The model input: the caller's extras, then catalog options, then the fields we own."""
    owned_names = fields.owned()
    body: dict[str, object] = {k: v for k, v in job.extra.items() if k not in owned_names and v is not None}
    body.update((k, v) for k, v in job.options.items() if k not in owned_names and v is not None)
    body["prompt"] = job.prompt
    body.update(size_fields(job.size, fields))
    if fields.n:
        body[fields.n] = job.n
    if fields.output_format:
        body[fields.output_format] = fields.formats.get(job.output_format, job.output_format)
    if fields.compression and job.output_compression is not None:
        body[fields.compression] = job.output_compression
    if image_uris:
        if not fields.image:
            raise InvalidRequestError(f"replicate's {job.provider_model} takes no input images", param="image")
        body[fields.image] = list(image_uris) if fields.image_list else image_uris[0]
    return body


def request(job: ProviderJob, fields: InputMap, image_uris: list[str] | None) -> tuple[str, dict[str, object]]:
    """(path, body) of the create call for `job`."""
    path, version = prediction_path(job.provider_model)
    body: dict[str, object] = {"input": build_input(job, fields, image_uris)}
    if version is not None:
        body["version"] = version
    return path, body


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + pybase64.b64encode(data).decode("ascii")


# --- predictions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    id: str
    status: str
    output: Any
    error: str | None
    get_url: str | None
    cancel_url: str | None
    predict_time: float | None
    version: str | None


@dataclass(frozen=True)
class Handle:
    """Where to poll and cancel one prediction: always on the configured API host."""

    id: str
    get_url: str
    cancel_url: str


def malformed(message: str, status: int | None = 200, provider: str = NAME) -> UpstreamMalformedError:
    """A reply we cannot use after the prediction was created: it may have billed."""
    return UpstreamMalformedError(
        f"{provider}: {message}", provider=provider, upstream_status=status, may_have_charged=True
    )


def parse_prediction(body: object, provider: str = NAME) -> Prediction:
    if not isinstance(body, dict):
        raise malformed("the prediction is not a JSON object", provider=provider)
    ident, status = body.get("id"), body.get("status")
    if not isinstance(ident, str) or not ident or not isinstance(status, str) or status not in TERMINAL | RUNNING:
        raise malformed("the reply is not a prediction (no id or a status we do not know)", provider=provider)
    urls = body.get("urls")
    urls = urls if isinstance(urls, dict) else {}
    metrics = body.get("metrics")
    predict_time = metrics.get("predict_time") if isinstance(metrics, dict) else None
    error, version = body.get("error"), body.get("version")
    return Prediction(
        id=ident,
        status=status,
        output=body.get("output"),
        error=relayable(error, MAX_RELAYED_CHARS) if isinstance(error, str) and error else None,
        get_url=urls.get("get") if isinstance(urls.get("get"), str) else None,
        cancel_url=urls.get("cancel") if isinstance(urls.get("cancel"), str) else None,
        predict_time=float(predict_time)
        if isinstance(predict_time, int | float) and not isinstance(predict_time, bool)
        else None,
        version=version if isinstance(version, str) and version else None,
    )


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
    """Same scheme, host and port as the configured API: the only place the key may go."""
    origin = _origin(url)
    return origin is not None and origin == _origin(base)


def handle_of(prediction: Prediction, base_url: str) -> Handle:
    """`urls.get`/`urls.cancel` when they are on the configured host; otherwise the documented
    ``/predictions/{id}`` URLs on that host (the key never goes anywhere else)."""
    built = f"{base_url}/predictions/{quote(prediction.id, safe='')}"
    get_url = prediction.get_url if prediction.get_url and same_origin(prediction.get_url, base_url) else built
    cancel = prediction.cancel_url
    cancel_url = cancel if cancel and same_origin(cancel, base_url) else f"{built}/cancel"
    return Handle(prediction.id, get_url, cancel_url)


def output_urls(prediction: Prediction, want: int, provider: str = NAME) -> list[str]:
    """The file URLs of a succeeded prediction (a list, or one string), at most `want`."""
    output = prediction.output
    items = [output] if isinstance(output, str) else output if isinstance(output, list) else []
    urls = [item for item in items if isinstance(item, str) and item]
    if not urls or len(urls) != len(items):
        raise malformed("the prediction succeeded without image URLs", provider=provider)
    return urls[: max(1, want)]


def failure(prediction: Prediction, provider: str = NAME) -> ImagegateError:
    """A prediction that ended `failed` or `canceled` as our error."""
    said = f": {prediction.error}" if prediction.error else ""
    if prediction.status == "canceled":
        return UpstreamError(f"{provider} canceled the prediction{said}", provider=provider, retryable=True)
    if prediction.error and any(word in prediction.error.lower() for word in MODERATION_WORDS):
        return ModerationBlockedError(f"{provider}: the safety checker withheld the image{said}")
    return UpstreamError(f"{provider}: the prediction failed{said}", provider=provider, retryable=True)


def metadata_of(prediction: Prediction) -> dict[str, object]:
    meta: dict[str, object] = {}
    if prediction.predict_time is not None:
        meta["predict_time"] = prediction.predict_time
    if prediction.version is not None:
        meta["version"] = relayable(prediction.version, 80)
    return meta


# --- output files -------------------------------------------------------------------------------


def decode_data_uri(uri: str, max_bytes: int, provider: str = NAME) -> bytes:
    """The bytes of a base64 ``data:`` URI output."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64"):
        raise malformed("an output is a data URI that is not base64", provider=provider)
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise UpstreamMalformedError(f"{provider} image is over the {max_bytes} byte cap", provider=provider)
    try:
        return pybase64.b64decode(payload, validate=True)
    except ValueError:
        raise malformed("an output data URI has bad base64", provider=provider) from None


def image_format(data: bytes, content_type: str | None, provider: str = NAME) -> str:
    """The format by the bytes' magic; a file that is not an image (an error page) is malformed."""
    sniffed = sniff_format(data)
    if sniffed in IMAGE_FORMATS:
        return sniffed
    declared = (content_type or "unknown").split(";")[0].strip().lower()
    raise malformed(f"an output file is not an image (declared {relayable(declared, 60)})", provider=provider)


# --- errors -------------------------------------------------------------------------------------

# Input field -> our public parameter, for a 422's `invalid_fields`.
FIELD_PARAMS = {
    "aspect_ratio": "size",
    "megapixels": "size",
    "num_outputs": "n",
    "output_format": "output_format",
    "output_quality": "output_compression",
    "input_image": "image",
    "image_input": "image",
    "images": "image",
    "prompt": "prompt",
}


def _loads(raw: bytes) -> object:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _text(value: object, limit: int = MAX_RELAYED_CHARS) -> str:
    return relayable(value, limit) if isinstance(value, str) and value.strip() else ""


def _invalid_param(body: Mapping[str, Any]) -> str | None:
    """The public parameter a 422 names (``invalid_fields[0].field`` = ``input.aspect_ratio``)."""
    items = body.get("invalid_fields")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
    name = first.get("field") if first is not None else None
    if not isinstance(name, str) or not name:
        return None
    name = name.removeprefix("input.")
    return FIELD_PARAMS.get(name, relayable(name, _FIELD_CHARS))


def translate_error(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    provider: str = NAME,
    not_found: str = "does not serve this model",
) -> ImagegateError:
    """A problem-details reply as our error; a refused token is never quoted (it may echo the key)."""
    if status in (401, 403):
        return status_error(provider, status)
    body = _loads(raw)
    problem = body if isinstance(body, dict) else {}
    words = _text(problem.get("detail")) or _text(problem.get("title"))
    detail = f": {words}" if words else ""
    if status in (400, 422):
        return InvalidRequestError(f"{provider}: {words or f'HTTP {status}'}", param=_invalid_param(problem))
    retry_after = retry_after_seconds(headers)
    if status == 504:
        return UpstreamTimeoutError(
            f"{provider} timed out on its side{detail}",
            provider=provider,
            upstream_status=status,
            retry_after=retry_after,
        )
    return status_error(provider, status, detail=detail, retry_after=retry_after, not_found=not_found)
