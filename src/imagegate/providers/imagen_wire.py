"""Imagen `:predict` wire format on Vertex AI: request bodies, reply parsing, error translation.

Pure functions used by `imagegate.providers.vertex`. Facts (shared/providers.md section 4.2,
providers-2.md section 2; Vertex's Imagen model pages): one instance ``{"prompt"}``, and
``parameters`` {sampleCount 1-4, aspectRatio (1:1, 3:4, 4:3, 9:16, 16:9), sampleImageSize ("2K";
standard and ultra only, 1K is the default and is not sent), negativePrompt, seed, addWatermark,
personGeneration (DONT_ALLOW / ALLOW_ADULT / ALLOW_ALL), outputOptions {mimeType,
compressionQuality}, includeRaiReason}. Vertex refuses a seed while the SynthID watermark is on
("Seed is not supported when watermark is enabled"), so a seed is sent with ``addWatermark: false``
unless the caller set addWatermark. The reply is ``predictions[*]`` {bytesBase64Encoded, mimeType};
an image the safety filter removed comes back as ``{"raiFilteredReason"}`` only (with
includeRaiReason), or is missing. Errors have Google's shape: `google_wire.translate_error` reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pybase64

from imagegate.core.types import ProviderJob
from imagegate.errors import InvalidRequestError, ModerationBlockedError, UpstreamMalformedError
from imagegate.imaging.encoded import ImageBytes, InvalidBase64Error
from imagegate.imaging.probe import sniff_format
from imagegate.providers.google_wire import malformed
from imagegate.redaction import relayable

MAX_SAMPLES = 4
RATIOS = frozenset({"1:1", "3:4", "4:3", "9:16", "16:9"})
DEFAULT_SIZE = "1K"  # the API's own default sampleImageSize: never sent
IMAGE_FORMATS = frozenset({"png", "jpeg"})
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
PERSON_GENERATION = frozenset({"DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"})
# The gateway's snake_case names of Imagen parameters -> their wire names.
RENAMED = {
    "negative_prompt": "negativePrompt",
    "person_generation": "personGeneration",
    "add_watermark": "addWatermark",
    "enhance_prompt": "enhancePrompt",
    "safety_setting": "safetySetting",
    "guidance_scale": "guidanceScale",
    "include_safety_attributes": "includeSafetyAttributes",
}
# Set by the adapter from the job; a caller's `extra` (or `options`) never overrides them.
OWNED_FIELDS = frozenset(
    {
        "instances",
        "parameters",
        "prompt",
        "n",
        "size",
        "aspect_ratio",
        "resolution",
        "sampleCount",
        "aspectRatio",
        "sampleImageSize",
        "outputOptions",
        "includeRaiReason",
        "storageUri",
        "image",
        "images",
        "mask",
        "markup",
    }
)
MAX_FIELD_CHARS = 200


# --- requests ------------------------------------------------------------------------------------


def request_body(job: ProviderJob) -> dict[str, object]:
    """The `:predict` body for `job` (text-to-image only: the Imagen 4 generate models do not edit)."""
    if job.mode != "text-to-image":
        raise InvalidRequestError(f"{job.provider_model} only generates from text; it takes no image", param="image")
    if not 1 <= job.n <= MAX_SAMPLES:
        raise InvalidRequestError(f"{job.provider_model} makes 1 to {MAX_SAMPLES} images per call", param="n")
    parameters: dict[str, object] = {}
    for source in (job.extra, job.options):
        for name, value in source.items():
            wire = RENAMED.get(name, name)
            if wire in OWNED_FIELDS or name in OWNED_FIELDS or value is None:
                continue
            parameters[wire] = value
    if "personGeneration" in parameters:
        parameters["personGeneration"] = person_generation(parameters["personGeneration"])
    if "seed" in parameters:
        parameters["seed"] = _seed(parameters["seed"])
        parameters.setdefault("addWatermark", False)  # Vertex refuses a seed while the watermark is on
    parameters["sampleCount"] = job.n
    parameters.update(size_parameters(job))
    parameters["outputOptions"] = output_options(job)
    parameters["includeRaiReason"] = True
    return {"instances": [{"prompt": job.prompt}], "parameters": parameters}


def size_parameters(job: ProviderJob) -> dict[str, str]:
    """`aspectRatio` from the size system's ratio (or the chosen pixels reduced), `sampleImageSize`
    off the default tier only (Imagen 4 Fast has no 2K)."""
    size = job.size
    ratio = size.ratio
    if ratio is None and size.dims is not None and not size.auto:
        divisor = math.gcd(size.dims.width, size.dims.height)
        ratio = f"{size.dims.width // divisor}:{size.dims.height // divisor}"
    found: dict[str, str] = {}
    if ratio is not None:
        if ratio not in RATIOS:
            raise InvalidRequestError(
                f"{job.provider_model} draws only {', '.join(sorted(RATIOS))}, not {ratio}", param="size"
            )
        found["aspectRatio"] = ratio
    if size.tier is not None and size.tier.upper() != DEFAULT_SIZE:
        found["sampleImageSize"] = size.tier.upper()
    return found


def output_options(job: ProviderJob) -> dict[str, object]:
    """`outputOptions`: the MIME type of the job's format, and the JPEG quality when one is set."""
    mime = MIME_TYPES.get(job.output_format)
    if mime is None:
        raise InvalidRequestError(
            f"{job.provider_model} makes PNG or JPEG, not {job.output_format}", param="output_format"
        )
    options: dict[str, object] = {"mimeType": mime}
    if job.output_format == "jpeg" and job.output_compression is not None:
        options["compressionQuality"] = job.output_compression
    return options


