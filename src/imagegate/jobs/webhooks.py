"""Signed webhooks when a job finishes (Standard Webhooks, https://www.standardwebhooks.com).

Each finished job with a `webhook_url` gets one message, id = the job id, delivered at least once:
headers ``webhook-id``, ``webhook-timestamp`` (unix seconds of this attempt) and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the secret's
bytes). A 2xx answer delivers it; anything else (an error status, a refused or failed connection,
a timeout) is retried after each of `[webhooks] retry_delays_seconds`, then recorded as failed. The
URL passes the `[inputs]` URL policy on every attempt (pinned address, no redirects followed).
Any instance delivers: deliveries are claimed from the `jobs` table under a short lease.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta

import aiohttp

from imagegate.config import InputsSettings, WebhookSettings
from imagegate.errors import ImagegateError, InvalidRequestError
from imagegate.jobs.objects import webhook_payload
from imagegate.jobs.store import Job, JobStore
from imagegate.netfetch import FetchPolicy, post_json
from imagegate.redaction import current as current_redactor

log = logging.getLogger("imagegate.webhooks")
SECRET_PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_``-prefixed base64 secret."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise ValueError("the webhook secret must be 'whsec_' followed by base64") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def url_policy(inputs: InputsSettings, timeout: float) -> FetchPolicy:
    return FetchPolicy(
        allow_hosts=inputs.allow_hosts,
        deny_hosts=inputs.deny_hosts,
        allow_private=inputs.allow_private,
        allow_loopback=inputs.allow_loopback,
        total_timeout=timeout,
        connect_timeout=min(5.0, timeout),
        allowed_ports=inputs.allowed_ports,
    )


class Deliverer:
    def __init__(self, store: JobStore, settings: WebhookSettings, inputs: InputsSettings, secret: str) -> None:
        self.store = store
        self.delays = settings.retry_delays_seconds
        self.policy = url_policy(inputs, settings.timeout_seconds)
        self.lease = timedelta(seconds=settings.timeout_seconds + 30)
        self.key = secret_bytes(secret)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="imagegate-webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        """Claim deliveries while there are some; then wait to be woken: by a job finished here, or by
        the job runner's poll finding a delivery due (a retry, another instance's job)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while (job := await self.store.claim_webhook(self.lease)) is not None:
                    await self.deliver(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery loop failed; retrying")

    async def deliver(self, job: Job) -> None:
        """One attempt for a claimed delivery, and its outcome recorded."""
        assert job.webhook_url is not None
        now = datetime.now(UTC)
        body = webhook_payload(job, now)
        timestamp = int(now.timestamp())
        headers = {
            "webhook-id": job.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.key, job.id, timestamp, body),
        }
        final = False
        try:
            status = await post_json(job.webhook_url, body, headers, self.policy)
        except InvalidRequestError as exc:  # the URL is refused now (its host resolves elsewhere)
            error, final = exc.message, True
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"connection failed ({type(exc).__name__})"
        else:
            if 200 <= status < 300:
                await self.store.webhook_outcome(job.id, "delivered", None, None)
                return
            error = f"the receiver answered HTTP {status}"
        error = current_redactor().redact(error)
        attempt = job.webhook_attempts  # counted when claimed
        if final or attempt > len(self.delays):
            log.warning("webhook for %s given up after %d attempts: %s", job.id, attempt, error)
            await self.store.webhook_outcome(job.id, "failed", error, None)
            return
        retry_at = datetime.now(UTC) + timedelta(seconds=self.delays[attempt - 1])
        try:
            await self.store.webhook_outcome(job.id, "pending", error, retry_at)
        except ImagegateError as exc:
            log.warning("could not record the webhook outcome of %s (%s); it will be retried", job.id, exc.message)
