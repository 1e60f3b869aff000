"""The job object of the API (`"object": "image.job"`), as bytes: GET, DELETE, 202 and webhooks.

The result body is stored as the bytes a synchronous request would have returned; it is spliced into
the job object as they are, never parsed again (a b64_json result is megabytes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from imagegate.jobs.store import TERMINAL, Job

WEBHOOK_RESULT_LIMIT = 1024 * 1024  # larger results are left out of webhooks: GET the job instead


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def job_fields(job: Job) -> dict[str, Any]:
    stage = "finished" if job.status in TERMINAL else job.status
    fields: dict[str, Any] = {
        "id": job.id,
        "object": "image.job",
        "status": job.status,
        "model": job.model,
        "mode": job.mode,
        "created_at": _unix(job.created_at),
        "started_at": _unix(job.started_at),
        "finished_at": _unix(job.finished_at),
        "request_id": job.request_id,
        "progress": {"stage": stage, "attempts": job.attempts},
        "cancel_requested": job.cancel_requested,
        "webhook": None,
    }
    if job.webhook_url is not None:
        fields["webhook"] = {
            "url": job.webhook_url,
            "status": job.webhook_state or "waiting",
            "attempts": job.webhook_attempts,
            "last_error": job.webhook_error,
        }
    if job.error is not None:
        fields["error"] = job.error.get("error")
        fields["error_status"] = job.error.get("status")
    return fields


def render_job(job: Job, *, result_limit: int | None = None) -> bytes:
    """The job object; `result` (the usual images body) spliced in when the job succeeded and the
    result fits `result_limit` (else `"result_omitted": true`)."""
    fields = job_fields(job)
    if job.status != "succeeded" or job.result is None:
        return orjson.dumps(fields)
    if result_limit is not None and len(job.result) > result_limit:
        return orjson.dumps({**fields, "result_omitted": True})
    head = orjson.dumps(fields)
    return head[:-1] + b',"result":' + job.result + b"}"


def webhook_payload(job: Job, timestamp: datetime) -> bytes:
    """Standard Webhooks' payload shape: `type`, `timestamp`, `data` (the job object)."""
    data = render_job(job, result_limit=WEBHOOK_RESULT_LIMIT)
    head = orjson.dumps({"type": f"image.job.{job.status}", "timestamp": timestamp.isoformat()})
    return head[:-1] + b',"data":' + data + b"}"