def person_generation(value: object) -> str:
    """``allow_adult`` or ``ALLOW_ADULT`` as Imagen's enum; anything else refused (param person_generation)."""
    text = str(value).strip().upper()
    if text not in PERSON_GENERATION:
        allowed = ", ".join(sorted(name.lower() for name in PERSON_GENERATION))
        raise InvalidRequestError(
            f"person_generation {relayable(str(value), 40)!r} is not one of {allowed}", param="person_generation"
        )
    return text


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidRequestError("seed must be an integer from 0 to 4294967295", param="seed")
    return value


# --- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The images of a 200 reply (in order), and the reasons given for the ones the filter removed."""

    images: list[tuple[ImageBytes, str]]
    filtered: list[str]


def parse_reply(body: object, want: int, provider: str) -> Reply:
    """The images of `predictions`; the error a filtered answer is.

    Nothing back: `ModerationBlockedError` (Imagen answers so, with reasons or with no predictions
    at all, when its safety filter removes every image). Some back but fewer than `want`: an
    `UpstreamMalformedError` naming the filter (the gateway needs every image it asked for; a retry
    may pass the filter), billed for the ones that came.
    """
    if not isinstance(body, dict):
        raise malformed("the reply is not a JSON object", provider)
    if "error" in body:
        raise malformed("the reply carries an error instead of predictions", provider)
    predictions = body.get("predictions", [])
    if not isinstance(predictions, list):
        raise malformed("predictions is not a list", provider)
    images: list[tuple[ImageBytes, str]] = []
    filtered: list[str] = []
    for item in predictions:
        if not isinstance(item, dict):
            raise malformed("a prediction is not an object", provider)
        if "bytesBase64Encoded" in item:
            images.append(_image(item["bytesBase64Encoded"], provider))
        elif "raiFilteredReason" in item:
            reason = item["raiFilteredReason"]
            filtered.append(relayable(reason, MAX_FIELD_CHARS) if isinstance(reason, str) else "no reason given")
        # other entries (the prompt's safety attributes) carry no image
    if not images:
        detail = f": {'; '.join(filtered)}" if filtered else " (no image came back)"
        raise ModerationBlockedError(f"{provider}: the safety filter withheld the image{detail}")
    if len(images) < want:
        why = f": {'; '.join(filtered)}" if filtered else ""
        raise UpstreamMalformedError(
            f"{provider}: {len(images)} of {want} images came back; the safety filter withheld the rest{why}",
            provider=provider,
            upstream_status=200,
            may_have_charged=True,
        )
    return Reply(images=images[:want], filtered=filtered)


def _image(text: object, provider: str) -> tuple[ImageBytes, str]:
    """Validated base64 and the format its magic bytes name (the declared mimeType is not trusted)."""
    if not isinstance(text, str) or not text:
        raise malformed("a prediction has no image data", provider)
    try:
        content = ImageBytes.from_b64(text.encode("ascii", "replace"))
        head = pybase64.b64decode(text[:64], validate=True)
    except (InvalidBase64Error, ValueError):
        raise malformed("a prediction's image is not valid base64", provider) from None
    fmt = sniff_format(head)
    if fmt not in IMAGE_FORMATS:
        raise malformed("a prediction is not a PNG or JPEG image", provider)
    return content, fmt


def metadata_of(reply: Reply, parameters: Mapping[str, Any]) -> dict[str, object]:
    """What the caller may want to know: the seed used (Imagen returns none of its own)."""
    seed = parameters.get("seed")
    return {"seed": seed} if isinstance(seed, int) else {}
