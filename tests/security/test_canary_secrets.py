"""Canary secrets: configured secrets never leave the gateway, whatever an upstream sends back.

Unique canary values are configured as the OpenAI key, the fal key, the link-signing key and the
key pepper. Real gateway traffic (in-process ASGI) goes to the fake upstreams, scripted to quote
the request's Authorization header (and the bare credential) back in every error class they
produce, in malformed 200 replies, in stream error events, in fal queue status/result payloads
and in response headers; plus connection resets and a foreign exception whose text carries the
URL and headers. After each request no canary may appear in: the response body and headers,
the ledger (the `requests` table, attempts JSON included, and `/v1/requests`), the captured log
records (DEBUG, tracebacks included), `/metrics`, or any file under the data dir.

Adding a provider: add a `Row` to `ROWS` (how to force it, how its fake scripts each case).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from imagegate.config import CatalogSettings, ProviderSettings, RoutingSettings, Settings
from imagegate.providers.fal import FalSettings
from imagegate.providers.http import HttpClient
from imagegate.web.app import create_app
from tests.fakes.fal import FakeFal
from tests.fakes.faults import ECHO_AUTHORIZATION, ECHO_TOKEN, Fault, FaultScript
from tests.fakes.openai import FakeOpenAI

_RUN = uuid.uuid4().hex
OPENAI_KEY = f"sk-canaryopenai{_RUN}"
FAL_KEY = f"canaryfalid{_RUN[:16]}:canaryfalsecret{_RUN}"
SIGNING_KEY = f"canarysigning{_RUN}"
PEPPER = f"canarypepper{_RUN}"
CANARIES = {
    "openai key": OPENAI_KEY,
    "fal key": FAL_KEY,
    "fal key id": FAL_KEY.split(":")[0],
    "fal key secret": FAL_KEY.split(":")[1],
    "signing key": SIGNING_KEY,
    "pepper": PEPPER,
}
MASKS = ("[redacted]", "..." + OPENAI_KEY[-4:], "..." + FAL_KEY[-4:])
ECHO = f"request had Authorization: {ECHO_AUTHORIZATION} (credential {ECHO_TOKEN})"
ECHO_HEADERS = {"x-request-id": ECHO_TOKEN, "x-debug-authorization": ECHO_AUTHORIZATION}
STATUSES = (400, 401, 403, 404, 409, 422, 429, 500, 502, 503)
GEN = "/v1/images/generations"


@dataclass(frozen=True)
class Case:
    """What the fake does, and whether the gateway relays upstream words for it (then a mask must show)."""

    kind: str
    relays: bool
    stream: bool = False


@dataclass(frozen=True)
class Row:
    """One provider: the model that forces it, its fake, and how that fake scripts each case."""

    provider: str
    key: str
    model: str
    cases: tuple[Case, ...]
    script: Callable[[Any, Case], None]  # (fake, case) -> queue the faults


def _openai_error(status: int) -> dict[str, Any]:
    code = "moderation_blocked" if status == 0 else f"{ECHO_TOKEN}"
    return {"error": {"message": ECHO, "type": "invalid_request_error", "param": ECHO_TOKEN, "code": code}}


def _script_openai(fake: FakeOpenAI, case: Case) -> None:
    kind, _, status = case.kind.partition(":")
    if kind == "status":
        fault = Fault("status", status=int(status), body=_openai_error(int(status)), headers=ECHO_HEADERS)
    elif kind == "moderation":
        fault = Fault("status", status=400, body=_openai_error(0), headers=ECHO_HEADERS)
    elif kind == "malformed":
        fault = Fault("malformed", body=f"<html>{ECHO}</html>", headers=ECHO_HEADERS)
    elif kind in ("error_200", "stream_error"):
        fault = Fault("error_200", body=_openai_error(200), headers=ECHO_HEADERS)
    else:
        fault = Fault("reset")
    fake.script.push(fault, times=4)


def _fal_detail(policy: bool = False) -> dict[str, Any]:
    kind = "content_policy_violation" if policy else "value_error"
    return {"detail": [{"loc": ["body", ECHO_TOKEN], "msg": ECHO, "type": kind}], "error_type": kind}


def _script_fal(fake: FakeFal, case: Case) -> None:
    kind, _, status = case.kind.partition(":")
    script: FaultScript = fake.script
    if kind == "status":
        body: Any = _fal_detail() if status in ("400", "422") else {"detail": ECHO}
        fault = Fault("status", status=int(status), body=body, headers=ECHO_HEADERS)
    elif kind == "moderation":
        fault = Fault("status", status=422, body=_fal_detail(policy=True), headers=ECHO_HEADERS)
    elif kind == "malformed":
        fault = Fault("malformed", body=f"<html>{ECHO}</html>")
    elif kind == "error_200":
        fault = Fault("error_200", body={"detail": ECHO, "request_id": None})
    elif kind in ("job_failure", "job_moderation"):
        script = fake.job_script
        fault = Fault("status", status=500, body={"detail": ECHO, "error_type": "internal_error"})
        if kind == "job_moderation":
            fault = Fault("status", status=422, body=_fal_detail(policy=True))
    else:
        fault = Fault("reset")
    script.push(fault, times=4)


COMMON = (
    *(Case(f"status:{status}", relays=status not in (401, 403)) for status in STATUSES),
    Case("moderation", relays=True),
    Case("malformed", relays=False),
    Case("reset", relays=False),
    Case("foreign", relays=False),
)
ROWS = (
    Row(
        "openai",
        OPENAI_KEY,
        "openai/gpt-image-1",
        (*COMMON, Case("error_200", relays=True), Case("stream_error", relays=True, stream=True)),
        _script_openai,
    ),
    Row(
        "fal",
        FAL_KEY,
        "fal/flux-1-schnell",
        (
            *(c for c in COMMON if c.kind != "status:404"),
            Case("status:404", relays=False),  # fal's 404 wording is ours alone
            Case("error_200", relays=True),
            Case("job_failure", relays=True),
            Case("job_moderation", relays=True),
        ),
        _script_fal,
    ),
)
PARAMS = [pytest.param(row, case, id=f"{row.provider}-{case.kind}") for row in ROWS for case in row.cases]


@dataclass
class Rig:
    http: httpx.AsyncClient
    app: Starlette
    fakes: dict[str, Any]
    data_dir: Path


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("IMAGEGATE_KEY_PEPPER", PEPPER)
    openai_fake, fal_fake = FakeOpenAI(key=OPENAI_KEY), FakeFal(key=FAL_KEY, job_seconds=0.02)
    openai_url = await openai_fake.start()
    run_url, queue_url = await fal_fake.start()
    data_dir = tmp_path / "data"
    settings = Settings(
        data_dir=data_dir,
        signing_key=SIGNING_KEY,
        providers={
            "openai": ProviderSettings(base_url=openai_url, api_key=OPENAI_KEY),
            "fal": FalSettings(base_url=run_url, queue_url=queue_url, api_key=FAL_KEY, poll_interval_seconds=0.01),
        },
        catalog=CatalogSettings(status={"gpt-image-1": {"openai": "active"}}),
        routing=RoutingSettings(backoff_base_seconds=0.001, backoff_max_seconds=0.001),
    )
    app = create_app(settings)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gw")
    yield Rig(http, app, {"openai": openai_fake, "fal": fal_fake}, data_dir)
    await http.aclose()
    await app.state.registry.aclose()
    await app.state.runtime.aclose()
    await openai_fake.stop()
    await fal_fake.stop()


def _explode_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider HTTP call fails with a foreign exception quoting the URL and the headers sent."""

    async def explode(
        self: HttpClient,
        method: str,
        url: str,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        max_bytes: int | None = None,
    ) -> None:
        token = (headers or {}).get("Authorization", "").partition(" ")[2]
        raise RuntimeError(f"{method} {url}?key={token} failed: connection reset by peer; sent {headers}")

    monkeypatch.setattr(HttpClient, "request", explode)


