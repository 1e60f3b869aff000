"""The image service: one request from validated parameters to an OpenAI-shaped response.

    prepare:  model lookup, size parsing, eligible offerings  (before any input image is decoded)
    execute:  order the candidates, then per attempt (router: retries, failover, deadline)
              normalize for the offering, call it (fan-out for n), verify and convert the images;
              then price, deliver, and shape the body
    estimate: the dry run: the same planning and pricing per candidate, calling nobody

The web layer calls `prepare`, decodes the input images against the limits, then `execute`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from imagegate.catalog.loader import Catalog
from imagegate.config import Settings
from imagegate.core import pricing
from imagegate.core.normalize import plan_request
from imagegate.core.types import ModelInfo, ParamError, Plan, PublicRequest
from imagegate.errors import InvalidRequestError, ModelNotFoundError
from imagegate.providers.base import CallContext, EditInputs, ProviderResult
from imagegate.providers.registry import ProviderRegistry
from imagegate.results import (
    Delivery,
    Outcome,
    base_body,
    decision_json,
    finish_images,
    merge_results,
    result_cost,
)
from imagegate.routing.breaker import BreakerBoard
from imagegate.routing.candidates import Candidate, Needs, eligible
from imagegate.routing.policy import LatencyStats, order_candidates
from imagegate.routing.router import Attempt, Router
from imagegate.schemas import ImageParams, param_error, to_public
from imagegate.storage.blobs import LocalBlobStore
from imagegate.storage.signing import LinkSigner

Mode = Literal["text-to-image", "image-edit"]


@dataclass(frozen=True)
class Prepared:
    model: ModelInfo
    request: PublicRequest
    candidates: list[Candidate]
    response_format: str
    asked_model: str
    stream: bool = False
    partial_images: int = 0
    dry_run: bool = False


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
        self.today = today
        self.delivery = Delivery(settings, blobs, signer)
        routing = settings.routing
        self.board = BreakerBoard(
            routing.breaker_failures, routing.breaker_window_seconds, routing.breaker_cooldown_seconds
        )
        self.latency = LatencyStats()
        self.rng = random.Random()
        self.router = Router(routing, self.board, self.latency, self.rng)

    # --- prepare ---------------------------------------------------------------------------

    def resolve_model(self, name: str | None) -> tuple[ModelInfo, str | None]:
        asked = name or self.settings.default_model
        model = self.catalog.get(asked)
        if model is not None:
            return model, None
        provider, _, rest = asked.partition("/")
        if rest and (model := self.catalog.get(rest)) is not None:
            return model, provider
        raise ModelNotFoundError(f"The model '{asked}' does not exist in this gateway's catalog.", param="model")

    def prepare(self, params: ImageParams, mode: Mode, images: int = 0, mask: bool = False) -> Prepared:
        model, forced = self.resolve_model(params.model)
        if mode not in model.modes:
            raise InvalidRequestError(f"{model.id} does not support {mode}", param="model", code="unsupported_mode")
        if params.stream and params.n > 1:
            raise InvalidRequestError("streaming returns one image; use n=1 with stream=true", param="n")
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
        return Prepared(
            model,
            request,
            candidates,
            fmt,
            params.model or self.settings.default_model,
            stream=bool(params.stream),
            partial_images=params.partial_images or 0,
            dry_run=bool(params.dry_run),
        )

    # --- execute ---------------------------------------------------------------------------

    def plan_for(self, prepared: Prepared, candidate: Candidate) -> Plan:
        try:
            return plan_request(prepared.request, candidate.offering)
        except ParamError as exc:
            raise param_error(exc) from None

    def ordered(self, prepared: Prepared) -> list[Candidate]:
        def estimate(candidate: Candidate) -> Decimal | None:
            try:
                return self.estimate_plan(self.plan_for(prepared, candidate), candidate)
            except InvalidRequestError:
                return None

        return order_candidates(
            prepared.candidates, prepared.model.id, self.settings.routing, estimate, self.latency, self.rng
        )

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.request_timeout_seconds

    async def execute(
        self, prepared: Prepared, inputs: EditInputs | None, request_id: str, base_url: str
    ) -> ImageResponse:
        started = time.perf_counter()
        ctx = CallContext(request_id, self.deadline())

        async def attempt(candidate: Candidate) -> Outcome:
            plan = self.plan_for(prepared, candidate)
            result = await self.call(candidate, plan, inputs, ctx)
            images = await finish_images(plan, result, candidate.offering.provider)
            return Outcome(plan, result, images)

        routed = await self.router.run(self.ordered(prepared), prepared.model.id, ctx.deadline, attempt)
        outcome, candidate = routed.value, routed.candidate
        cost = result_cost(candidate.offering, outcome.plan, outcome.result, outcome.images)
        body = self.body(prepared, candidate, outcome, cost, routed.attempts, request_id)
        body["data"] = await self.delivery.deliver(prepared.response_format, outcome.images, base_url)
        body["imagegate"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return ImageResponse(body, self.headers(candidate, cost))

    async def call(
        self, candidate: Candidate, plan: Plan, inputs: EditInputs | None, ctx: CallContext
    ) -> ProviderResult:
        """Run every job of the plan (n fan-out) concurrently; one failure cancels the others."""
        provider = candidate.provider
        tasks = [asyncio.create_task(provider.run(job, inputs, ctx)) for job in plan.jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return merge_results(results)

    def headers(self, candidate: Candidate, cost: Decimal | None) -> dict[str, str]:
        headers = {"x-imagegate-provider": candidate.offering.provider}
        text = pricing.usd_text(cost)
        if text is not None:
            headers["x-imagegate-cost-usd"] = text
        return headers

    def body(
        self,
        prepared: Prepared,
        candidate: Candidate,
        outcome: Outcome,
        cost: Decimal | None,
        attempts: list[Attempt],
        request_id: str,
    ) -> dict[str, Any]:
        plan = outcome.plan
        attempts[-1].cost_usd = pricing.usd_text(cost)
        possible = [a for a in attempts[:-1] if a.may_have_charged]
        for failed in attempts[:-1]:
            failed.cost_usd = None if failed.may_have_charged else "0"
        body = base_body(outcome.images, outcome.result)
        body["imagegate"] = {
            "request_id": request_id,
            "provider": candidate.offering.provider,
            "model": prepared.model.id,
            "provider_model": plan.jobs[0].provider_model,
            "mode": prepared.request.mode,
            "cost_usd": pricing.usd_text(cost),
            "possibly_billed_attempts": len(possible),
            "n": len(outcome.images),
            "decisions": [decision_json(d) for d in plan.decisions],
            "passthrough": dict(prepared.request.extra),
            "warnings": list(plan.warnings),
            "attempts": [a.as_dict() for a in attempts],
        }
        return body

    # --- dry run -------------------------------------------------------------------------------

    def estimate_plan(self, plan: Plan, candidate: Candidate) -> Decimal | None:
        job = plan.jobs[0]
        n = sum(j.n for j in plan.jobs)
        return pricing.estimate(candidate.offering, job.quality, job.size.dims, job.size.tier, n)

    def estimate(self, prepared: Prepared, request_id: str) -> ImageResponse:
        rows = []
        for candidate in self.ordered(prepared):
            provider = candidate.offering.provider
            row: dict[str, Any] = {"provider": provider, "available": True}
            if self.board.is_disabled(provider):
                row["available"] = False
            try:
                plan = self.plan_for(prepared, candidate)
            except InvalidRequestError as exc:
                row.update(available=False, error={"message": exc.message, "param": exc.param})
                rows.append(row)
                continue
            job = plan.jobs[0]
            row.update(
                provider_model=job.provider_model,
                estimated_cost_usd=pricing.usd_text(self.estimate_plan(plan, candidate)),
                size=job.size.size_text,
                n=sum(j.n for j in plan.jobs),
                calls=len(plan.jobs),
                output_format=plan.final_format,
                decisions=[decision_json(d) for d in plan.decisions],
                warnings=list(plan.warnings),
            )
            rows.append(row)
        body = {
            "object": "imagegate.estimate",
            "dry_run": True,
            "created": int(time.time()),
            "model": prepared.model.id,
            "mode": prepared.request.mode,
            "candidates": rows,
            "imagegate": {"request_id": request_id},
        }
        return ImageResponse(body)
