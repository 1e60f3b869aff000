"""API strictness (issue 8): bounded echoes of bad values, keys everywhere in keys mode, `Allow` on
405, the OpenAPI document agreeing with the server, the playground upload limit on the server, and
open mode checking and accounting a key that is sent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import jsonschema
import pytest
from starlette.applications import Starlette

from imagegate.config import AuthSettings, PlaygroundSettings, SandboxSettings, Settings
from imagegate.web.app import create_app
from tests.helpers import png_bytes

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
BIG = 900_000  # under the 1 MiB JSON cap, so the value reaches validation
SMALL_BODY = 1024
LOW = {"prompt": "x", "model": "gpt-image-1", "quality": "low", "size": "1024x1024", "response_format": "b64_json"}


@asynccontextmanager
async def gateway(tmp_path: Path, **overrides: object) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    settings = Settings(data_dir=tmp_path / "data", signing_key="k", **overrides)  # type: ignore[arg-type]
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        yield http, app
    await app.state.runtime.aclose()


def small_error(response: httpx.Response, status: int, param: str | None) -> str:
    assert response.status_code == status, response.text[:300]
    assert len(response.content) < SMALL_BODY, f"{len(response.content)} bytes came back"
    error = response.json()["error"]
    assert error["param"] == param, error
    return str(error["message"])


# --- 1. a bad value is quoted, never echoed whole ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "status", "extra"),
    [
        ("prompt", 400, {}),
        ("model", 404, {}),
        ("size", 400, {}),
        ("aspect_ratio", 400, {}),
        ("resolution", 400, {}),
        ("quality", 400, {}),
        ("n", 400, {}),
        ("output_format", 400, {}),
        ("response_format", 400, {}),
        ("background", 400, {}),
        ("moderation", 400, {}),
        ("style", 400, {"model": "dall-e-3"}),
    ],
)
async def test_huge_values_are_quoted_briefly(tmp_path, field, status, extra):
    body = {"prompt": "x", **extra, field: "A" * BIG}
    async with gateway(tmp_path) as (http, _):
        message = small_error(await http.post(GEN, json=body), status, field)
    assert f"({BIG} characters)" in message and "A" * 100 in message and "A" * 101 not in message


async def test_huge_parameter_names_are_clipped(tmp_path):
    name = "api_key_" + "B" * BIG
    async with gateway(tmp_path) as (http, _):
        passthrough = await http.post(GEN, json={"prompt": "x", name: 1})
        image_ref = await http.post(EDIT, json={"prompt": "x", "images": [{"image_url": "data:,", name: 1}]})
    assert len(passthrough.content) < SMALL_BODY and passthrough.status_code == 400
    assert (
        passthrough.json()["error"]["param"].startswith("api_key_BBB")
        and len(passthrough.json()["error"]["param"]) < 110
    )
    assert len(image_ref.content) < SMALL_BODY and image_ref.status_code == 400
    assert image_ref.json()["error"]["param"].startswith("images[0].api_key_")


async def test_huge_values_elsewhere_are_quoted_briefly(tmp_path):
    huge = "C" * 60_000  # what fits in a URL
    async with gateway(tmp_path) as (http, _):
        small_error(await http.get(f"/v1/models/{huge}"), 404, "model")
        small_error(await http.get("/v1/requests", params={"since": huge}), 400, "since")
        small_error(await http.get("/v1/requests", params={"cursor": huge}), 400, "cursor")
        small_error(await http.get(f"/nowhere/{huge}"), 404, None)
        small_error(await http.delete(f"/v1/files/{huge}"), 405, None)
        key = {"Idempotency-Key": "D" * 100_000}
        small_error(await http.post(GEN, json={"prompt": "x"}, headers=key), 400, "Idempotency-Key")
        duplicate = {"prompt": "x", "E" * 1_000: ["1", "2"]}
        form = await http.post(EDIT, data=duplicate, files=[("image", ("a.png", png_bytes(), "image/png"))])
    assert form.status_code == 400 and len(form.content) < SMALL_BODY
    assert form.json()["error"]["param"].startswith("EEE")


async def test_short_values_are_still_quoted_whole(tmp_path):
    async with gateway(tmp_path) as (http, _):
        message = small_error(await http.post(GEN, json={"prompt": "x", "size": "12x"}), 400, "size")
    assert "'12x'" in message and "characters)" not in message


# --- 2. keys mode: /metrics and /v1/models need a key too ------------------------------------


async def test_keys_mode_metrics_and_models_need_a_key(tmp_path):
    async with gateway(tmp_path, auth=AuthSettings(mode="keys")) as (http, app):
        await app.state.runtime.ready()
        _, key = await app.state.runtime.keys.create("t", None, None, None, None)
        reference = (await http.post(GEN, json={"prompt": "x"})).json()
        for path in ("/metrics", "/v1/models", "/v1/models/gpt-image-1", "/v1/models/no-such-model"):
            anonymous = await http.get(path)
            wrong = await http.get(path, headers={"Authorization": "Bearer igk_wrong"})
            assert anonymous.status_code == wrong.status_code == 401, path
            assert anonymous.json() == wrong.json() == reference, path
            assert anonymous.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/metrics", headers=ok)).text.startswith("# HELP")
        assert (await http.get("/v1/models", headers=ok)).json()["object"] == "list"
        assert (await http.get("/v1/models/gpt-image-1", headers=ok)).json()["id"] == "gpt-image-1"


async def test_keys_mode_pages_still_work_without_a_key(tmp_path):
    async with gateway(tmp_path, auth=AuthSettings(mode="keys")) as (http, _):
        assert (await http.get("/playground")).status_code == 200
        assert (await http.get("/models")).status_code == 200
        assert (await http.get("/models/gpt-image-1")).status_code == 200
        listing = await http.get("/playground/api/models")
        detail = await http.get("/playground/api/models/gpt-image-1")
        missing = await http.get("/playground/api/models/nope")
        script = (await http.get("/static/playground.js")).text
    assert listing.status_code == 200 and any(m["id"] == "gpt-image-1" for m in listing.json()["data"])
    assert detail.json()["id"] == "gpt-image-1"
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    assert '"/v1/models' not in script and "/playground/api/models" in script


async def test_playground_catalog_is_404_when_the_playground_is_off(tmp_path):
    async with gateway(tmp_path, playground=PlaygroundSettings(enabled=False)) as (http, _):
        assert (await http.get("/playground/api/models")).status_code == 404


# --- 3. 405 names the allowed methods ------------------------------------------------------------


async def test_405_has_allow(tmp_path):
    async with gateway(tmp_path) as (http, _):
        post_only = await http.get(GEN)
        get_only = await http.post("/v1/models")
        static = await http.post("/static/playground.js")
    assert post_only.status_code == 405 and post_only.headers["allow"] == "POST"
    assert get_only.status_code == 405 and set(get_only.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD"
    assert post_only.json()["error"]["code"] == "method_not_allowed"


# --- 4. the OpenAPI document refuses what the server refuses -------------------------------------


def _validator(document: dict, name: str) -> jsonschema.Draft202012Validator:
    schema = {**document["components"]["schemas"][name], "components": document["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _parameter(document: dict, path: str, name: str) -> jsonschema.Draft202012Validator:
    parameter = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == name)
    return jsonschema.Draft202012Validator(parameter["schema"], format_checker=jsonschema.FormatChecker())


async def test_openapi_refuses_what_the_server_refuses(tmp_path):
    async with gateway(tmp_path) as (http, _):
        document = (await http.get("/openapi.json")).json()
        empty_prompt = await http.post(GEN, json={"prompt": ""})
        empty_cursor = await http.get("/v1/requests", params={"cursor": ""})
        bad_since = await http.get("/v1/usage", params={"since": "yesterday"})
        no_image = await http.post(EDIT, data={"prompt": "x"}, files=[("mask", ("m.png", png_bytes(), "image/png"))])
    assert (empty_prompt.status_code, empty_cursor.status_code, bad_since.status_code) == (400, 400, 400)
    assert no_image.status_code == 400 and no_image.json()["error"]["param"] == "image"
    assert not _validator(document, "GenerateRequest").is_valid({"prompt": ""})
    assert not _validator(document, "GenerateRequest").is_valid({"prompt": "   "})
    assert _validator(document, "GenerateRequest").is_valid({"prompt": "a fox"})
    assert not _parameter(document, "/v1/requests", "cursor").is_valid("")
    for since in ("yesterday", "2026-13-01", ""):
        assert not _parameter(document, "/v1/usage", "since").is_valid(since), since
    for since in ("2026-11-25", "2026-11-25T10:00:00Z", "1764000000", "1764000000.5"):
        assert _parameter(document, "/v1/usage", "since").is_valid(since), since
    multipart = _validator(document, "EditMultipart")
    assert not multipart.is_valid({"prompt": "x"})
    assert multipart.is_valid({"prompt": "x", "image": "..."})
    assert multipart.is_valid({"prompt": "x", "image[]": ["...", "..."]})


# --- 5. the playground upload limit holds on the server ----------------------------------------


async def test_playground_upload_limit_is_enforced_on_the_server(tmp_path):
    image = png_bytes(256, 256)
    limit = len(image) - 1
    caps = PlaygroundSettings(max_upload_bytes=limit)
    async with gateway(tmp_path, playground=caps) as (http, _):
        multipart = await http.post(
            "/playground/api/images/edits",
            data={"prompt": "x"},
            files=[("image[]", ("a.png", png_bytes(), "image/png")), ("image[]", ("b.png", image, "image/png"))],
        )
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        json_edit = await http.post(
            "/playground/api/images/edits", json={"prompt": "x", "images": [{"image_url": url}]}
        )
        fits = await http.post(
            "/playground/api/images/edits",
            data={"prompt": "x", "response_format": "b64_json"},
            files=[("image", ("a.png", png_bytes(), "image/png"))],
        )
    error = multipart.json()["error"]
    assert multipart.status_code == 413 and error["param"] == "image[1]" and error["code"] == "payload_too_large"
    assert set(error) == {"message", "type", "param", "code"} and "upload limit" in error["message"]
    assert json_edit.status_code == 413 and json_edit.json()["error"]["param"] == "images[0].image_url"
    assert fits.status_code == 200, fits.text[:300]


# --- 6. open mode: a key that is sent is checked and accounted ---------------------------------


class CountingKeys:
    """Wraps the key store to count lookups (one per request at most)."""

    def __init__(self, keys: object) -> None:
        self.keys = keys
        self.lookups = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.keys, name)

    async def authenticate(self, presented: str | None) -> object:
        self.lookups += 1
        return await self.keys.authenticate(presented)  # type: ignore[attr-defined]


async def test_open_mode_checks_and_accounts_a_key_that_is_sent(tmp_path):
    sandbox = SandboxSettings(enabled=True, simulate_prices=True)
    async with gateway(tmp_path, sandbox=sandbox) as (http, app):
        runtime = app.state.runtime
        await runtime.ready()
        record, key = await runtime.keys.create("t", Decimal("0.025"), None, None, None)
        _, revoked = await runtime.keys.create("old", None, None, None, None)
        _, scoped = await runtime.keys.create("scoped", None, None, None, ("flux-1-schnell",))
        await runtime.keys.revoke(revoked[:12])
        counting = CountingKeys(runtime.keys)
        runtime.keys = counting

        anonymous = await http.post(GEN, json=LOW)
        placeholder = await http.post(GEN, json=LOW, headers={"Authorization": "Bearer unused"})
        assert counting.lookups == 0  # no key, no lookup
        assert anonymous.status_code == placeholder.status_code == 200

        first = await http.post(GEN, json=LOW, headers={"Authorization": f"Bearer {key}"})
        assert counting.lookups == 1  # one lookup per request with a key
        second = await http.post(GEN, json=LOW, headers={"Authorization": f"Bearer {key}"})
        over_budget = await http.post(GEN, json=LOW, headers={"Authorization": f"Bearer {key}"})
        unknown = await http.post(GEN, json=LOW, headers={"Authorization": "Bearer igk_not_a_real_key"})
        gone = await http.post(GEN, json=LOW, headers={"Authorization": f"Bearer {revoked}"})
        out_of_scope = await http.post(GEN, json=LOW, headers={"Authorization": f"Bearer {scoped}"})
        mine = (await http.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})).json()
        everyone = (await http.get("/v1/usage")).json()

    assert first.status_code == second.status_code == 200
    assert over_budget.status_code == 402  # the key's budget applies in open mode too
    assert unknown.status_code == gone.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key"
    assert out_of_scope.status_code == 403
    assert mine["key_id"] == record.id and mine["totals"]["requests"] == 2
    assert Decimal(mine["totals"]["cost"]) == Decimal("0.022")
    assert everyone["key_id"] is None and everyone["totals"]["requests"] >= 4


async def test_open_mode_playground_placeholder_token_is_still_anonymous(tmp_path):
    """An SDK-style placeholder token is not a key: the anonymous playground caps still apply."""
    caps = PlaygroundSettings(anonymous_images_per_ip_per_day=1)
    placeholder = {"Authorization": "Bearer unused"}
    body = {"prompt": "x", "size": "1024x1024", "response_format": "b64_json"}
    async with gateway(tmp_path, playground=caps) as (http, _):
        first = await http.post("/playground/api/images/generations", json=body, headers=placeholder)
        second = await http.post("/playground/api/images/generations", json=body, headers=placeholder)
    assert first.status_code == 200, first.text[:300]
    assert second.status_code == 429 and second.json()["error"]["code"] == "playground_cap_exceeded"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "async": True, "dry_run": True}, "async"),
        ({"prompt": "x", "async": "true", "dry_run": "true"}, "async"),
        ({"prompt": "x", "async": True, "stream": True}, "stream"),
    ],
)
async def test_openapi_refuses_a_job_that_must_answer_at_once(tmp_path, body, param):
    """A job is neither a dry run nor a stream: the server says 400, so the document must not accept it
    (found by schemathesis at 5,000 cases: "async": true with "dry_run": "true")."""
    async with gateway(tmp_path) as (http, _):
        document = (await http.get("/openapi.json")).json()
        answer = await http.post(GEN, json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    request = _validator(document, "GenerateRequest")
    assert not request.is_valid(body)
    assert request.is_valid({**body, "async": False})
    assert request.is_valid({"prompt": "x", "async": True})
