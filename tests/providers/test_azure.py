"""The azure-openai kind against a fake Azure deployment: deployment URLs with api-version, the api-key
header, no `model` in the body, multipart edits with a mask, retry-after-ms on 429, regions side by side."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import ConfigError, Settings
from imagegate.providers.registry import build_registry
from imagegate.web.app import create_app
from tests.fakes.azure import FakeAzure
from tests.fakes.faults import Fault
from tests.helpers import mask_bytes, png_bytes

EAST_KEY = "azure-east-canary-0001"
WEST_KEY = "azure-west-canary-0002"


@pytest.fixture(scope="module")
def east() -> Iterator[FakeAzure]:
    fake = FakeAzure(EAST_KEY, {"img-east": "gpt-image-1.5"})
    with fake.run_in_thread():
        yield fake


@pytest.fixture(scope="module")
def west() -> Iterator[FakeAzure]:
    fake = FakeAzure(WEST_KEY, {"img-west": "gpt-image-1.5"})
    with fake.run_in_thread():
        yield fake


def _table(fake: FakeAzure, key: str, deployment: str) -> dict[str, Any]:
    return {
        "kind": "azure-openai",
        "api_key": key,
        "endpoint": fake.base_url.removesuffix("/v1"),
        "deployments": {"gpt-image-1.5": deployment},
    }


@pytest.fixture
async def client(tmp_path: Path, east: FakeAzure, west: FakeAzure) -> AsyncIterator[httpx.AsyncClient]:
    for fake in (east, west):
        fake.requests.clear()
        fake.script.clear()
    providers = {"azure-east": _table(east, EAST_KEY, "img-east"), "azure-west": _table(west, WEST_KEY, "img-west")}
    settings = Settings(data_dir=tmp_path, signing_key="k", providers=providers, routing={"backoff_base_seconds": 0.01})
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


def _sent(fake: FakeAzure) -> Any:
    return [r for r in fake.requests if r.path.startswith("/openai/")][-1]


async def test_a_generation_goes_to_the_deployment_with_the_api_key_and_no_model(client, east: FakeAzure) -> None:
    response = await client.post("/v1/images/generations", json={"model": "azure-east/gpt-image-1.5", "prompt": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["imagegate"]["provider"] == "azure-east"
    sent = _sent(east)
    assert sent.path == "/openai/deployments/img-east/images/generations?api-version=2025-04-01-preview"
    assert sent.headers["api-key"] == EAST_KEY and "authorization" not in sent.headers
    assert "model" not in sent.json and "response_format" not in sent.json


async def test_an_edit_with_a_mask_is_multipart_at_the_deployment(client, west: FakeAzure) -> None:
    files = [
        ("image", ("a.png", png_bytes(256, 256), "image/png")),
        ("mask", ("m.png", mask_bytes(256, 256, (0, 0, 128, 256)), "image/png")),
    ]
    data = {"model": "azure-west/gpt-image-1.5", "prompt": "paint the left half"}
    response = await client.post("/v1/images/edits", data=data, files=files)
    assert response.status_code == 200, response.text
    sent = _sent(west)
    assert sent.path.startswith("/openai/deployments/img-west/images/edits?")
    assert {name for name, _, _ in sent.files} == {"image", "mask"} and "model" not in sent.fields


async def test_a_429_with_retry_after_ms_is_waited_out(client, east: FakeAzure) -> None:
    east.script.push(
        Fault(
            "status",
            status=429,
            body={"error": {"code": "429", "message": "Rate limit"}},
            headers={"retry-after-ms": "300"},
        )
    )
    started = time.monotonic()
    response = await client.post("/v1/images/generations", json={"model": "azure-east/gpt-image-1.5", "prompt": "x"})
    assert response.status_code == 200, response.text
    attempts = response.json()["imagegate"]["attempts"]
    assert [a["status"] for a in attempts] == ["error", "ok"] and attempts[0]["upstream_status"] == 429
    assert time.monotonic() - started >= 0.3


async def test_a_wrong_key_never_comes_back(tmp_path: Path, east: FakeAzure) -> None:
    wrong = "azure-wrong-canary-7777"
    settings = Settings(data_dir=tmp_path, signing_key="k", providers={"azure": _table(east, wrong, "img-east")})
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/v1/images/generations", json={"model": "azure/gpt-image-1.5", "prompt": "x"})
    assert response.status_code in (502, 503) and wrong not in response.text
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"kind": "azure-openai", "api_key": "k"}, "endpoint is required"),
        ({"kind": "azure-openai", "endpoint": "https://r.openai.azure.com"}, "api_key_env"),
    ],
)
def test_an_incomplete_azure_table_fails_at_start(tmp_path: Path, table: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_registry(Settings(data_dir=tmp_path, providers={"azure": table}))


def test_an_offering_naming_the_kind_is_served_by_every_instance_of_it(
    tmp_path: Path, east: FakeAzure, west: FakeAzure
) -> None:
    import dataclasses

    from imagegate.catalog.loader import load_catalog
    from imagegate.routing.candidates import all_offerings, serving_state

    base = load_catalog().get("gpt-image-1.5")
    assert base is not None
    by_kind = dataclasses.replace(base.offerings[0], provider="azure-openai")  # as an operator's catalog file may say
    model = dataclasses.replace(base, offerings=(by_kind,))
    providers = {"azure-east": _table(east, EAST_KEY, "img-east"), "azure-west": _table(west, WEST_KEY, "img-west")}
    registry = build_registry(Settings(data_dir=tmp_path, providers=providers))
    served = [o for o in all_offerings(model, registry) if o.provider != "sandbox"]
    assert [(o.provider, o.kind) for o in served] == [("azure-east", "azure-openai"), ("azure-west", "azure-openai")]
    alone = [o for o in all_offerings(model, build_registry(Settings(data_dir=tmp_path / "none"))) if o.kind is None]
    assert [o.provider for o in alone if o.provider != "sandbox"] == ["azure-openai"]
    assert serving_state(alone[0], build_registry(Settings(data_dir=tmp_path / "none"))) == "not_configured"
