"""Async jobs with webhooks across two instances behind HAProxy, one of them killed -9 mid-way.

50 jobs are accepted through the balancer, each with an Idempotency-Key and a `webhook_url`. After
the first 15 are accepted, gw-a is killed with SIGKILL and started again; its leased jobs are taken
over (by gw-b, or by gw-a once back) when their leases run out. The receiver answers 500 to the
first delivery of a fifth of the messages after recording it (a processed message whose answer was
lost), so those arrive twice. Asserted and printed: every job delivered, every signature valid
(checked with the `standardwebhooks` library), duplicates recognized by `webhook-id`, every job
succeeded and its ledger row settled once.

Run: ``.venv/bin/python -m pytest tests/deploy/test_jobs_deploy.py -q -s``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.deploy.conftest import WEBHOOK_SECRET, Deployment
from tests.deploy.test_two_instances import generation, http_client, until_answered

pytestmark = pytest.mark.deploy

JOBS = 50
KILL_AFTER = 15
DELIVERY_WITHIN_SECONDS = 90.0


async def test_fifty_jobs_with_webhooks_survive_a_kill_and_are_delivered_signed_once_each(
    deployment: Deployment,
) -> None:
    d = deployment
    d.ensure_up()
    url = f"{d.lb.url}/v1/images/generations"
    accepted: dict[str, str] = {}  # job id -> request id
    async with http_client() as client:

        async def submit(index: int) -> None:
            body = generation(f"job {index}", webhook_url=d.webhooks.url, response_format="url")
            outcome = await until_answered(client, url, body, d.headers(f"job-{uuid.uuid4().hex}"))
            assert outcome.status == 202, (outcome.attempts, outcome.body)
            assert outcome.body is not None
            accepted[outcome.body["id"]] = outcome.body["request_id"]

        await asyncio.gather(*(submit(i) for i in range(KILL_AFTER)))
        d.a.kill()
        killed_at = time.monotonic()
        rest = asyncio.gather(*(submit(i) for i in range(KILL_AFTER, JOBS)))
        await asyncio.sleep(1.0)
        d.a.start()  # same instance_id and port
        await rest
        restarted_after = time.monotonic() - killed_at

        deadline = time.monotonic() + DELIVERY_WITHIN_SECONDS
        while True:  # until every job reports its webhook delivered (a 500 answered is retried)
            jobs = {
                job_id: (await client.get(f"{d.lb.url}/v1/images/jobs/{job_id}", headers=d.headers())).json()
                for job_id in accepted
            }
            if all((job["webhook"] or {}).get("status") == "delivered" for job in jobs.values()):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)

    deliveries = [(h, b) for h, b in d.webhooks.snapshot() if h.get("webhook-id") in accepted]
    verifier = Webhook(WEBHOOK_SECRET)
    valid = 0
    delivered: Counter[str] = Counter()
    for headers, body in deliveries:
        try:
            event = verifier.verify(body, headers)
        except WebhookVerificationError:
            continue
        valid += 1
        assert event["data"]["id"] == headers["webhook-id"] and event["type"] == "image.job.succeeded"
        delivered[headers["webhook-id"]] += 1
    duplicates = sum(count - 1 for count in delivered.values())
    handled = len(delivered)  # what a receiver that de-duplicates on webhook-id processes
    statuses = Counter(job["status"] for job in jobs.values())
    webhook_states = Counter((job["webhook"] or {}).get("status") for job in jobs.values())
    taken_over = sum(1 for job in jobs.values() if job["progress"]["attempts"] > 1)
    rows = await d.ledger("id = ANY($1::text[])", list(accepted.values()))
    row_statuses = Counter(row["status"] for row in rows)
    print(
        f"\n[deploy-jobs] {JOBS} jobs through HAProxy; gw-a SIGKILLed after {KILL_AFTER} accepted, back after "
        f"{restarted_after:.1f} s; taken over after the kill: {taken_over}"
        f"\n[deploy-jobs] webhooks: deliveries {len(deliveries)}, signatures valid {valid}/{len(deliveries)}, "
        f"jobs delivered {handled}/{JOBS}, duplicates {duplicates} (recognized by webhook-id, handled once)"
        f"\n[deploy-jobs] jobs: {dict(statuses)}; webhook states: {dict(webhook_states)}; "
        f"ledger rows: {dict(row_statuses)} for {len(rows)} request ids"
    )
    assert len(accepted) == JOBS
    assert valid == len(deliveries) and handled == JOBS
    assert duplicates >= 1  # the receiver's lost answers were redelivered with the same id
    assert statuses == Counter({"succeeded": JOBS}) and webhook_states == Counter({"delivered": JOBS})
    assert len(rows) == JOBS and row_statuses == Counter({"succeeded": JOBS})  # one row each, settled once
    for job in jobs.values():
        assert orjson.dumps(job["result"]["data"])  # the result is readable through the balancer
