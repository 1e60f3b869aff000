"""Who may call, and what each call costs them: auth, scope, rate limits, budgets and the ledger.

    authenticate -> admit (scope, rate limit, budget reservation + pending ledger row) -> work
                 -> settle (actual cost, attempts; reservation released; images refunded on failure)

The pending row is written, and the budget reserved, in one transaction BEFORE any upstream call;
when the database is unreachable the request is refused with 503 and nothing is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from imagegate.accounting.idempotency import StoredResponse
from imagegate.accounting.keys import KEY_PREFIX, ApiKey
from imagegate.accounting.ledger import LedgerEntry, Settlement
from imagegate.accounting.ratelimit import Limits, refusal
from imagegate.accounting.runtime import Runtime
from imagegate.errors import (
    AuthenticationError,
    BudgetExceededError,
    ImagegateError,
    PermissionDeniedError,
)
from imagegate.results import Completion
from imagegate.routing.router import Attempt
from imagegate.service import ImageService, Prepared
from imagegate.web.disconnect import ClientDisconnected

log = logging.getLogger("imagegate.accounting")
BEARER = "bearer "


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None = None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None


@dataclass
class Admission:
    caller: Caller
    prepared: Prepared
    request_id: str
    reserved: Decimal
    images_reserved: int
    settled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Gate:
    def __init__(self, runtime: Runtime, service: ImageService) -> None:
        self.runtime = runtime
        self.service = service
        self._finishing: set[asyncio.Task[None]] = set()  # settlements finished after a cancellation

    async def authenticate(self, authorization: str | None) -> Caller:
        """`keys` mode: a valid key is required. `open` mode: a request without an imagegate key
        (``igk_...``) is anonymous; one with such a key has it checked (unknown or revoked: 401) and
        is accounted to it, its scope, budget and limits included. One key lookup at most."""
        presented = None
        if authorization and authorization[: len(BEARER)].lower() == BEARER:
            presented = authorization[len(BEARER) :].strip()
        if self.runtime.settings.auth.mode == "open" and not (presented or "").startswith(KEY_PREFIX):
            return Caller()  # SDKs insist on some api_key ("unused"): that is not a key of ours
        await self.runtime.ready()
        key = await self.runtime.keys.authenticate(presented)
        if key is None:
            raise AuthenticationError(
                "Invalid or missing API key. Send 'Authorization: Bearer <key>'.",
                headers={"www-authenticate": "Bearer"},
            )
        return Caller(key)

    def reservation(self, prepared: Prepared) -> Decimal | None:
        """The most any candidate could cost (the budget reservation); None if a candidate is unpriced."""
        worst = Decimal(0)
        for candidate in prepared.candidates:
            try:
                plan = self.service.plan_for(prepared, candidate)
            except ImagegateError:
                continue
            estimate = self.service.estimate_plan(plan, candidate)
            if estimate is None:
                return None
            worst = max(worst, estimate)
        return worst

    async def admit_dry_run(self, caller: Caller, prepared: Prepared) -> None:
        """A dry run calls nobody and costs nothing: only the model scope applies."""
        self._check_scope(caller, prepared)

    def _check_scope(self, caller: Caller, prepared: Prepared) -> None:
        if caller.key is not None and not caller.key.allows_model(prepared.model.id):
            raise PermissionDeniedError(
                f"this key may not use {prepared.model.id}", param="model", code="model_not_allowed"
            )

    async def admit(self, caller: Caller, prepared: Prepared, request_id: str, idem_key: str | None) -> Admission:
        key = caller.key
        self._check_scope(caller, prepared)
        images = 0 if prepared.dry_run else prepared.request.n
        if key is not None and (key.rpm is not None or key.images_per_day is not None):
            verdict = await self.runtime.limiter.acquire(key.id, Limits(key.rpm, key.images_per_day), images)
            if not verdict.allowed:
                self.runtime.metrics.ratelimit_refusals.labels(reason=verdict.reason or "rpm").inc()
                raise refusal(verdict)
        try:
            return await self._reserve(caller, prepared, request_id, idem_key, images)
        except BaseException:
            if key is not None and images:
                await self.runtime.limiter.refund_images(key.id, images)
            raise

    async def _reserve(
        self, caller: Caller, prepared: Prepared, request_id: str, idem_key: str | None, images: int
    ) -> Admission:
        key = caller.key
        reserved = Decimal(0)
        if key is not None and key.budget is not None and not prepared.dry_run:
            estimate = self.reservation(prepared)
            if estimate is None:
                self.runtime.metrics.budget_refusals.inc()
                raise BudgetExceededError(
                    "this request has no known price, so a key with a budget cannot use it",
                    param="model",
                    code="unpriced_model",
                )
            reserved = estimate
        await self.runtime.ready()
        entry = LedgerEntry(
            request_id=request_id,
            key_id=caller.key_id,
            instance=self.runtime.instance,
            model=prepared.model.id,
            mode=prepared.request.mode,
            n=prepared.request.n,
            size=_asked_size(prepared),
            quality=prepared.request.quality,
            reserved=reserved,
            idempotency_key=idem_key,
        )
        try:
            await self.runtime.ledger.begin(entry, key)
        except BudgetExceededError:
            self.runtime.metrics.budget_refusals.inc()
            raise
        return Admission(caller, prepared, request_id, reserved, images)

    async def settle(
        self,
        admission: Admission,
        completion: Completion | None,
        error: BaseException | None,
        latency_ms: float,
        stored: StoredResponse | None = None,
    ) -> None:
        """Record the outcome: the typed completion, or the error (with its attempts). Shielded: a
        cancelled request still settles its row."""
        if admission.settled:
            return
        admission.settled = True
        settlement = _settlement(completion, error, latency_ms)
        status = 200 if completion is not None else error.status if isinstance(error, ImagegateError) else 500
        if settlement.status == "cancelled":
            status = 499
        await self._settle(admission, settlement, status, stored)

    async def settle_unrun(
        self, request_id: str, key: ApiKey | None, images_reserved: int, error: BaseException, latency_ms: float
    ) -> None:
        """Settle the pending row of a request that never ran (a job canceled or failed before its
        work started): nothing charged, the reservation and the counted images given back."""
        await self.runtime.ready()
        try:
            await self.runtime.ledger.settle(request_id, _settlement(None, error, latency_ms))
        except ImagegateError:
            log.exception("could not settle ledger row %s; reconciliation will", request_id)
        if key is not None and images_reserved > 0 and key.images_per_day is not None:
            await self.runtime.limiter.refund_images(key.id, images_reserved)

    async def _settle(
        self, admission: Admission, settlement: Settlement, status: int, stored: StoredResponse | None
    ) -> None:
        """Shielded without a task of its own: the ledger write is a shielded future (it commits even if
        this request is cancelled meanwhile); the rest then runs at once, or in a task if cancelled."""
        try:
            await self.runtime.ledger.settle(admission.request_id, settlement, stored)
        except ImagegateError:
            log.exception("could not settle ledger row %s; reconciliation will", admission.request_id)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._after_settle(admission, settlement, status))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            raise
        if self._refunds(admission, settlement):
            await asyncio.shield(self._after_settle(admission, settlement, status))
        else:
            self._observe(admission, settlement, status)

    @staticmethod
    def _refunds(admission: Admission, settlement: Settlement) -> bool:
        key = admission.caller.key
        return key is not None and key.images_per_day is not None and admission.images_reserved > settlement.images

    async def _after_settle(self, admission: Admission, settlement: Settlement, status: int) -> None:
        """Give back the images counted but not delivered, and record the request's metrics."""
        key = admission.caller.key
        if key is not None and self._refunds(admission, settlement):
            await self.runtime.limiter.refund_images(key.id, admission.images_reserved - settlement.images)
        self._observe(admission, settlement, status)

    def _observe(self, admission: Admission, settlement: Settlement, status: int) -> None:
        metrics = self.runtime.metrics
        model = admission.prepared.model.id
        metrics.observe_request(
            model,
            settlement.provider or "none",
            admission.prepared.request.mode,
            status,
            settlement.images,
            settlement.cost,
        )
        for attempt in settlement.attempts:
            metrics.observe_attempt(
                attempt["provider"],
                model,
                (attempt.get("latency_ms") or 0) / 1000,
                None if attempt.get("status") == "ok" else (attempt.get("code") or "error"),
            )


