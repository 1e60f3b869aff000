"""Input images for edits: data-URL decoding, header probing, then full decoding under the caps.

`probe_inputs` reads every header (no pixel decoded) and works out what decoding will cost, so the
envelope can reserve it first; `decode_inputs` then decodes the images one after another, each
reduced on load to ``max_decoded_input_pixels`` (every catalog model produces at most about 17
megapixels and providers fit their inputs to the output, so more detail is never used): a
request holds at most one full-resolution image at a time, only while it is being decoded.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pybase64

from imagegate.config import InputsSettings, Limits
from imagegate.core.quoting import clip
from imagegate.core.types import Decision
from imagegate.errors import InvalidRequestError
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.probe import (
    DecodedImage,
    ImageInfo,
    ImageLimits,
    check_request_pixels,
    decode_image,
    decode_mask,
    probe_image,
    reduce_factor,
)
from imagegate.netfetch import FetchPolicy, fetch_image
from imagegate.providers.base import EditInputs

# Decoding one image holds its full-resolution pixels in the file's mode plus, for palette or
# 16-bit files, their RGB(A) conversion (up to 1 + 4 bytes a pixel), and the reduced copy.
DECODE_BYTES_PER_PIXEL = 5
# A decoded input while the request runs: RGBA pixels (4) plus the copy a provider re-encodes to
# send it upstream (a PNG at compress level 1 of a photo is about 2 bytes a pixel).
HELD_BYTES_PER_PIXEL = 6


@dataclass(frozen=True)
class RawInput:
    """Bytes of one uploaded image and the parameter name errors should point at."""

    param: str
    data: bytes
    source_url: str | None = None  # the http(s) URL the gateway fetched it from


def url_decisions(inputs: Sequence[RawInput]) -> tuple[Decision, ...]:
    """One decision per input fetched from an http(s) URL: the gateway fetched it and sends bytes."""
    return tuple(
        Decision(
            f"{item.param}.image_url",
            clip(item.source_url),
            "image bytes",
            "converted",
            "fetched by the gateway (checked address, capped, sniffed) and sent as image bytes; "
            "the provider never receives the URL",
        )
        for item in inputs
        if item.source_url is not None
    )


@dataclass(frozen=True)
class ProbedInputs:
    """Input images whose headers passed the caps, with what decoding them will hold."""

    images: Sequence[RawInput]
    mask: RawInput | None
    infos: Sequence[ImageInfo]
    mask_info: ImageInfo | None
    max_pixels: int

    def _held_pixels(self) -> list[int]:
        infos = [*self.infos, *([self.mask_info] if self.mask_info else [])]
        return [_reduced_pixels(info, self.max_pixels) for info in infos]

    @property
    def held_bytes(self) -> int:
        """Image memory the decoded inputs hold for the rest of the request."""
        return sum(self._held_pixels()) * HELD_BYTES_PER_PIXEL

    @property
    def decode_bytes(self) -> int:
        """Peak while decoding (one file at a time): the largest full image plus everything held."""
        infos = [*self.infos, *([self.mask_info] if self.mask_info else [])]
        largest = max(info.pixels for info in infos)
        return largest * DECODE_BYTES_PER_PIXEL + self.held_bytes

    @property
    def upload_bytes(self) -> int:
        return sum(len(item.data) for item in [*self.images, *([self.mask] if self.mask else [])])


def _reduced_pixels(info: ImageInfo, max_pixels: int) -> int:
    factor = reduce_factor(info.width, info.height, max_pixels)
    return math.ceil(info.width / factor) * math.ceil(info.height / factor)


def image_limits(limits: Limits) -> ImageLimits:
    return ImageLimits(
        max_pixels=limits.max_image_pixels,
        max_request_pixels=limits.max_request_pixels,
        max_file_bytes=limits.max_file_bytes,
    )


async def image_from_url(url: str, param: str, max_bytes: int, inputs: InputsSettings) -> bytes:
    """An input image given by URL: a base64 ``data:`` URL, or an http(s) URL fetched safely
    (`imagegate.netfetch`: pinned address, blocked ranges, redirects re-checked, capped, sniffed)."""
    if url.startswith(("http://", "https://")):
        policy = FetchPolicy(
            allow_hosts=inputs.allow_hosts,
            deny_hosts=inputs.deny_hosts,
            allow_private=inputs.allow_private,
            allow_loopback=inputs.allow_loopback,
            max_bytes=max_bytes,
            total_timeout=inputs.fetch_timeout_seconds,
            allowed_ports=inputs.allowed_ports,
        )
        return await fetch_image(url, param, policy)
    return decode_data_url(url, param, max_bytes)


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    """The bytes of a base64 ``data:`` URL (http(s) URLs go through `image_from_url`)."""
    if not url.startswith("data:"):
        raise InvalidRequestError("expected a data: URL or an http(s) URL", param=param)
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequestError("data URL must be base64-encoded (data:image/png;base64,...)", param=param)
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise InvalidRequestError("image is larger than the per-file cap", param=param, code="payload_too_large")
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("data URL is not valid base64", param=param) from None


def probe_inputs(images: Sequence[RawInput], mask: RawInput | None, limits: Limits) -> ProbedInputs:
    """Headers first, for every file: a bomb or a wrong type is refused before any pixel is decoded."""
    caps = image_limits(limits)
    infos = [probe_image(item.data, item.param, caps) for item in images]
    check_request_pixels(infos, caps)
    mask_info = probe_image(mask.data, mask.param, caps) if mask is not None else None
    return ProbedInputs(images, mask, infos, mask_info, limits.max_decoded_input_pixels)


async def decode_inputs(probed: ProbedInputs, limits: Limits) -> EditInputs:
    """Decode the probed inputs one at a time, each reduced on load; the mask is fitted to the first."""
    caps = image_limits(limits)
    decoded: list[DecodedImage] = []
    for item in probed.images:
        decoded.append(await run_image_task(decode_image, item.data, item.param, caps, probed.max_pixels))
    decoded_mask = None
    if probed.mask is not None:
        first = decoded[0]
        expected = first.source_size or (first.width, first.height)
        fit = (first.width, first.height) if first.source_size else None
        mask = probed.mask
        decoded_mask = await run_image_task(decode_mask, mask.data, mask.param, expected, caps, fit)
        if mask.param == "markup":  # the overlay slot holds the markup instead of a mask
            check_markup(decoded_mask)
            return EditInputs(images=decoded, markup=decoded_mask)
    return EditInputs(images=decoded, mask=decoded_mask)


def check_markup(markup: DecodedImage) -> None:
    """A markup overlay must let the image show through somewhere: at least one fully transparent pixel."""
    low, _ = markup.image.getchannel("A").getextrema()
    if low != 0:
        raise InvalidRequestError(
            "markup must be a transparent PNG overlay: it has no fully transparent pixel", param="markup"
        )
