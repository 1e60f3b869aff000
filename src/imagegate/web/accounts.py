"""GET /v1/requests and /v1/usage for the calling key (every key in open mode); GET /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounting.gate import Gate
from imagegate.errors import InvalidRequestError
from imagegate.web.responses import JSONResponse

STATUSES = ("pending", "succeeded", "failed", "cancelled", "reconciled")
UNIX_SECONDS = re.compile(r"[0-9]{1,11}(\.[0-9]{1,9})?")
ISO_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt]|$)")


def parse_time(value: str | None, param: str) -> datetime | None:
    """ISO 8601 (`2026-11-25`, `2026-11-25T10:00:00Z`; naive means UTC) or Unix seconds (`1764000000`)."""
    if value is None:
        return None
    try:
        if UNIX_SECONDS.fullmatch(value):
            return datetime.fromtimestamp(float(value), UTC)
        if not ISO_START.match(value):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed.astimezone(UTC)  # an offset can push the edge years out of range
    except (ValueError, OverflowError, OSError):
        raise InvalidRequestError(f"{param} must be an ISO 8601 time or Unix seconds", param=param) from None
    return parsed


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise InvalidRequestError("limit must be between 1 and 100", param="limit")
    return int(value)


async def list_requests(request: Request) -> JSONResponse:
    gate: Gate = request.app.state.gate
    caller = await gate.authenticate(request.headers.get("authorization"))
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequestError(f"status must be one of {', '.join(STATUSES)}", param="status")
    await gate.runtime.ready()
    rows, cursor = await gate.runtime.ledger.list_requests(
        caller.key_id,
        parse_time(query.get("since"), "since"),
        parse_time(query.get("until"), "until"),
        query.get("model"),
        query.get("provider"),
        status,
        _limit(query.get("limit")),
        query.get("cursor"),
    )
    data = [{k: v for k, v in row.items() if k != "instance"} for row in rows]  # hostnames stay internal
    return JSONResponse({"object": "list", "data": data, "next_cursor": cursor, "has_more": cursor is not None})


async def usage(request: Request) -> JSONResponse:
    gate: Gate = request.app.state.gate
    caller = await gate.authenticate(request.headers.get("authorization"))
    query = request.query_params
    await gate.runtime.ready()
    totals = await gate.runtime.ledger.usage(
        caller.key_id, parse_time(query.get("since"), "since"), parse_time(query.get("until"), "until")
    )
    return JSONResponse({"object": "usage", "key_id": caller.key_id, **totals})


async def metrics(request: Request) -> Response:
    """Prometheus text. `keys` mode: a valid key is required, like every /v1 call (scrape with a bearer token)."""
    gate: Gate = request.app.state.gate
    await gate.authenticate(request.headers.get("authorization"))
    body, content_type = gate.runtime.metrics.render()
    return Response(body, media_type=content_type)
