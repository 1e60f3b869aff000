"""Async jobs over the API, in-process with the app's lifespan (workers and webhook deliverer running)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from imagegate.config import AuthSettings, ProviderSettings, Settings
from imagegate.jobs.store import jobs
from imagegate.storage.schema import requests
from imagegate.web.app import create_app
from tests.fakes.openai import FakeOpenAI
from tests.helpers import png_bytes
from tests.local_server import local_app

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
ASYNC = {"Prefer": "respond-async"}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OPENAI_KEY = "sk-jobs-test-key"


def _settings(tmp_path, **extra: Any) -> Settings:
    data: dict[str, Any] = {"data_dir": tmp_path, "signing_key": "k", "jobs": {"poll_interval_seconds": 0.05}}
    data.update(extra)
    return Settings.model_validate(data)


def _openai_settings(tmp_path, url: str) -> Settings:
    """The fake OpenAI as the only provider of gpt-image-1."""
    return _settings(
        tmp_path,
        providers={"openai": ProviderSettings(base_url=url, api_key=OPENAI_KEY)},
        catalog={"status": {"gpt-image-1": {"openai": "active"}}},
        sandbox={"enabled": False},
    )


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        http.app = app  # type: ignore[attr-defined]
        yield http


async def wait_for(
    http: httpx.AsyncClient,
    location: str,
    done: Callable[[dict], bool],
    seconds: float = 10.0,
    headers: dict[str, str] | None = None,
) -> dict:
    until = time.monotonic() + seconds
    while True:
        body = (await http.get(location, headers=headers)).json()
        if done(body) or time.monotonic() > until:
            return body
        await asyncio.sleep(0.02)


def finished(body: dict) -> bool:
    return body["status"] in ("succeeded", "failed", "canceled")


async def ledger_rows(http: httpx.AsyncClient) -> list[Any]:
    db = await http.app.state.runtime.ready()  # type: ignore[attr-defined]
    async with db.transaction(readonly=True) as conn:
        return list((await conn.execute(select(requests))).all())


async def test_a_generation_as_a_job_by_header_and_by_body(tmp_path) -> None:
    async with gateway(_settings(tmp_path)) as http:
        accepted = await http.post(GEN, json={"prompt": "a lighthouse", "model": "gpt-image-1"}, headers=ASYNC)
        assert accepted.status_code == 202
        job = accepted.json()
        assert job["object"] == "image.job" and job["status"] == "queued" and job["id"].startswith("job_")
        assert accepted.headers["location"] == f"/v1/images/jobs/{job['id']}"
        assert accepted.headers["preference-applied"] == "respond-async"
        done = await wait_for(http, accepted.headers["location"], finished)
        assert done["status"] == "succeeded" and done["progress"] == {"stage": "finished", "attempts": 1}
        assert len(done["result"]["data"]) == 1 and done["result"]["data"][0]["url"].startswith("http://gw/v1/files/")
        assert (await http.get(done["result"]["data"][0]["url"])).status_code == 200

        by_body = await http.post(GEN, json={"prompt": "x", "async": True, "n": 2, "response_format": "b64_json"})
        assert by_body.status_code == 202
        done = await wait_for(http, by_body.headers["location"], finished)
        assert done["status"] == "succeeded" and [bool(d["b64_json"]) for d in done["result"]["data"]] == [True, True]
        rows = await ledger_rows(http)
        assert sorted(r.status for r in rows) == ["succeeded", "succeeded"]
        assert {r.id for r in rows} == {done["request_id"], accepted.json()["request_id"]}


async def test_async_false_in_the_body_wins_over_the_header(tmp_path) -> None:
    async with gateway(_settings(tmp_path)) as http:
        answer = await http.post(GEN, json={"prompt": "x", "async": False}, headers=ASYNC)
        assert answer.status_code == 200 and "data" in answer.json()


async def test_an_edit_as_a_job_keeps_its_inputs_until_it_is_done(tmp_path) -> None:
    async with gateway(_settings(tmp_path)) as http:
        files = [
            ("image[]", ("a.png", png_bytes(64, 64), "image/png")),
            ("image[]", ("b.png", png_bytes(32, 32), "image/png")),
        ]
        accepted = await http.post(EDIT, data={"prompt": "merge", "model": "gpt-image-1"}, files=files, headers=ASYNC)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        done = await wait_for(http, accepted.headers["location"], finished)
        assert done["status"] == "succeeded" and done["mode"] == "image-edit"
        db = await http.app.state.runtime.ready()  # type: ignore[attr-defined]
        async with db.transaction(readonly=True) as conn:
            stored = orjson.loads((await conn.execute(select(jobs.c.inputs).where(jobs.c.id == job_id))).scalar())
        assert [item[0] for item in stored] == ["image[0]", "image[1]"]
        blobs = http.app.state.blobs  # type: ignore[attr-defined]
        for _ in range(100):  # deleted once the job finished
            if all([await blobs.lookup(item[1]) is None for item in stored]):
                break
            await asyncio.sleep(0.02)
        assert all([await blobs.lookup(item[1]) is None for item in stored])


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"prompt": "x", "stream": True}, ASYNC, "stream"),
        ({"prompt": "x", "dry_run": True}, ASYNC, "async"),
        ({"prompt": "x", "async": "yes"}, {}, "async"),
        ({"prompt": "x", "webhook_url": "ftp://example.com/hook"}, {}, "webhook_url"),
        ({"prompt": "x", "webhook_url": "not a url"}, {}, "webhook_url"),
        ({"prompt": "x", "webhook_url": "http://user:pw@example.com/hook"}, {}, "webhook_url"),
        ({"prompt": "x", "webhook_url": "http://" + "a" * 2100 + ".com/"}, {}, "webhook_url"),
        ({"prompt": "", "async": True}, {}, "prompt"),
    ],
)
async def test_bad_async_requests_are_refused_before_anything_is_written(tmp_path, body, headers, param) -> None:
    async with gateway(_settings(tmp_path)) as http:
        answer = await http.post(GEN, json=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param
        assert await ledger_rows(http) == []


async def test_a_job_is_visible_only_to_its_key(tmp_path) -> None:
    settings = _settings(tmp_path, auth={"mode": "keys"})
    async with gateway(settings) as http:
        keys = http.app.state.runtime  # type: ignore[attr-defined]
        await keys.ready()
        _, secret_a = await keys.keys.create("a", None, None, None, None)
        _, secret_b = await keys.keys.create("b", None, None, None, None)
        a, b = {"authorization": f"Bearer {secret_a}"}, {"authorization": f"Bearer {secret_b}"}
        accepted = await http.post(GEN, json={"prompt": "x"}, headers={**ASYNC, **a})
        location = accepted.headers["location"]
        assert (await http.get(location, headers=a)).status_code == 200
        for other in (b, {}):
            answer = await http.get(location, headers=other)
            assert answer.status_code in (401, 404)
        assert (await http.delete(location, headers=b)).status_code == 404
        missing = await http.get("/v1/images/jobs/job_nope", headers=a)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


async def test_canceling_a_queued_job_settles_nothing_and_a_second_cancel_conflicts(tmp_path) -> None:
    async with gateway(_settings(tmp_path, jobs={"workers": 0})) as http:
        accepted = await http.post(GEN, json={"prompt": "x"}, headers=ASYNC)
        canceled = await http.delete(accepted.headers["location"])
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        again = await http.delete(accepted.headers["location"])
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
        [row] = await ledger_rows(http)
        assert row.status == "cancelled" and row.cost == 0


async def test_idempotent_accept_returns_the_same_job(tmp_path) -> None:
    async with gateway(_settings(tmp_path, jobs={"workers": 0})) as http:
        headers = {**ASYNC, "Idempotency-Key": "job-1"}
        first = await http.post(GEN, json={"prompt": "x"}, headers=headers)
        second = await http.post(GEN, json={"prompt": "x"}, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"] and second.headers["idempotent-replayed"] == "true"
        assert len(await ledger_rows(http)) == 1


async def test_a_budget_is_reserved_at_accept_and_settled_once_by_the_worker(tmp_path) -> None:
    settings = _settings(tmp_path, auth={"mode": "keys"}, jobs={"workers": 0}, sandbox={"simulate_prices": True})
    async with gateway(settings) as http:
        runtime = http.app.state.runtime  # type: ignore[attr-defined]
        await runtime.ready()
        key, secret = await runtime.keys.create("budget", Decimal(5), None, None, None)
        auth = {"authorization": f"Bearer {secret}"}
        accepted = await http.post(GEN, json={"prompt": "x", "quality": "high"}, headers={**ASYNC, **auth})
        assert accepted.status_code == 202, accepted.text
        held = await runtime.keys.get(key.id)
        assert held.reserved > 0 and held.spent == 0
        http.app.state.job_runner._count = 1  # type: ignore[attr-defined]
        http.app.state.job_runner.start()  # type: ignore[attr-defined]
        done = await wait_for(http, accepted.headers["location"], finished, seconds=20, headers=auth)
        assert done["status"] == "succeeded"
        after = await runtime.keys.get(key.id)
        [row] = await ledger_rows(http)
        assert after.reserved == 0 and after.spent == row.cost and row.cost > 0


async def test_a_failed_upstream_fails_the_job_with_the_openai_error(tmp_path) -> None:
    fake = FakeOpenAI(key=OPENAI_KEY)
    url = await fake.start()
    try:
        from tests.fakes.faults import Fault

        fake.script.push(
            Fault(
                "status",
                status=400,
                body={
                    "error": {"message": "bad prompt", "type": "invalid_request_error", "param": "prompt", "code": None}
                },
            )
        )
        settings = _openai_settings(tmp_path, url)
        async with gateway(settings) as http:
            accepted = await http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"}, headers=ASYNC)
            done = await wait_for(http, accepted.headers["location"], finished)
            assert done["status"] == "failed" and done["error_status"] == 400
            assert done["error"]["param"] == "prompt" and OPENAI_KEY not in str(done)
            [row] = await ledger_rows(http)
            assert row.status == "failed"
    finally:
        await fake.stop()


async def test_canceling_a_running_job_cancels_the_upstream_call(tmp_path) -> None:
    fake = FakeOpenAI(key=OPENAI_KEY)
    fake.latency = 30.0
    url = await fake.start()
    try:
        settings = _openai_settings(tmp_path, url)
        async with gateway(settings) as http:
            accepted = await http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"}, headers=ASYNC)
            location = accepted.headers["location"]
            running = await wait_for(http, location, lambda b: b["status"] == "running")
            assert running["status"] == "running"
            await asyncio.sleep(0.2)  # the upstream call is open
            started = time.monotonic()
            canceled = await http.delete(location)
            assert canceled.json()["status"] == "canceled" and time.monotonic() - started < 5
            [row] = await ledger_rows(http)
            assert row.status == "cancelled"
    finally:
        await fake.stop()


# --- webhooks ------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the scripted statuses, then 204."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 204)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _webhook_settings(tmp_path, port: int, delays: tuple[float, ...] = (0.05, 0.05, 0.05)) -> Settings:
    return _settings(
        tmp_path,
        inputs={"allow_loopback": True, "allowed_ports": [port]},
        webhooks={"retry_delays_seconds": list(delays), "timeout_seconds": 2},
    )


async def test_webhook_is_signed_retried_and_carries_a_stable_id(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IMAGEGATE_WEBHOOK_SECRET", SECRET)
    receiver = Receiver([500, 503])
    hook = await receiver.start()
    try:
        async with gateway(_webhook_settings(tmp_path, receiver.port)) as http:
            accepted = await http.post(GEN, json={"prompt": "x", "webhook_url": hook})
            assert accepted.status_code == 202
            done = await wait_for(
                http, accepted.headers["location"], lambda b: (b["webhook"] or {}).get("status") == "delivered"
            )
            assert done["webhook"]["status"] == "delivered" and done["webhook"]["attempts"] == 3
        assert len(receiver.calls) == 3
        verifier = Webhook(SECRET)
        ids = set()
        for headers, body in receiver.calls:
            payload = verifier.verify(body, {k.lower(): v for k, v in headers.items()})
            assert payload["type"] == "image.job.succeeded" and payload["data"]["id"] == accepted.json()["id"]
            assert payload["data"]["result"]["data"][0]["url"]
            ids.add(headers["webhook-id"])
        assert ids == {accepted.json()["id"]}
        headers, body = receiver.calls[0]
        with pytest.raises(WebhookVerificationError):  # a tampered body fails verification
            verifier.verify(body.replace(b"succeeded", b"failed"), {k.lower(): v for k, v in headers.items()})
    finally:
        await receiver.stop()


async def test_a_receiver_that_is_down_gets_retries_then_the_delivery_fails_and_the_job_stays_readable(
    tmp_path,
) -> None:
    receiver = Receiver([])
    hook = await receiver.start()
    await receiver.stop()  # nobody listens on that port any more
    async with gateway(_webhook_settings(tmp_path, receiver.port, delays=(0.05, 0.05))) as http:
        accepted = await http.post(GEN, json={"prompt": "x", "webhook_url": hook})
        done = await wait_for(
            http, accepted.headers["location"], lambda b: (b["webhook"] or {}).get("status") == "failed"
        )
        assert done["status"] == "succeeded" and done["webhook"]["status"] == "failed"
        assert done["webhook"]["attempts"] == 3 and "connection failed" in done["webhook"]["last_error"]
        assert done["result"]["data"]


async def test_a_job_edit_from_an_image_url_reports_the_fetch_in_its_decisions(tmp_path) -> None:
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png_bytes(64, 64), content_type="image/png")

    app = web.Application()
    app.router.add_get("/a.png", image)
    async with local_app(app) as port:
        settings = _settings(tmp_path, inputs={"allow_loopback": True, "allowed_ports": [port]})
        async with gateway(settings) as http:
            url = f"http://127.0.0.1:{port}/a.png"
            body = {"prompt": "x", "model": "gpt-image-1", "images": [{"image_url": url}], "async": True}
            accepted = await http.post(EDIT, json=body)
            assert accepted.status_code == 202, accepted.text
            done = await wait_for(http, accepted.headers["location"], finished)
    assert done["status"] == "succeeded"
    [fetched] = [d for d in done["result"]["imagegate"]["decisions"] if d["param"] == "images[0].image_url"]
    assert fetched["asked"] == url and fetched["sent"] == "image bytes"


async def test_a_keys_webhook_receives_its_jobs_that_name_none(tmp_path) -> None:
    receiver = Receiver([])
    hook = await receiver.start()
    try:
        settings = _webhook_settings(tmp_path, receiver.port).model_copy(update={"auth": AuthSettings(mode="keys")})
        async with gateway(settings) as http:
            runtime = http.app.state.runtime  # type: ignore[attr-defined]
            await runtime.ready()
            _, secret = await runtime.keys.create("hooked", None, None, None, None, webhook_url=hook)
            auth = {"authorization": f"Bearer {secret}"}
            accepted = await http.post(GEN, json={"prompt": "x"}, headers={**ASYNC, **auth})
            assert accepted.status_code == 202 and accepted.json()["webhook"]["url"] == hook
            done = await wait_for(
                http, accepted.headers["location"], lambda b: b["webhook"]["status"] == "delivered", headers=auth
            )
        assert done["webhook"]["status"] == "delivered"
        assert [h["webhook-id"] for h, _ in receiver.calls] == [accepted.json()["id"]]
    finally:
        await receiver.stop()
