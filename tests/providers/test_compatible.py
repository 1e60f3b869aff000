"""Provider kinds and instances (imagegate.providers.kinds) and the openai-compatible kind: several
instances side by side, each validated by its kind's settings and with its own key; xAI's quirks as
data against a fake xAI; a host that refuses `response_format`; a model map that adds offerings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pybase64
import pytest

from imagegate.config import ConfigError, Settings
from imagegate.providers.compatible import CompatibleSettings
from imagegate.providers.fal import FalSettings
from imagegate.providers.registry import build_registry
from imagegate.web.app import create_app
from tests.fakes.openai import FakeOpenAI
from tests.fakes.xai import FakeXAI
from tests.helpers import open_image, png_bytes

XAI_KEY = "xai-canary-key-0123456789"
HOST_KEY = "sk-compatible-canary-9876"


@pytest.fixture(scope="module")
def xai() -> Iterator[FakeXAI]:
    fake = FakeXAI(key=XAI_KEY)
    with fake.run_in_thread():
        yield fake


@pytest.fixture(scope="module")
def host() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(key=HOST_KEY)
    with fake.run_in_thread():
        yield fake


def _providers(xai: FakeXAI, host: FakeOpenAI, key: str = XAI_KEY) -> dict[str, Any]:
    return {
        "xai": {
            "kind": "openai-compatible",
            "api_key": key,
            "base_url": xai.base_url,
            "response_format": "b64_json",
            "size_field": "aspect_ratio",
            "output_fields": False,
            "json_edits": True,
        },
        "together": {
            "kind": "openai-compatible",
            "api_key": HOST_KEY,
            "base_url": host.base_url,
            "models": {"gpt-image-1.5": "gpt-image-1.5"},
        },
        "strict": {  # the same host, told to send response_format: it refuses it for GPT image models
            "kind": "openai-compatible",
            "api_key": HOST_KEY,
            "base_url": host.base_url,
            "response_format": "b64_json",
            "models": {"gpt-image-1-mini": "gpt-image-1-mini"},
        },
    }


@pytest.fixture
async def client(tmp_path: Path, xai: FakeXAI, host: FakeOpenAI) -> AsyncIterator[httpx.AsyncClient]:
    xai.requests.clear()
    host.requests.clear()
    settings = Settings(data_dir=tmp_path, signing_key="k", providers=_providers(xai, host))
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


def _sent(fake: Any) -> Any:
    return [r for r in fake.requests if r.path.startswith("/v1/images")][-1]


# --- configuration ---------------------------------------------------------------------------------


def test_each_table_is_validated_by_its_kinds_settings(tmp_path: Path, xai: FakeXAI, host: FakeOpenAI) -> None:
    settings = Settings(data_dir=tmp_path, providers={**_providers(xai, host), "fal": {"queue_url": "http://q"}})
    assert isinstance(settings.providers["xai"], CompatibleSettings)
    assert isinstance(settings.providers["fal"], FalSettings)
    registry = build_registry(settings)
    assert {"xai", "together", "strict", "openai", "fal", "sandbox"} <= set(registry.names())


@pytest.mark.parametrize(
    ("providers", "words"),
    [
        ({"acme": {"base_url": "http://h"}}, "set kind"),  # not a kind's name, and no kind
        ({"acme": {"kind": "no-such-kind"}}, "no-such-kind"),
        ({"openai": {"queue_url": "http://q"}}, "queue_url"),  # fal's setting in an openai table
        ({"xai": {"kind": "openai-compatible", "size_field": "pixels"}}, "size_field"),
        ({"xai": {"kind": "openai-compatible", "models": {"grok": ""}}}, "models"),
    ],
)
def test_a_bad_provider_table_names_itself(providers: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(providers=providers)
    assert words in str(caught.value) and "[providers." in str(caught.value)


def test_an_openai_compatible_instance_needs_a_base_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, providers={"host": {"kind": "openai-compatible"}})
    with pytest.raises(ConfigError, match="base_url is required"):
        build_registry(settings)


# --- xAI's quirks as data ----------------------------------------------------------------------------


async def test_xai_generation_sends_an_aspect_ratio_and_asks_for_base64(client, xai: FakeXAI) -> None:
    body = {"model": "grok-imagine-image", "prompt": "a comet", "size": "1920x1080", "quality": "high"}
    response = await client.post("/v1/images/generations", json={**body, "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imagegate"]["provider"] == "xai"
    sent = _sent(xai)
    assert sent.json["aspect_ratio"] == "16:9" and sent.json["response_format"] == "b64_json"
    assert not {"size", "quality", "output_format"} & set(sent.json)
    assert sent.headers["authorization"] == f"Bearer {XAI_KEY}"
    decisions = {d["param"]: d for d in result["imagegate"]["decisions"]}
    assert decisions["quality"]["handling"] == "dropped"
    assert open_image(pybase64.b64decode(result["data"][0]["b64_json"])).size[0] > 0


async def test_xai_edit_goes_as_json_with_data_urls(client, xai: FakeXAI) -> None:
    files = [("image[]", (f"{i}.png", png_bytes(64, 64, (i * 60, 20, 20)), "image/png")) for i in range(2)]
    response = await client.post(
        "/v1/images/edits", data={"model": "grok-imagine-image", "prompt": "merge them"}, files=files
    )
    assert response.status_code == 200, response.text
    sent = _sent(xai).json
    assert [ref["url"][:22] for ref in sent["images"]] == ["data:image/png;base64,"] * 2
    assert "image" not in sent


async def test_four_reference_images_to_xai_are_refused_before_any_call(client, xai: FakeXAI) -> None:
    files = [("image[]", (f"{i}.png", png_bytes(32, 32), "image/png")) for i in range(4)]
    response = await client.post("/v1/images/edits", data={"model": "grok-imagine-image", "prompt": "x"}, files=files)
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
    assert not [r for r in xai.requests if r.path.startswith("/v1/images")]


# --- a host that refuses response_format; a model map --------------------------------------------------


async def test_a_host_that_refuses_response_format_answers_400_naming_it(client, host: FakeOpenAI) -> None:
    response = await client.post("/v1/images/generations", json={"model": "strict/gpt-image-1-mini", "prompt": "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format" and "strict" in error["message"]
    assert HOST_KEY not in response.text


async def test_a_model_map_adds_an_offering_served_with_the_instances_key(client, host: FakeOpenAI) -> None:
    response = await client.post("/v1/images/generations", json={"model": "together/gpt-image-1.5", "prompt": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["imagegate"]["provider"] == "together"
    sent = _sent(host)
    assert sent.json["model"] == "gpt-image-1.5" and "response_format" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {HOST_KEY}"
    offerings = (await client.get("/v1/models/gpt-image-1.5")).json()["providers"]
    assert "together" in {o["provider"] for o in offerings}


async def test_a_wrong_instance_key_disables_that_instance_only_and_never_echoes(
    tmp_path: Path, xai: FakeXAI, host: FakeOpenAI
) -> None:
    wrong = "xai-wrong-canary-5555"
    settings = Settings(data_dir=tmp_path, signing_key="k", providers=_providers(xai, host, key=wrong))
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/v1/images/generations", json={"model": "xai/grok-imagine-image", "prompt": "x"})
        assert response.status_code in (502, 503) and wrong not in response.text
        assert app.state.registry.get("together").available()
    await app.state.registry.aclose()
    await app.state.runtime.aclose()
