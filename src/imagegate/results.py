"""After a provider answers: check and convert the images, price them, deliver them.

The typed outcome of a served request is a `Completion`: accounting settles from it and the web
layer renders from it (`imagegate.web.render`); nothing re-parses a rendered body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from imagegate.config import Settings
from imagegate.core import pricing
from imagegate.core.types import Decision, Dimensions, Offering, Plan
from imagegate.errors import ServiceUnavailableError, UpstreamMalformedError
from imagegate.imaging.convert import identify_with_pillow, transcode
from imagegate.imaging.encoded import ImageBytes
from imagegate.imaging.header import HEAD_BYTES, TAIL_BYTES, identify_header
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.svg import svg_size
from imagegate.providers.base import ProducedImage, ProviderResult
from imagegate.routing.router import Attempt
from imagegate.storage.blobs import BlobStore, StorageError, StoredFile
from imagegate.storage.signing import LinkSigner


@dataclass(frozen=True)
class FinalImage:
    """An image as the caller gets it; `content` keeps the provider's base64 text when it had one."""

    content: ImageBytes
    format: str
    width: int
    height: int
    revised_prompt: str | None = None

    @property
    def data(self) -> bytes:
        return self.content.raw

    @property
    def dims(self) -> Dimensions:
        return Dimensions(self.width, self.height)


@dataclass(frozen=True)
class Completion:
    """A served request: who served it, what was planned, the final images, their cost, every attempt."""

    request_id: str
    provider: str
    model: str
    mode: str
    plan: Plan
    result: ProviderResult
    images: tuple[FinalImage, ...]
    cost: Decimal | None
    attempts: tuple[Attempt, ...]
    passthrough: Mapping[str, object]
    created: int
    latency_ms: float
    routing: Decision | None = None
    inputs: tuple[Decision, ...] = ()  # how URL inputs were obtained (fetched by the gateway)

    @property
    def cost_text(self) -> str | None:
        return pricing.usd_text(self.cost)

    @property
    def size(self) -> str:
        first = self.images[0]
        return f"{first.width}x{first.height}"

    def fields(self) -> dict[str, Any]:
        """The OpenAI response fields besides `created` and `data`."""
        body: dict[str, Any] = {
            "size": self.size,
            "output_format": self.images[0].format,
            "quality": self.result.quality,
            "background": self.result.background,
        }
        if self.result.usage:
            usage = dict(self.result.usage)
            svg_usage = usage.pop("svg_usage", None)  # a sibling of `usage` in OpenAI's response
            if usage:
                body["usage"] = usage
            if svg_usage is not None:
                body["svg_usage"] = svg_usage
        options = self.plan.jobs[0].options
        identifier = options.get("safety_identifier") or options.get("user")
        if isinstance(identifier, str) and identifier:
            body["safety_identifier"] = identifier  # the effective one, as OpenAI reports it
        return body

    def meta(self) -> dict[str, Any]:
        """The `imagegate` extension object."""
        plan = self.plan
        return {
            "request_id": self.request_id,
            "provider": self.provider,
            "model": self.model,
            "provider_model": plan.jobs[0].provider_model,
            "mode": self.mode,
            "cost_usd": self.cost_text,
            "possibly_billed_attempts": sum(1 for a in self.attempts[:-1] if a.may_have_charged),
            "n": len(self.images),
            "decisions": [
                decision_json(d) for d in (*self.inputs, *plan.decisions, *([self.routing] if self.routing else []))
            ],
            "passthrough": dict(self.passthrough),
            "warnings": list(plan.warnings),
            "attempts": [a.as_dict() for a in self.attempts],
            "latency_ms": round(self.latency_ms, 1),
        }

    def headers(self) -> dict[str, str]:
        headers = {"x-imagegate-provider": self.provider}
        if (text := self.cost_text) is not None:
            headers["x-imagegate-cost-usd"] = text
        return headers


@dataclass(frozen=True)
class Partial:
    """A streamed preview, converted to the caller's format."""

    image: FinalImage
    index: int
    quality: str | None
    background: str | None


def priced_attempts(attempts: Sequence[Attempt], cost: Decimal | None) -> tuple[Attempt, ...]:
    """The last (successful) attempt costs `cost`; earlier ones 0, or unknown where they may have billed."""
    earlier = [dataclasses.replace(a, cost_usd=None if a.may_have_charged else "0") for a in attempts[:-1]]
    return (*earlier, dataclasses.replace(attempts[-1], cost_usd=pricing.usd_text(cost)))


