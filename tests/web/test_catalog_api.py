"""Models endpoints, lifecycle routing, signed file links, health and the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import httpx

from imagegate.config import CatalogSettings, SandboxSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.imaging.convert import encode_image
from imagegate.imaging.render import render_generation
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult
from imagegate.providers.registry import ProviderRegistry, build_registry
from imagegate.web.app import create_app


class StubUpstream:
    """A plugin-style provider registered under a catalog provider name, for routing tests."""

    fallback_only = False

    def __init__(self, name: str, latency: float = 0.0) -> None:
        self.name = name
        self.latency = latency
        self.calls: list[ProviderJob] = []
        self.active = 0
        self.peak = 0  # the most calls in progress at once

    def available(self) -> bool:
        return True

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        self.calls.append(job)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.active -= 1
        dims = job.size.dims
        width, height = (dims.width, dims.height) if dims else (1024, 1024)
        images = [
            ProducedImage(
                encode_image(
                    render_generation(
                        prompt=job.prompt,
                        seed=0,
                        width=width,
                        height=height,
                        index=job.first_index + i,
                        model=job.provider_model,
                        transparent=False,
                    ),
                    job.output_format,
                    None,
                ),
                job.output_format,
            )
            for i in range(job.n)
        ]
        return ProviderResult(images=images, quality=job.quality, background="opaque")

    async def aclose(self) -> None:
        return None


def _client(settings: Settings, *providers: StubUpstream) -> httpx.AsyncClient:
    registry = build_registry(settings)
    for provider in providers:
        registry.register(provider)
    app = create_app(settings, registry=registry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_models_list_and_detail(client):
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    ids = {m["id"] for m in listing["data"]}
    assert {"gpt-image-1", "gpt-image-2", "dall-e-3", "flux-1-schnell", "flux-kontext-pro"} <= ids
    detail = (await client.get("/v1/models/gpt-image-1")).json()
    assert detail["object"] == "model" and detail["max_input_images"] == 10
    assert detail["modes"] == ["text-to-image", "image-edit"]
    providers = {p["provider"]: p for p in detail["providers"]}
    assert set(providers) == {"openai", "fal", "sandbox"}
    assert providers["openai"]["status"] == "retired"
    assert providers["openai"]["successor"] == "gpt-image-2.5-sunburst"
    prices = {(p["quality"], p["size"]): p["usd"] for p in providers["openai"]["pricing"]["per_image"]}
    assert prices[("high", "1536x1024")] == "0.25" and prices[("low", "1024x1024")] == "0.011"
    assert providers["openai"]["pricing"]["tokens_per_million_usd"]["image_output"] == "40"
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


async def test_retired_offering_is_never_routed_to_and_names_successor(tmp_path):
    settings = Settings(data_dir=tmp_path, signing_key="k", sandbox=SandboxSettings(enabled=False))
    openai = StubUpstream("openai")
    async with _client(settings, openai) as http:
        response = await http.post("/v1/images/generations", json={"prompt": "x", "model": "gpt-image-1"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "model_retired" and error["param"] == "model"
        assert "gpt-image-2.5-sunburst" in error["message"] and "2026-10-23" in error["message"]
        assert openai.calls == []
        ok = await http.post("/v1/images/generations", json={"prompt": "x", "model": "gpt-image-1.5"})
        assert ok.status_code == 200 and ok.json()["imagegate"]["provider"] == "openai"


async def test_operator_can_override_a_status(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        signing_key="k",
        sandbox=SandboxSettings(enabled=False),
        catalog=CatalogSettings(status={"gpt-image-1": {"openai": "active"}}),
    )
    openai = StubUpstream("openai")
    async with _client(settings, openai) as http:
        response = await http.post(
            "/v1/images/generations",
            json={"prompt": "x", "model": "gpt-image-1", "quality": "low", "response_format": "b64_json"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["imagegate"]["provider"] == "openai"
        assert body["imagegate"]["cost_usd"] == "0.011"
        assert response.headers["x-imagegate-cost-usd"] == "0.011"


async def test_sandbox_steps_aside_once_a_real_provider_is_available(tmp_path):
    settings = Settings(data_dir=tmp_path, signing_key="k")
    fal = StubUpstream("fal")
    async with _client(settings, fal) as http:
        served = await http.post("/v1/images/generations", json={"prompt": "x", "model": "flux-1-schnell"})
        assert served.json()["imagegate"]["provider"] == "fal"
        nobody = await http.post("/v1/images/generations", json={"prompt": "x", "model": "gpt-image-2"})
        assert nobody.status_code == 503
        forced = await http.post("/v1/images/generations", json={"prompt": "x", "model": "sandbox/gpt-image-2"})
        assert forced.status_code == 200 and forced.json()["imagegate"]["provider"] == "sandbox"


async def test_fan_out_runs_calls_in_parallel(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        signing_key="k",
        sandbox=SandboxSettings(enabled=False),
        catalog=CatalogSettings(status={"dall-e-3": {"openai": "active"}}),
    )
    openai = StubUpstream("openai", latency=0.4)
    async with _client(settings, openai) as http:
        response = await http.post(
            "/v1/images/generations",
            json={"prompt": "x", "model": "dall-e-3", "n": 4, "response_format": "b64_json"},
        )
    assert response.status_code == 200, response.text
    assert len(openai.calls) == 4 and all(job.n == 1 for job in openai.calls)
    assert len(response.json()["data"]) == 4
    assert openai.peak == 4  # all four calls were in progress at once, not one after another


async def test_signed_links_tampered_and_expired(client):
    body = (await client.post("/v1/images/generations", json={"prompt": "link"})).json()
    url = body["data"][0]["url"]
    assert (await client.get(url)).status_code == 200
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    response = await client.get(tampered)
    assert response.status_code == 403 and response.json()["error"]["code"] == "invalid_signature"
    unsigned = url.split("?")[0]
    assert (await client.get(unsigned)).status_code == 403
    file_id = unsigned.rsplit("/", 1)[1]
    signer = client.app.state.signer
    expired_query, _ = signer.query(file_id, now=time.time() - 7200)
    response = await client.get(f"{unsigned}?{expired_query}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_expired"
    other_id_query, _ = signer.query("img_" + "A" * 22)
    assert (await client.get(f"/v1/files/img_{'A' * 22}?{other_id_query}")).status_code == 404


async def test_health_and_openapi(client):
    health = (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["providers"]["sandbox"] is True
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    edits = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(edits)
    multipart = document["components"]["schemas"]["EditMultipart"]["properties"]
    assert multipart["image[]"]["items"]["format"] == "binary" and "mask" in multipart
    for path in (
        "/v1/images/generations",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/files/{file_id}",
        "/healthz",
    ):
        assert path in document["paths"]


def test_openapi_document_is_valid(settings):
    from openapi_spec_validator import validate

    from imagegate.web.openapi import document

    validate(document(settings))


def test_sandbox_offering_mirrors_reference(settings):
    registry: ProviderRegistry = build_registry(settings)
    app = create_app(settings, registry=registry)
    model = app.state.catalog.get("flux-1-schnell")
    sandbox = registry.get("sandbox").extra_offering(model)
    assert sandbox.caps.sizes == model.offerings[0].caps.sizes
    assert sandbox.pricing.free and sandbox.lifecycle.status_on(date.today()) == "active"


async def test_root_redirects_to_the_playground(client):
    response = await client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/playground"
