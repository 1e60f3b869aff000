"""A fake Azure OpenAI image deployment: the fake OpenAI's validation and results behind Azure's URLs and
auth (shared/providers-2.md section 7): ``POST /openai/deployments/{deployment}/images/{generations|edits}
?api-version=...``, the key in an ``api-key`` header, and no ``model`` in the body (the deployment names
the model; a body that sends one is refused here, as it breaks some models on Azure).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from tests.fakes.faults import RecordedRequest, lower_headers
from tests.fakes.openai import (
    BLOCK_WORD,
    ApiError,
    FakeOpenAI,
    _blocked_body,
    _json,
    error_body,
    read_incoming,
    validate,
)

API_VERSIONS = ("2025-04-01-preview", "2024-10-21")


class FakeAzure(FakeOpenAI):
    def __init__(self, key: str, deployments: dict[str, str]) -> None:
        super().__init__(key=key)
        self.deployments = dict(deployments)  # deployment name -> OpenAI model

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/openai/deployments/{deployment}/images/generations", self._azure_generations)
        app.router.add_post("/openai/deployments/{deployment}/images/edits", self._azure_edits)
        return app

    async def _azure_generations(self, request: web.Request) -> web.StreamResponse:
        return await self._azure(request, "generations")

    async def _azure_edits(self, request: web.Request) -> web.StreamResponse:
        return await self._azure(request, "edits")

    def _check_key(self, request: web.Request) -> dict[str, Any] | None:
        if request.headers.get("api-key") == self.key:
            return None
        return {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}

    async def _azure(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        started = time.monotonic()
        incoming = await read_incoming(request, endpoint)
        fields = dict(incoming.fields) if incoming.form else {}
        recorded = RecordedRequest(request.method, request.path_qs, lower_headers(request), incoming.json, fields)
        recorded.files = list(incoming.files)
        self.requests.append(recorded)
        fault = self.script.next()
        if fault is not None:
            faulted = await self._apply_fault(request, fault, incoming)
            if faulted is not None:
                return faulted
        headers = self._headers(started)
        denied = self._check_key(request)
        if denied is not None:
            return _json(401, denied, headers)
        if request.query.get("api-version") not in API_VERSIONS:
            return _json(404, {"error": {"code": "404", "message": "Resource not found"}}, headers)
        model = self.deployments.get(request.match_info["deployment"])
        if model is None:
            body = {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}}
            return _json(404, body, headers)
        if "model" in incoming.fields:
            return _json(
                400,
                error_body("model must not be sent to a deployment", "invalid_request_error", "model", None),
                headers,
            )
        incoming.fields["model"] = model
        try:
            call = validate(incoming, endpoint)
        except ApiError as exc:
            return _json(400, exc.body(), headers)
        if BLOCK_WORD in call.prompt:
            return _json(400, _blocked_body(), headers)
        if call.stream:
            return await self._stream(request, call, headers)
        await asyncio.sleep(0)
        return _json(200, self._result(request, call), headers)