async def finish_images(plan: Plan, result: ProviderResult, provider: str) -> tuple[FinalImage, ...]:
    """Verify what came back (count, readable and complete images) and convert to the caller's format."""
    expected = sum(job.n for job in plan.jobs)
    if len(result.images) != expected:
        raise UpstreamMalformedError(
            f"{provider} returned {len(result.images)} images, expected {expected}",
            provider=provider,
            may_have_charged=True,
        )
    if len(result.images) == 1:  # the common case: no task to schedule
        return (await convert_image(plan, result.images[0], provider),)
    return tuple(await asyncio.gather(*(convert_image(plan, image, provider) for image in result.images)))


async def convert_image(plan: Plan, image: ProducedImage, provider: str) -> FinalImage:
    """Identify from the header; decode and re-encode only when the format or compression must change."""
    content = image.content
    if plan.final_format == "svg":  # a vector image: never transcoded (no provider converts to SVG)
        return FinalImage(content, "svg", *_svg_size(content, provider), image.revised_prompt)
    try:
        fmt, width, height = await _identify(content)
        if fmt != plan.final_format or plan.convert:
            raw = content.raw
            data, width, height = await run_image_task(transcode, raw, plan.final_format, plan.final_compression)
            if data is not raw:
                content = ImageBytes(raw=data)
    except ValueError as exc:
        raise UpstreamMalformedError(
            f"{provider} returned an unreadable image: {exc}", provider=provider, may_have_charged=True
        ) from None
    return FinalImage(content, plan.final_format, width, height, image.revised_prompt)


def _svg_size(content: ImageBytes, provider: str) -> tuple[int, int]:
    """The declared size of an SVG the provider returned; anything else is a malformed reply."""
    size = svg_size(content.raw)
    if size is None:
        raise UpstreamMalformedError(
            f"{provider} returned something that is not a readable SVG document",
            provider=provider,
            may_have_charged=True,
        )
    return size


async def _identify(content: ImageBytes) -> tuple[str, int, int]:
    found = identify_header(content.head(HEAD_BYTES), len(content), content.tail(TAIL_BYTES))
    if found is not None:
        return found
    return await run_image_task(identify_with_pillow, content.raw)


def result_cost(offering: Offering, plan: Plan, result: ProviderResult, images: Sequence[FinalImage]) -> Decimal | None:
    if not result.billed:
        return Decimal(0)
    job = plan.jobs[0]
    dims = images[0].dims if images else None
    return pricing.actual_cost(offering, result.quality or job.quality, dims, job.size.tier, len(images), result.usage)


def decision_json(d: Decision) -> dict[str, Any]:
    return {"param": d.param, "asked": d.asked, "sent": d.sent, "handling": d.handling, "note": d.note or None}


@dataclass(frozen=True)
class Delivered:
    """One `data` item: inline (`url` None: the image's base64 goes in `b64_json`) or a signed link."""

    image: FinalImage
    url: str | None = None


class Delivery:
    """`b64_json` inline, or stored under a random id behind a signed, expiring link."""

    def __init__(self, settings: Settings, blobs: BlobStore, signer: LinkSigner) -> None:
        self.settings = settings
        self.blobs = blobs
        self.signer = signer

    async def deliver(self, response_format: str, images: Sequence[FinalImage], base_url: str) -> list[Delivered]:
        if response_format == "b64_json":
            return [Delivered(image) for image in images]
        stored: list[StoredFile] = []
        try:
            for image in images:
                stored.append(await self.blobs.put(image.data, image.format))
        except BaseException as exc:
            for item in stored:  # no link to half of the images
                with contextlib.suppress(StorageError):
                    await self.blobs.delete(item.id)
            if isinstance(exc, StorageError):
                raise ServiceUnavailableError(
                    "result storage is unavailable, so no link can be made; retry, or ask for b64_json",
                    param="response_format",
                    code="storage_unavailable",
                ) from exc
            raise
        root = self.settings.public_url or base_url.rstrip("/")
        items = []
        for image, file in zip(images, stored, strict=True):
            query, _ = self.signer.query(file.id)
            items.append(Delivered(image, f"{root}/v1/files/{file.id}?{query}"))
        return items


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
