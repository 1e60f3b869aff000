"""The request path as one typed flow: typed attempts on failures, disconnects, settlement from a Completion."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from imagegate.accounting.gate import _settlement
from imagegate.errors import InvalidRequestError, UpstreamError
from imagegate.routing.router import Attempt
from imagegate.web.disconnect import ClientDisconnected


def test_a_disconnect_settles_as_cancelled():
    assert _settlement(None, ClientDisconnected(), 1.0).status == "cancelled"
    assert _settlement(None, asyncio.CancelledError(), 1.0).status == "cancelled"
    assert _settlement(None, RuntimeError("x"), 1.0).status == "failed"


def test_a_failure_settles_from_its_typed_attempts():
    error = UpstreamError("x", code="upstream_error")
    error.attempts = (
        Attempt("openai", "error", 10.0, "boom", "upstream_error", 500, may_have_charged=False),
        Attempt("fal", "error", 12.0, "cut", "upstream_malformed_response", 200, may_have_charged=True),
    )
    settlement = _settlement(None, error, 30.0)
    assert settlement.status == "failed" and settlement.error_code == "upstream_error"
    assert [a["provider"] for a in settlement.attempts] == ["openai", "fal"]
    assert settlement.cost is None  # one attempt may have been billed
    error.attempts = error.attempts[:1]
    assert _settlement(None, error, 30.0).cost == 0


def test_errors_carry_no_attempts_until_routed():
    assert InvalidRequestError("x").attempts == ()


async def test_a_served_request_settles_and_renders_from_one_completion(client: httpx.AsyncClient):
    response = await client.post(
        "/v1/images/generations", json={"prompt": "a fox", "n": 2, "response_format": "b64_json"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    meta = body["imagegate"]
    assert len(body["data"]) == meta["n"] == 2 and body["created"] > 0
    assert response.headers["content-length"] == str(len(response.content))
    rows = (await client.get("/v1/requests")).json()["data"]
    row = next(r for r in rows if r["id"] == meta["request_id"])
    assert row["status"] == "succeeded" and row["images"] == 2 and row["provider"] == meta["provider"]
    assert row["attempts"] == meta["attempts"]


@pytest.mark.parametrize("stream", [False, True])
async def test_streamed_and_plain_requests_share_the_completion(client: httpx.AsyncClient, stream: bool):
    payload = {"prompt": "a fox", "stream": stream, "response_format": "b64_json"}
    response = await client.post("/v1/images/generations", json=payload)
    assert response.status_code == 200, response.text
    if stream:
        assert b"image_generation.completed" in response.content and b'"imagegate":' in response.content
    else:
        assert response.json()["imagegate"]["attempts"][0]["status"] == "ok"


async def test_time_spent_before_execution_counts_against_the_one_deadline(tmp_path):
    """The deadline is fixed when first asked for (admission to the envelope), not when routing starts."""
    from imagegate.config import Settings
    from imagegate.providers.sandbox import SandboxProvider
    from imagegate.schemas import GenerateParams
    from imagegate.web.app import create_app

    app = create_app(Settings(data_dir=tmp_path, signing_key="k", request_timeout_seconds=30))
    service = app.state.service
    seen: list[float] = []
    original = SandboxProvider.run

    async def recording(self, job, inputs, ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.deadline)
        return await original(self, job, inputs, ctx)

    prepared = service.prepare(GenerateParams(prompt="x", size="256x256"), "text-to-image")
    admitted = service.deadline(prepared)
    await asyncio.sleep(0.05)  # e.g. queued in the resource envelope
    assert service.deadline(prepared) == admitted
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SandboxProvider, "run", recording)
        await service.execute(prepared, None, "req_deadline")
    assert seen == [admitted]
