"""The image service: one request from validated parameters to an OpenAI-shaped response.

    prepare:  model lookup, size parsing, eligible offerings  (before any input image is decoded)
    execute:  normalize for an offering, call it (fan-out for n), convert, price, deliver

The web layer calls `prepare`, decodes the input images against the limits, then `execute`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import pybase64

from imagegate.catalog.loader import Catalog
from imagegate.config import Settings
from imagegate.core import pricing
from imagegate.core.normalize import plan_request
from imagegate.core.types import Decision, Dimensions, ModelInfo, ParamError, Plan, ProviderJob, PublicRequest
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedParameterError,
    UpstreamError,
)
from imagegate.imaging.convert import identify, transcode
from imagegate.imaging.pool import run_image_task
from imagegate.providers.base import EditInputs, ProducedImage, ProviderResult
from imagegate.providers.registry import ProviderRegistry
from imagegate.routing.candidates import Candidate, Needs, eligible
from imagegate.schemas import ImageParams, param_error, to_public
from imagegate.storage.blobs import LocalBlobStore, StoredFile
from imagegate.storage.signing import LinkSigner

log = logging.getLogger("imagegate.service")
Mode = Literal["text-to-image", "image-edit"]


@dataclass(frozen=True)
class Prepared:
    model: ModelInfo
    request: PublicRequest
    candidates: list[Candidate]
    response_format: str
    asked_model: str


@dataclass(frozen=True)
class FinalImage:
    data: bytes
    format: str
    width: int
    height: int
    revised_prompt: str | None = None


@dataclass
class Attempt:
    provider: str
    status: str
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
        }


@dataclass
class ImageResponse:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ImageService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        registry: ProviderRegistry,
        blobs: LocalBlobStore,
        signer: LinkSigner,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.registry = registry
        self.blobs = blobs
        self.signer = signer
        self.today = today

    # --- prepare ---------------------------------------------------------------------------

    def resolve_model(self, name: str | None) -> tuple[ModelInfo, str | None]:
        asked = name or self.settings.default_model
        model = self.catalog.get(asked)
        if model is not None:
            return model, None
        provider, _, rest = asked.partition("/")
        if rest and (model := self.catalog.get(rest)) is not None:
            return model, provider
        raise ModelNotFoundError(
            f"The model '{asked}' does not exist in this gateway's catalog.", param="model"
        )

    def prepare(self, params: ImageParams, mode: Mode, images: int = 0, mask: bool = False) -> Prepared:
        model, forced = self.resolve_model(params.model)
        if mode not in model.modes:
            raise InvalidRequestError(
                f"{model.id} does not support {mode}", param="model", code="unsupported_mode"
            )
        if params.stream:
            raise UnsupportedParameterError("streaming is not available yet", param="stream")
        if mode == "image-edit":
            if images < 1:
                raise InvalidRequestError(
                    "an edit needs at least one input image", param="image", code="missing_required_parameter"
                )
            if images > model.max_input_images:
                raise InvalidRequestError(
                    f"{model.id} accepts at most {model.max_input_images} input images; got {images}",
                    param="image",
                    code="too_many_images",
                )
        try:
            request = to_public(params, mode, images, mask)
        except ParamError as exc:
            raise param_error(exc) from None
        candidates = eligible(model, Needs(mode, images, mask), self.registry, self.today(), forced)
        fmt = params.response_format or self.settings.default_response_format
        return Prepared(model, request, candidates, fmt, params.model or self.settings.default_model)

    # --- execute ---------------------------------------------------------------------------

    async def execute(
        self, prepared: Prepared, inputs: EditInputs | None, request_id: str, base_url: str
    ) -> ImageResponse:
        started = time.perf_counter()
        attempts: list[Attempt] = []
        last_error: ImagegateError | None = None
        for candidate in prepared.candidates:
            try:
                plan = plan_request(prepared.request, candidate.offering)
            except ParamError as exc:
                raise param_error(exc) from None
            t0 = time.perf_counter()
            try:
                result = await self._call(candidate, plan, inputs)
                images = await self._finish(plan, result)
            except UpstreamError as exc:
                attempts.append(Attempt(candidate.offering.provider, "error", _ms(t0), exc.message))
                last_error = exc
                continue
            attempts.append(Attempt(candidate.offering.provider, "ok", _ms(t0)))
            body = self._body(prepared, candidate, plan, result, images, attempts, request_id)
            data = await self._deliver(prepared.response_format, images, base_url)
            body["data"] = data
            body["imagegate"]["latency_ms"] = round(_ms(started), 1)
            headers = {"x-imagegate-provider": candidate.offering.provider}
            cost = body["imagegate"]["cost_usd"]
            if cost is not None:
                headers["x-imagegate-cost-usd"] = cost
            return ImageResponse(body, headers)
        assert last_error is not None
        raise last_error

    async def _call(self, candidate: Candidate, plan: Plan, inputs: EditInputs | None) -> ProviderResult:
        """Run every job of the plan (n fan-out) concurrently and merge the results."""
        provider = candidate.provider

        async def one(job: ProviderJob) -> ProviderResult:
            return await provider.run(job, inputs)

        results = await asyncio.gather(*(one(job) for job in plan.jobs))
        images = [image for result in results for image in result.images]
        usage = _sum_usage([r.usage for r in results])
        first = results[0]
        return ProviderResult(
            images=images,
            quality=first.quality,
            background=first.background,
            usage=usage,
            billed=any(r.billed for r in results),
        )

    async def _finish(self, plan: Plan, result: ProviderResult) -> list[FinalImage]:
        expected = sum(job.n for job in plan.jobs)
        if len(result.images) != expected:
            raise UpstreamError(f"provider returned {len(result.images)} images, expected {expected}")
        return list(await asyncio.gather(*(self._convert(plan, image) for image in result.images)))

    async def _convert(self, plan: Plan, image: ProducedImage) -> FinalImage:
        try:
            fmt, width, height = await run_image_task(identify, image.data)
            data = image.data
            if fmt != plan.final_format or plan.convert:
                data, width, height = await run_image_task(
                    transcode, image.data, plan.final_format, plan.final_compression
                )
        except ValueError as exc:
            raise UpstreamError(f"provider returned an unreadable image: {exc}") from None
        return FinalImage(data, plan.final_format, width, height, image.revised_prompt)

    def _body(
        self,
        prepared: Prepared,
        candidate: Candidate,
        plan: Plan,
        result: ProviderResult,
        images: Sequence[FinalImage],
        attempts: list[Attempt],
        request_id: str,
    ) -> dict[str, Any]:
        offering = candidate.offering
        first = images[0]
        job = plan.jobs[0]
        dims = _dims(first)
        cost = pricing.actual_cost(
            offering, result.quality or job.quality, dims, job.size.tier, len(images), result.usage
        )
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
        body["imagegate"] = {
            "request_id": request_id,
            "provider": offering.provider,
            "model": prepared.model.id,
            "provider_model": job.provider_model,
            "mode": prepared.request.mode,
            "cost_usd": pricing.usd_text(cost),
            "n": len(images),
            "decisions": [_decision(d) for d in plan.decisions],
            "passthrough": dict(prepared.request.extra),
            "warnings": list(plan.warnings),
            "attempts": [a.as_dict() for a in attempts],
        }
        return body

    async def _deliver(
        self, response_format: str, images: Sequence[FinalImage], base_url: str
    ) -> list[dict[str, Any]]:
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


def _dims(image: FinalImage) -> Dimensions:
    return Dimensions(image.width, image.height)


def _decision(d: Decision) -> dict[str, Any]:
    return {
        "param": d.param,
        "asked": d.asked,
        "sent": d.sent,
        "handling": d.handling,
        "note": d.note or None,
    }


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


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