def _asked_size(prepared: Prepared) -> str | None:
    size = prepared.request.size
    if size.dims is not None:
        return str(size.dims)
    return size.ratio_text or ("auto" if size.auto else None)


def _settlement(completion: Completion | None, error: BaseException | None, latency_ms: float) -> Settlement:
    if completion is not None:
        return Settlement(
            status="succeeded",
            provider=completion.provider,
            images=len(completion.images),
            size=completion.size,
            quality=completion.result.quality,
            attempts=[a.as_dict() for a in completion.attempts],
            cost=completion.cost,
            error_code=None,
            latency_ms=latency_ms,
        )
    attempts = error.attempts if isinstance(error, ImagegateError) else ()
    cancelled = isinstance(error, asyncio.CancelledError | ClientDisconnected)
    code = (error.code if isinstance(error, ImagegateError) else None) or type(error).__name__
    return Settlement(
        status="cancelled" if cancelled else "failed",
        provider=None,
        images=0,
        size=None,
        quality=None,
        attempts=[a.as_dict() for a in attempts],
        cost=_failure_cost(attempts),
        error_code=code,
        latency_ms=latency_ms,
    )


def _failure_cost(attempts: Sequence[Attempt]) -> Decimal | None:
    """What a failed request cost: the sum of its attempts' prices when every attempt that may have
    been charged has one (a result that could not be delivered), else unknown (None), or 0 when no
    attempt can have been charged."""
    if any(a.may_have_charged and a.cost_usd is None for a in attempts):
        return None
    return sum((Decimal(a.cost_usd) for a in attempts if a.may_have_charged and a.cost_usd is not None), Decimal(0))