def _ledger(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "imagegate.db") as db:
        rows = db.execute("SELECT * FROM requests").fetchall()
    assert rows, "the request left no ledger row"
    return "\n".join(repr(row) for row in rows)


def _logs(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), formatter.format(record), record.exc_text or "", record.stack_info or ""]
    return "\n".join(parts)


def _data_files(data_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(data_dir)): path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}


def _hits(places: dict[str, bytes]) -> list[str]:
    found = []
    for place, data in places.items():
        found += [f"{name} in {place}" for name, value in CANARIES.items() if value.encode() in data]
    return found


@pytest.mark.parametrize(("row", "case"), PARAMS)
async def test_no_canary_leaves_the_gateway(
    rig: Rig, row: Row, case: Case, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = rig.fakes[row.provider]
    if case.kind == "foreign":
        _explode_http(monkeypatch)
    else:
        row.script(fake, case)
    body: dict[str, Any] = {"prompt": "a canary", "model": row.model, "response_format": "b64_json"}
    if case.stream:
        body.update(stream=True, partial_images=1)
    response = await rig.http.post(GEN, json=body)
    monkeypatch.undo()  # HttpClient and the env back to normal before the checks

    assert response.status_code >= 400 or case.stream, response.text
    if case.kind != "foreign":  # the upstream did get the key, so it had it to echo
        assert any(row.key in r.headers.get("authorization", "") for r in fake.requests)
    ledger = _ledger(rig.data_dir)
    listing = await rig.http.get("/v1/requests")
    assert listing.status_code == 200 and listing.json()["data"], listing.text
    metrics = await rig.http.get("/metrics")
    assert metrics.status_code == 200 and b"imagegate_requests_total{" in metrics.content
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    places = {
        "response body": response.content,
        "response headers": headers.encode(),
        "ledger rows": ledger.encode(),
        "/v1/requests": listing.content,
        "/metrics": metrics.content,
        "logs": _logs(caplog).encode(),
        **{f"data dir file {name}": data for name, data in _data_files(rig.data_dir).items()},
    }
    hits = _hits(places)
    assert not hits, "canary found: " + "; ".join(hits)
    if case.relays:  # the echo did reach the gateway, and was masked on its way through
        relayed = response.text + ledger
        assert any(mark in relayed for mark in MASKS), relayed


async def test_a_new_gateway_masks_what_it_was_configured_with(rig: Rig) -> None:
    redactor = rig.app.state.registry.redactor
    for name, value in CANARIES.items():
        assert value not in redactor.redact(f"x {value} y"), name
