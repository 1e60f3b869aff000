"""The image service: one request from validated parameters to an OpenAI-shaped response.

    prepare:  model lookup, size parsing, eligible offerings  (before any input image is decoded)
    start:    order the candidates, then per attempt (router: retries, failover, deadline)
              normalize for the offering, call it (fan-out for n) or open its stream, verify and
              convert the images; returns an `Execution` whose events end in a typed `Completion`
              (images, price, attempts) that accounting settles from and the web layer renders
    execute:  `start` then the completion, for a plain request
    deliver:  the `data` items of a completion (inline base64, or stored files behind signed links)
    estimate: the dry run: the same planning and pricing per candidate, calling nobody

The web layer calls `prepare`, decodes the input images against the limits, then `start` (or
`execute`), `deliver`, and renders.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from imagegate.core.quoting import quote
from imagegate.core.types import Decision, ModelInfo, ParamError, Plan, PublicRequest
from imagegate.errors import InvalidRequestError, ModelNotFoundError
from imagegate.execution import Execution, RequestFacts, Started, close_stream
from imagegate.providers.base import CallContext, EditInputs, ProviderResult, StreamDone
from imagegate.providers.registry import ProviderRegistry
from imagegate.results import Completion, Delivered, Delivery, decision_json, finish_images, merge_results
from imagegate.routing.breaker import BreakerBoard
from imagegate.routing.candidates import Candidate, Needs, eligible
from imagegate.routing.policy import LatencyStats, order_candidates, routing_decision
from imagegate.routing.router import Router
from imagegate.schemas import ImageParams, param_error, to_public
from imagegate.storage.blobs import BlobStore
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
    # plan_for's memo, by offering: planning is pure, and a request is planned by the footprint,
    # the reservation, the candidate ordering and the attempt.
    plans: dict[int, Plan | ParamError] = field(default_factory=dict, compare=False, repr=False)
    # The request's one deadline (loop time), fixed when first asked for: at admission to the
    # resource envelope, so time spent waiting there counts against it.
    deadline_at: list[float] = field(default_factory=list, compare=False, repr=False)
    # How input images given as URLs were obtained (reported with the other decisions).
    input_decisions: tuple[Decision, ...] = ()


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
        blobs: BlobStore,
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
        raise ModelNotFoundError(f"The model {quote(asked)} does not exist in this gateway's catalog.", param="model")

    def prepare(
        self, params: ImageParams, mode: Mode, images: int = 0, mask: bool = False, markup: bool = False
    ) -> Prepared:
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
            request = to_public(params, mode, images, mask, markup)
        except ParamError as exc:
            raise param_error(exc) from None
        needs = Needs(
            mode,
            images,
            mask,
            markup=markup,
            svg=request.output_format == "svg",
            animation=request.frame_count is not None,
        )
        candidates = eligible(model, needs, self.registry, self.today(), forced)
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
        key = id(candidate.offering)  # the offerings outlive the request (the catalog holds them)
        plan = prepared.plans.get(key)
        if plan is None:
            try:
                plan = plan_request(prepared.request, candidate.offering)
            except ParamError as exc:
                plan = exc
            prepared.plans[key] = plan
        if isinstance(plan, ParamError):
            raise param_error(plan) from None
        return plan

    def _estimator(self, prepared: Prepared) -> Callable[[Candidate], Decimal | None]:
        def estimate(candidate: Candidate) -> Decimal | None:
            try:
                return self.estimate_plan(self.plan_for(prepared, candidate), candidate)
            except InvalidRequestError:
                return None

        return estimate

    def ordered(self, prepared: Prepared) -> list[Candidate]:
        return order_candidates(
            prepared.candidates,
            prepared.model.id,
            self.settings.routing,
            self._estimator(prepared),
            self.latency,
            self.rng,
        )

    def deadline(self, prepared: Prepared) -> float:
        """The request's deadline: `request_timeout_seconds` from the first time it is asked for."""
        if not prepared.deadline_at:
            prepared.deadline_at.append(asyncio.get_running_loop().time() + self.settings.request_timeout_seconds)
        return prepared.deadline_at[0]

    async def start(self, prepared: Prepared, inputs: EditInputs | None, request_id: str) -> Execution:
        """Route until a provider produces a first event; the one entry for plain and streamed requests."""
        started_at = time.perf_counter()
        ctx = CallContext(request_id, self.deadline(prepared))

        async def attempt(candidate: Candidate) -> Started:
            plan = self.plan_for(prepared, candidate)
            if prepared.stream and candidate.offering.caps.streaming:
                job = dataclasses.replace(plan.jobs[0], partial_images=prepared.partial_images)
                rest = candidate.provider.stream(job, inputs, ctx).__aiter__()
                try:
                    return Started(plan, await rest.__anext__(), rest)
                except BaseException:
                    await close_stream(rest)
                    raise
            result = await self.call(candidate, plan, inputs, ctx)
            images = await finish_images(plan, result, candidate.offering.provider)
            return Started(plan, StreamDone(result), None, images)

        ordered = self.ordered(prepared)
        routing = routing_decision(
            ordered, prepared.model.id, self.settings.routing, self._estimator(prepared), self.latency
        )
        routed = await self.router.run(ordered, prepared.model.id, ctx.deadline, attempt)
        request = prepared.request
        facts = RequestFacts(
            request_id, prepared.model.id, request.mode, request.extra, routing, prepared.input_decisions
        )
        return Execution(facts, ctx, routed, started_at)

    async def execute(self, prepared: Prepared, inputs: EditInputs | None, request_id: str) -> Completion:
        """A plain (non-streamed) request: `start`, then its completion."""
        return await (await self.start(prepared, inputs, request_id)).completion()

    async def deliver(self, prepared: Prepared, completion: Completion, base_url: str) -> list[Delivered]:
        """The `data` items: inline base64, or stored files behind signed links."""
        return await self.delivery.deliver(prepared.response_format, completion.images, base_url)

    async def call(
        self, candidate: Candidate, plan: Plan, inputs: EditInputs | None, ctx: CallContext
    ) -> ProviderResult:
        """Run every job of the plan (n fan-out) concurrently; one failure cancels the others."""
        provider = candidate.provider
        if len(plan.jobs) == 1:  # no fan-out: no task to schedule
            return await provider.run(plan.jobs[0], inputs, ctx)
        tasks = [asyncio.create_task(provider.run(job, inputs, ctx)) for job in plan.jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return merge_results(results)

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
