"""Input images for edits: data-URL decoding, header probing, then full decoding under the caps."""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import pybase64

from imagegate.config import Limits
from imagegate.errors import InvalidRequestError, UnsupportedParameterError
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.probe import ImageLimits, check_request_pixels, decode_image, decode_mask, probe_image
from imagegate.providers.base import EditInputs


@dataclass(frozen=True)
class RawInput:
    """Bytes of one uploaded image and the parameter name errors should point at."""

    param: str
    data: bytes


def image_limits(limits: Limits) -> ImageLimits:
    return ImageLimits(
        max_pixels=limits.max_image_pixels,
        max_request_pixels=limits.max_request_pixels,
        max_file_bytes=limits.max_file_bytes,
    )


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    """The bytes of a base64 ``data:`` URL. Remote URLs are not fetched in this version."""
    if not url.startswith("data:"):
        if url.startswith(("http://", "https://")):
            raise UnsupportedParameterError("only data: URLs are accepted for input images", param=param)
        raise InvalidRequestError("expected a data: URL", param=param)
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequestError("data URL must be base64-encoded (data:image/png;base64,...)", param=param)
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise InvalidRequestError("image is larger than the per-file cap", param=param, code="payload_too_large")
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("data URL is not valid base64", param=param) from None


async def decode_inputs(images: Sequence[RawInput], mask: RawInput | None, limits: Limits) -> EditInputs:
    caps = image_limits(limits)
    # Headers first, for every file: a bomb or a wrong type is refused before any pixel is decoded.
    infos = [probe_image(item.data, item.param, caps) for item in images]
    check_request_pixels(infos, caps)
    decoded = await asyncio.gather(*(run_image_task(decode_image, i.data, i.param, caps) for i in images))
    decoded_mask = None
    if mask is not None:
        first = decoded[0]
        decoded_mask = await run_image_task(decode_mask, mask.data, mask.param, (first.width, first.height), caps)
    return EditInputs(images=list(decoded), mask=decoded_mask)
