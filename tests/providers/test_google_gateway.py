"""Gemini through the whole gateway (the `google` kind registered like every built-in): a 16:9 2K
generation and a 3-image edit via the public API, priced and listed as served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pybase64
import pytest

from imagegate.config import Settings
from imagegate.web.app import create_app
from tests.fakes.google import FakeGoogle
from tests.helpers import open_image, png_bytes

KEY = "AIza-gateway-canary-0000000000000"


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle(KEY)
    with fake.run_in_thread():
        yield fake


@pytest.fixture
async def client(tmp_path: Path, google: FakeGoogle) -> AsyncIterator[httpx.AsyncClient]:
    google.requests.clear()
    settings = Settings(
        data_dir=tmp_path, signing_key="k", providers={"google": {"base_url": google.base_url, "api_key": KEY}}
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


async def test_gemini_16_9_at_2k_through_the_gateway(client, google: FakeGoogle) -> None:
    body = {
        "model": "nano-banana-pro",
        "prompt": "a lighthouse",
        "aspect_ratio": "16:9",
        "resolution": "2K",
        "response_format": "b64_json",
    }
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imagegate"]["provider"] == "google"
    # Gemini's own 16:9 2K size (the catalog's table): not exactly 16:9
    assert open_image(pybase64.b64decode(result["data"][0]["b64_json"])).size == (2752, 1536)
    assert result["size"] == "2752x1536"
    sent = [r for r in google.requests if ":generateContent" in r.path][-1]
    assert sent.json["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert sent.headers["x-goog-api-key"] == KEY and "key=" not in sent.path
    assert result["imagegate"]["cost_usd"] is not None


async def test_a_three_image_gemini_edit(client, google: FakeGoogle) -> None:
    files = [("image[]", (f"{i}.png", png_bytes(128, 128, (i * 80, 40, 40)), "image/png")) for i in range(3)]
    data = {"model": "gemini-3-pro-image-preview", "prompt": "combine them"}
    response = await client.post("/v1/images/edits", data=data, files=files)
    assert response.status_code == 200, response.text
    sent = [r for r in google.requests if ":generateContent" in r.path][-1]
    parts = sent.json["contents"][0]["parts"]
    assert sum(1 for part in parts if "inlineData" in part) == 3


async def test_the_model_lists_google_as_served(client) -> None:
    providers = {
        p["provider"]: p for p in (await client.get("/v1/models/gemini-3-pro-image-preview")).json()["providers"]
    }
    assert providers["google"]["serving"] == "ready"


async def test_fifteen_reference_images_to_a_model_that_takes_fourteen_are_refused(client, google: FakeGoogle) -> None:
    files = [("image[]", (f"{i}.png", png_bytes(32, 32), "image/png")) for i in range(15)]
    response = await client.post("/v1/images/edits", data={"model": "gemini-3-pro-image", "prompt": "x"}, files=files)
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
    assert not [r for r in google.requests if ":generateContent" in r.path]


async def test_an_aspect_ratio_the_model_lacks_gets_the_nearest_and_says_so(client, google: FakeGoogle) -> None:
    body = {"model": "gemini-3-pro-image", "prompt": "a panorama", "aspect_ratio": "5:1"}
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    decision = next(d for d in response.json()["imagegate"]["decisions"] if d["param"] == "size")
    assert decision["handling"] == "converted" and decision["asked"].startswith("5:1") and "21:9" in decision["sent"]
    sent = [r for r in google.requests if ":generateContent" in r.path][-1]
    assert sent.json["generationConfig"]["imageConfig"]["aspectRatio"] == "21:9"
