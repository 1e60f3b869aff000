"""The image memory a request's outputs will hold: what the envelope reserves for them.

A generation of n images at WxH holds, per image, its decoded RGBA pixels (W*H*4 bytes, where the
provider or a format conversion decodes it) plus encoded copies (the file, its base64 for
`b64_json`, the JSON body): :data:`OUTPUT_BYTES_PER_PIXEL` covers both. The size is the largest
any candidate offering would produce (`auto` counts as the model's maximum resolution); a
streamed request also holds one partial image at a time.
"""

from __future__ import annotations

from imagegate.core.types import Dimensions
from imagegate.errors import InvalidRequestError
from imagegate.service import ImageService, Prepared

OUTPUT_BYTES_PER_PIXEL = 8


def output_pixels(service: ImageService, prepared: Prepared) -> int:
    """Pixels of every image the request will produce, for its most demanding candidate."""
    fallback = Dimensions.parse(prepared.model.max_resolution).pixels
    largest = 0
    for candidate in prepared.candidates:
        try:
            plan = service.plan_for(prepared, candidate)
        except InvalidRequestError:
            continue
        pixels = sum(job.n * (job.size.dims.pixels if job.size.dims else fallback) for job in plan.jobs)
        largest = max(largest, pixels)
    if largest == 0:  # no candidate can plan it: the service will refuse it; reserve the model's worst case
        largest = prepared.request.n * fallback
    if prepared.stream and prepared.partial_images:
        largest += largest // max(1, prepared.request.n)
    return largest


def output_bytes(service: ImageService, prepared: Prepared) -> int:
    return output_pixels(service, prepared) * OUTPUT_BYTES_PER_PIXEL
