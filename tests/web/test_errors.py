"""Unexpected failures: a bare 500 in OpenAI's shape, no internals, the request id to quote."""

from __future__ import annotations

import httpx

from imagegate.config import SandboxSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import UpstreamError
from imagegate.providers.base import CallContext, EditInputs, ProviderResult
from imagegate.providers.registry import build_registry
from imagegate.service import ImageService
from imagegate.web.app import create_app


class Exploding:
    fallback_only = False

    def __init__(self, name: str, error: Exception) -> None:
        self.name = name
        self.error = error

    def available(self) -> bool:
        return True

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        raise self.error

    async def aclose(self) -> None:
        return None


def _client(tmp_path, provider) -> httpx.AsyncClient:
    settings = Settings(data_dir=tmp_path, signing_key="k", sandbox=SandboxSettings(enabled=False))
    registry = build_registry(settings)
    registry.register(provider)
    app = create_app(settings, registry=registry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gw")


async def test_unexpected_exception_is_a_clean_500(tmp_path, monkeypatch):
    async def broken(self, *args: object) -> None:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(ImageService, "execute", broken)
    async with _client(tmp_path, Exploding("fal", UpstreamError("unused"))) as http:
        response = await http.post("/v1/images/generations", json={"prompt": "x", "model": "flux-1-schnell"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "secret" not in error["message"]
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]


async def test_a_crashing_provider_is_a_failed_attempt_naming_only_the_exception_type(tmp_path):
    async with _client(tmp_path, Exploding("fal", RuntimeError("secret detail /etc/passwd"))) as http:
        response = await http.post("/v1/images/generations", json={"prompt": "x", "model": "flux-1-schnell"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "RuntimeError" in error["message"]
    assert "secret" not in response.text and "/etc/passwd" not in response.text


async def test_upstream_failure_is_a_502_listing_the_attempt(tmp_path):
    async with _client(tmp_path, Exploding("fal", UpstreamError("fal returned 503"))) as http:
        response = await http.post("/v1/images/generations", json={"prompt": "x", "model": "flux-1-schnell"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert list((tmp_path / "files").iterdir()) == []
