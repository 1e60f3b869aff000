"""Vertex AI through the whole gateway: Imagen 4 with a seed (kept active by the operator after Google's
retirement, as docs/configuration.md shows) and a Gemini model on Vertex, with a service-account file
whose token the fake token endpoint mints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pybase64
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from imagegate.config import Settings
from imagegate.web.app import create_app
from tests.fakes.vertex import FakeVertex
from tests.providers.test_vertex_adapter import EMAIL, PROJECT, _service_account


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fake(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeVertex]:
    server = FakeVertex(project=PROJECT, public_key=signing_key.public_key(), client_email=EMAIL)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(tmp_path: Path, fake: FakeVertex, signing_key: rsa.RSAPrivateKey) -> AsyncIterator[httpx.AsyncClient]:
    key_file = _service_account(tmp_path / "sa.json", signing_key, fake.token_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        signing_key="k",
        default_response_format="b64_json",
        providers={"vertex": {"project": PROJECT, "credentials_file": str(key_file), "base_url": fake.root}},
        catalog={"status": {"imagen-4.0-generate": {"vertex": "active"}}},
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


async def test_imagen_4_with_a_seed_through_the_gateway(client, fake: FakeVertex) -> None:
    body = {"model": "imagen-4.0-generate", "prompt": "a red kite", "seed": 42, "aspect_ratio": "16:9"}
    first = await client.post("/v1/images/generations", json=body)
    second = await client.post("/v1/images/generations", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["imagegate"]["provider"] == "vertex"
    assert pybase64.b64decode(first.json()["data"][0]["b64_json"]) == pybase64.b64decode(
        second.json()["data"][0]["b64_json"]
    )
    sent = [r for r in fake.requests if r.path.endswith(":predict")][-1]
    assert f"/v1/projects/{PROJECT}/locations/global/" in sent.path
    assert sent.json["parameters"]["seed"] == 42 and sent.json["parameters"]["aspectRatio"] == "16:9"
    assert sent.headers["authorization"].startswith("Bearer ")


async def test_imagen_4_is_refused_without_the_override_naming_its_successor(
    tmp_path: Path, fake: FakeVertex, signing_key: rsa.RSAPrivateKey
) -> None:
    key_file = _service_account(tmp_path / "sa.json", signing_key, fake.token_url)
    vertex = {"project": PROJECT, "credentials_file": str(key_file), "base_url": fake.root}
    app = create_app(Settings(data_dir=tmp_path / "data", signing_key="k", providers={"vertex": vertex}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/v1/images/generations", json={"model": "imagen-4.0-fast-generate", "prompt": "x"})
    assert response.status_code >= 400 and "gemini-3.1-flash-image" in response.json()["error"]["message"]
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


async def test_a_gemini_model_on_vertex(client, fake: FakeVertex) -> None:
    body = {"model": "vertex/gemini-3-pro-image", "prompt": "a lighthouse", "aspect_ratio": "3:2"}
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["imagegate"]["provider"] == "vertex"
    sent = [r for r in fake.requests if r.path.endswith(":generateContent")][-1]
    assert sent.json["generationConfig"]["imageConfig"]["aspectRatio"] == "3:2"
