"""After a provider answers: check and convert the images, price them, deliver, shape the body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pybase64

from imagegate.config import Settings
from imagegate.core import pricing
from imagegate.core.types import Decision, Dimensions, Offering, Plan
from imagegate.errors import UpstreamMalformedError
from imagegate.imaging.convert import identify, transcode
from imagegate.imaging.pool import run_image_task
from imagegate.providers.base import ProducedImage, ProviderResult
from imagegate.storage.blobs import LocalBlobStore, StoredFile
from imagegate.storage.signing import LinkSigner


@dataclass(frozen=True)
class FinalImage:
    data: bytes
    format: str
    width: int
    height: int
    revised_prompt: str | None = None

    @property
    def dims(self) -> Dimensions:
        return Dimensions(self.width, self.height)


@dataclass(frozen=True)
class Outcome:
    """A successful attempt: the plan used, what the provider said, the final images."""

    plan: Plan
    result: ProviderResult
    images: list[FinalImage]


async def finish_images(plan: Plan, result: ProviderResult, provider: str) -> list[FinalImage]:
    """Verify what came back (count, readable bytes) and convert to the caller's format."""
    expected = sum(job.n for job in plan.jobs)
    if len(result.images) != expected:
        raise UpstreamMalformedError(
            f"{provider} returned {len(result.images)} images, expected {expected}",
            provider=provider,
            may_have_charged=True,
        )
    return list(await asyncio.gather(*(convert_image(plan, image, provider) for image in result.images)))


async def convert_image(plan: Plan, image: ProducedImage, provider: str) -> FinalImage:
    try:
        fmt, width, height = await run_image_task(identify, image.data)
        data = image.data
        if fmt != plan.final_format or plan.convert:
            data, width, height = await run_image_task(transcode, image.data, plan.final_format, plan.final_compression)
    except ValueError as exc:
        raise UpstreamMalformedError(
            f"{provider} returned an unreadable image: {exc}", provider=provider, may_have_charged=True
        ) from None
    return FinalImage(data, plan.final_format, width, height, image.revised_prompt)


def result_cost(offering: Offering, plan: Plan, result: ProviderResult, images: Sequence[FinalImage]) -> Decimal | None:
    if not result.billed:
        return Decimal(0)
    job = plan.jobs[0]
    dims = images[0].dims if images else None
    return pricing.actual_cost(offering, result.quality or job.quality, dims, job.size.tier, len(images), result.usage)


def decision_json(d: Decision) -> dict[str, Any]:
    return {"param": d.param, "asked": d.asked, "sent": d.sent, "handling": d.handling, "note": d.note or None}


def base_body(images: Sequence[FinalImage], result: ProviderResult) -> dict[str, Any]:
    first = images[0]
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [],
        "size": f"{first.width}x{first.height}",
        "output_format": first.format,
        "quality": result.quality,
        "background": result.background,
    }
    if result.usage:
        body["usage"] = dict(result.usage)
    return body


class Delivery:
    """`b64_json` inline, or stored under a random id behind a signed, expiring link."""

    def __init__(self, settings: Settings, blobs: LocalBlobStore, signer: LinkSigner) -> None:
        self.settings = settings
        self.blobs = blobs
        self.signer = signer

    async def deliver(self, response_format: str, images: Sequence[FinalImage], base_url: str) -> list[dict[str, Any]]:
        if response_format == "b64_json":
            return [_item({"b64_json": pybase64.b64encode(i.data).decode("ascii")}, i) for i in images]
        stored: list[StoredFile] = []
        try:
            for image in images:
                stored.append(await self.blobs.put(image.data, image.format))
        except BaseException:
            for item in stored:
                await self.blobs.delete(item.id)
            raise
        root = self.settings.public_url or base_url.rstrip("/")
        items = []
        for image, file in zip(images, stored, strict=True):
            query, _ = self.signer.query(file.id)
            items.append(_item({"url": f"{root}/v1/files/{file.id}?{query}"}, image))
        return items


def _item(item: dict[str, Any], image: FinalImage) -> dict[str, Any]:
    if image.revised_prompt:
        item["revised_prompt"] = image.revised_prompt
    return item


def merge_results(results: Sequence[ProviderResult]) -> ProviderResult:
    """One result from the parallel calls of an `n` fan-out."""
    images = [image for result in results for image in result.images]
    usage = _sum_usage([r.usage for r in results])
    first = results[0]
    return ProviderResult(
        images=images,
        quality=first.quality,
        background=first.background,
        usage=usage,
        upstream_request_id=first.upstream_request_id,
        billed=any(r.billed for r in results),
    )


def _sum_usage(usages: Sequence[Any]) -> dict[str, Any] | None:
    present = [u for u in usages if u]
    if not present:
        return None
    if len(present) == 1:
        return dict(present[0])
    return _merge_counts(present)


def _merge_counts(items: Sequence[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if isinstance(value, dict):
                merged[key] = _merge_counts([merged.get(key, {}), value])
            elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged
