"""A fake Replicate predictions API on 127.0.0.1 (shared/providers.md §3), for adapter tests.

Routes under ``/v1``: ``POST /models/{owner}/{name}/predictions`` (official models),
``POST /predictions`` (a version pin), ``GET /predictions/{id}``, ``POST /predictions/{id}/cancel``;
output files at ``/files/{id}-{i}.{ext}`` (never asked for a token; the request is recorded so a
test can see no Authorization came). Creates answer 201 with the prediction; ``Prefer: wait=N``
holds the reply until the prediction is done or ``min(N, hold_cap)`` seconds passed.

Each prediction takes `job_seconds`, then ends as the next entry of `outcomes` says (default
``succeeded``): ``failed`` (with `fail_error`), ``canceled`` (by Replicate), or ``stall`` (runs
until canceled). `script` (tests/fakes/faults.py) applies to creates, `poll_script` to polls.
Errors are problem details; a bad ``aspect_ratio`` is a 422 with ``invalid_fields``.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.faults import Fault, FaultScript
from tests.fakes.images import make_image
from tests.fakes.server import FakeAPI, json_response

RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
MEGAPIXELS = {"1": 1.0, "0.25": 0.25}
FORMATS = {"webp": "webp", "jpg": "jpeg", "png": "png"}
MODELS = frozenset({"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"})


@dataclass
class FakePrediction:
    id: str
    model: str
    input: dict[str, Any]
    done_at: float
    outcome: str
    status: str = "starting"
    output: list[str] | None = None
    error: str | None = None
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)


class FakeReplicate(FakeAPI):
    base_path = "/v1"
    thread_name = "fake-replicate"

    def __init__(self, key: str = "r8_fake", seed: int = 0, job_seconds: float = 0.0, hold_cap: float = 60.0) -> None:
        super().__init__(seed)
        self.key = key
        self.job_seconds = job_seconds
        self.hold_cap = hold_cap
        self.outcomes: deque[str] = deque()
        self.fail_error = "CUDA out of memory"
        self.poll_script = FaultScript(seed)
        self.predictions: dict[str, FakePrediction] = {}
        self.cancels: list[str] = []

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create_official)
        app.router.add_post("/v1/predictions", self._create_version)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/files/{file}", self._file)
        return app

    def error_body(self, status: int) -> Any:
        return {"title": f"HTTP {status}", "status": status, "detail": f"HTTP {status}"}

    # --- predictions -----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    async def _create_official(self, request: web.Request) -> web.StreamResponse:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        return await self._create(request, model)

    async def _create_version(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, None)

    async def _create(self, request: web.Request, model: str | None) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        fault = self.script.next()
        if fault is not None:
            answer = await self.fault_answer(request, fault, b'{"id": "x", "status": "starting"}')
            if answer is not None:
                return answer
        if not self._authorized(request):
            detail = "You did not pass a valid authentication token"
            return json_response(401, {"title": "Unauthenticated", "detail": detail, "status": 401})
        if model is None:
            version = body.get("version")
            if not isinstance(version, str) or not version:
                return _problem(422, "Invalid version or not permitted", "version")
            model = "black-forest-labs/flux-schnell"
        elif model not in MODELS:
            return json_response(
                404, {"title": "Not found", "detail": "The requested resource could not be found", "status": 404}
            )
        inputs = body.get("input")
        problem = _validate(inputs)
        if problem is not None:
            return problem
        assert isinstance(inputs, dict)
        outcome = self.outcomes.popleft() if self.outcomes else "succeeded"
        prediction = FakePrediction(uuid.uuid4().hex[:20], model, inputs, time.monotonic() + self.job_seconds, outcome)
        self.predictions[prediction.id] = prediction
        wait = _prefer_wait(request.headers.get("Prefer"))
        if wait is not None:
            until = time.monotonic() + min(wait, self.hold_cap)
            while time.monotonic() < until and self._advance(prediction) not in ("succeeded", "failed", "canceled"):
                await asyncio.sleep(0.01)
        self._advance(prediction)
        return json_response(201, self._view(prediction))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        fault = self.poll_script.next()
        if fault is not None:
            answer = await self.fault_answer(request, fault, b'{"id": "x", "status": "processing"}')
            if answer is not None:
                return answer
        if not self._authorized(request):
            return json_response(401, {"title": "Unauthenticated", "detail": "bad token", "status": 401})
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return json_response(404, {"title": "Not found", "detail": "no such prediction", "status": 404})
        self._advance(prediction)
        return json_response(200, self._view(prediction))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        if not self._authorized(request):
            return json_response(401, {"title": "Unauthenticated", "detail": "bad token", "status": 401})
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return json_response(404, {"title": "Not found", "detail": "no such prediction", "status": 404})
        self.cancels.append(prediction.id)
        if prediction.status not in ("succeeded", "failed", "canceled"):
            prediction.status = "canceled"
        return json_response(200, self._view(prediction))

    def _advance(self, prediction: FakePrediction) -> str:
        """Move the prediction along its timeline; returns its status."""
        if prediction.status in ("succeeded", "failed", "canceled"):
            return prediction.status
        if prediction.outcome == "stall" or time.monotonic() < prediction.done_at:
            prediction.status = "processing"
            return prediction.status
        if prediction.outcome == "failed":
            prediction.status, prediction.error = "failed", self.fail_error
        elif prediction.outcome == "canceled":
            prediction.status = "canceled"
        else:
            self._render(prediction)
            prediction.status = "succeeded"
        return prediction.status

    def _render(self, prediction: FakePrediction) -> None:
        inputs = prediction.input
        width, height = dimensions(str(inputs.get("aspect_ratio", "1:1")), str(inputs.get("megapixels", "1")))
        fmt = FORMATS[str(inputs.get("output_format", "webp"))]
        ext = str(inputs.get("output_format", "webp"))
        urls = []
        for index in range(int(inputs.get("num_outputs", 1))):
            name = f"{prediction.id}-{index}.{ext}"
            prediction.files[name] = (make_image(width, height, fmt, seed=self.seed + index), f"image/{fmt}")
            urls.append(f"{self.root_url}/files/{name}")
        prediction.output = urls

    def _view(self, prediction: FakePrediction) -> dict[str, Any]:
        url = f"{self.base_url}/predictions/{prediction.id}"
        view: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "version": "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637",
            "status": prediction.status,
            "input": prediction.input,
            "output": prediction.output if prediction.status == "succeeded" else None,
            "error": prediction.error,
            "logs": "",
            "urls": {"get": url, "cancel": f"{url}/cancel"},
        }
        if prediction.status in ("succeeded", "failed", "canceled"):
            view["metrics"] = {"predict_time": 0.42}
        return view

    # --- files -----------------------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        name = request.match_info["file"]
        for prediction in self.predictions.values():
            if name in prediction.files:
                data, content_type = prediction.files[name]
                return web.Response(body=data, content_type=content_type)
        return web.Response(status=404, text="gone")

    def created(self) -> list[Any]:
        """The recorded create requests (official and version)."""
        return [r for r in self.requests if r.method == "POST" and not r.path.endswith("/cancel")]


def dimensions(ratio: str, megapixels: str) -> tuple[int, int]:
    """About `megapixels` MP at `ratio`, each side a multiple of 16."""
    w, h = (int(part) for part in ratio.split(":"))
    area = MEGAPIXELS.get(megapixels, 1.0) * 1024 * 1024
    width = math.sqrt(area * w / h)
    return max(16, round(width / 16) * 16), max(16, round(width * h / w / 16) * 16)


def _prefer_wait(header: str | None) -> float | None:
    if header is None:
        return None
    name, _, value = header.strip().partition("=")
    if name.strip().lower() != "wait":
        return None
    return float(value) if value.strip() else 60.0


def _validate(inputs: object) -> web.Response | None:
    if not isinstance(inputs, dict) or not isinstance(inputs.get("prompt"), str):
        return _problem(422, "prompt is required", "prompt")
    ratio = inputs.get("aspect_ratio", "1:1")
    if ratio not in RATIOS:
        return _problem(422, f"aspect_ratio must be one of {', '.join(RATIOS)}", "aspect_ratio")
    if str(inputs.get("megapixels", "1")) not in MEGAPIXELS:
        return _problem(422, "megapixels must be one of 1, 0.25", "megapixels")
    if inputs.get("output_format", "webp") not in FORMATS:
        return _problem(422, "output_format must be one of webp, jpg, png", "output_format")
    count = inputs.get("num_outputs", 1)
    if not isinstance(count, int) or not 1 <= count <= 4:
        return _problem(422, "num_outputs must be between 1 and 4", "num_outputs")
    return None


def _problem(status: int, description: str, field_name: str) -> web.Response:
    body = {
        "title": "Input validation failed",
        "status": status,
        "detail": f"- input.{field_name}: {description}\n",
        "invalid_fields": [{"type": "enum", "field": f"input.{field_name}", "description": description}],
    }
    return json_response(status, body)


__all__ = ["FakeReplicate", "Fault", "dimensions"]
