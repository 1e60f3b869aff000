"""End to end with the official `openai` SDK against one `imagegate serve` process configured with every
new provider kind, each in front of its fake: Gemini 16:9 at 2K, a 3-image Gemini edit, Imagen 4 on
Vertex with a seed, an Azure edit with a mask, xAI through an openai-compatible instance. Each test
checks what the SDK got and what the fake recorded; run with `-s` to print the transcript (the SDK call
and the upstream request)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pybase64
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from tests.fakes.azure import FakeAzure
from tests.fakes.google import FakeGoogle
from tests.fakes.vertex import FakeVertex
from tests.fakes.xai import FakeXAI
from tests.gateway_process import gateway_process
from tests.helpers import mask_bytes, png_bytes

GOOGLE_KEY = "AIza-e2e-kinds-google-0123456789abcdef"
AZURE_KEY = "azure-e2e-kinds-0123456789"
XAI_KEY = "xai-e2e-kinds-0123456789"
PROJECT = "imagegate-e2e"
EMAIL = "e2e@imagegate-e2e.iam.gserviceaccount.com"


@contextlib.contextmanager
def _serving(server: Any) -> Iterator[Any]:
    """A fake whose `start()` is a coroutine, served from a thread with its own loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    google = FakeGoogle(GOOGLE_KEY)
    azure = FakeAzure(AZURE_KEY, {"img-e2e": "gpt-image-1.5"})
    xai = FakeXAI(key=XAI_KEY)
    vertex = FakeVertex(project=PROJECT, public_key=key.public_key(), client_email=EMAIL)
    with google.run_in_thread(), azure.run_in_thread(), xai.run_in_thread(), _serving(vertex):
        account = tmp_path_factory.mktemp("sa") / "service-account.json"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        account.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": PROJECT,
                    "private_key_id": "e2e",
                    "private_key": pem,
                    "client_email": EMAIL,
                    "client_id": "1",
                    "token_uri": vertex.token_url,
                }
            )
        )
        yield {"google": google, "azure": azure, "xai": xai, "vertex": vertex, "account": account}


@pytest.fixture(scope="module")
def sdk(fakes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = f"""
default_response_format = "b64_json"
request_timeout_seconds = 30
[providers.google]
base_url = "{fakes["google"].base_url}"
api_key_env = "E2E_KINDS_GOOGLE_KEY"
[providers.vertex]
project = "{PROJECT}"
credentials_file = "{fakes["account"]}"
base_url = "{fakes["vertex"].root}"
[providers.azure]
kind = "azure-openai"
api_key_env = "E2E_KINDS_AZURE_KEY"
endpoint = "{fakes["azure"].root_url}"
deployments = {{ "gpt-image-1.5" = "img-e2e" }}
[providers.xai]
kind = "openai-compatible"
api_key_env = "E2E_KINDS_XAI_KEY"
base_url = "{fakes["xai"].base_url}"
response_format = "b64_json"
size_field = "aspect_ratio"
output_fields = false
json_edits = true
[catalog.status."imagen-4.0-generate"]
vertex = "active"
"""
    env = {"E2E_KINDS_GOOGLE_KEY": GOOGLE_KEY, "E2E_KINDS_AZURE_KEY": AZURE_KEY, "E2E_KINDS_XAI_KEY": XAI_KEY}
    with gateway_process(tmp_path_factory.mktemp("gw"), config, env) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="caller-key-unused", max_retries=0)


def _image(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(pybase64.b64decode(b64)))
    image.load()
    return image


def _last(fake: Any, path_part: str) -> Any:
    return [r for r in fake.requests if path_part in r.path][-1]


def _transcript(call: str, result: Any, upstream: Any) -> None:
    meta = result.model_extra["imagegate"]
    body = upstream.json if upstream.json is not None else {"fields": upstream.fields, "files": upstream.files}
    shown = json.dumps(body, default=str)
    if len(shown) > 400:
        shown = shown[:400] + "..."
    print(f"\n$ {call}\n  -> provider {meta['provider']}, size {result.size}, cost {meta['cost_usd']}")
    print(f"  upstream {upstream.method} {upstream.path}\n  body {shown}")


def test_gemini_16_9_at_2k(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.generate(
        model="gemini-3-pro-image",
        prompt="a lighthouse at dusk",
        extra_body={"aspect_ratio": "16:9", "resolution": "2K"},
    )
    assert _image(result.data[0].b64_json).size == (2752, 1536)
    sent = _last(fakes["google"], ":generateContent")
    assert sent.json["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert sent.headers["x-goog-api-key"] == GOOGLE_KEY
    _transcript("images.generate(model='gemini-3-pro-image', aspect_ratio='16:9', resolution='2K')", result, sent)


def test_a_three_image_gemini_edit(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    images = [(f"in{i}.png", png_bytes(256, 256, (i * 80, 60, 160)), "image/png") for i in range(3)]
    result = sdk.images.edit(model="gemini-3-pro-image", prompt="one scene with all three", image=images)
    assert result.model_extra["imagegate"]["provider"] == "google"
    sent = _last(fakes["google"], ":generateContent")
    assert sum(1 for part in sent.json["contents"][0]["parts"] if "inlineData" in part) == 3
    _transcript("images.edit(model='gemini-3-pro-image', image=[3 PNGs])", result, sent)


def test_imagen_4_on_vertex_with_a_seed(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    first = sdk.images.generate(model="imagen-4.0-generate", prompt="a red kite", extra_body={"seed": 7})
    second = sdk.images.generate(model="imagen-4.0-generate", prompt="a red kite", extra_body={"seed": 7})
    assert first.data[0].b64_json == second.data[0].b64_json
    sent = _last(fakes["vertex"], ":predict")
    assert sent.json["parameters"]["seed"] == 7 and sent.headers["authorization"].startswith("Bearer ")
    assert f"/projects/{PROJECT}/locations/global/" in sent.path
    _transcript("images.generate(model='imagen-4.0-generate', seed=7) x2: same bytes", first, sent)


def test_an_azure_edit_with_a_mask(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.edit(
        model="azure/gpt-image-1.5",
        prompt="paint the left half gold",
        image=("base.png", png_bytes(256, 256), "image/png"),
        mask=("mask.png", mask_bytes(256, 256, (0, 0, 128, 256)), "image/png"),
    )
    assert result.model_extra["imagegate"]["provider"] == "azure"
    sent = _last(fakes["azure"], "/openai/deployments/")
    assert sent.path.startswith("/openai/deployments/img-e2e/images/edits?api-version=")
    assert sent.headers["api-key"] == AZURE_KEY and "model" not in sent.fields
    assert {name for name, _, _ in sent.files} == {"image", "mask"}
    _transcript("images.edit(model='azure/gpt-image-1.5', image=..., mask=...)", result, sent)


def test_xai_through_an_openai_compatible_instance(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.generate(model="grok-imagine-image", prompt="a comet over the sea", size="1536x1024")
    assert result.model_extra["imagegate"]["provider"] == "xai"
    sent = _last(fakes["xai"], "/images/generations")
    assert sent.json["aspect_ratio"] == "3:2" and "size" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {XAI_KEY}"
    _transcript("images.generate(model='grok-imagine-image', size='1536x1024')", result, sent)


def test_the_new_models_are_listed(sdk: openai.OpenAI) -> None:
    models = {m.id for m in sdk.models.list()}
    assert {"gemini-3-pro-image", "imagen-4.0-generate", "grok-imagine-image"} <= models
