"""A fake Black Forest Labs API: a real aiohttp server on 127.0.0.1.

POST /v1/{endpoint} (shared/providers.md section 6, providers-2.md section 4) checks the ``x-key``
header (none or a wrong one: 403 ``{"detail": "Not authenticated"}``), validates the body per model
(FLUX.2: width/height multiples of 16, 64..2048, at most 4 MP; flux-pro-1.1: 256..1440, multiples of
32; Ultra and Kontext: an `aspect_ratio` between 21:9 and 9:21; base64 `input_image`, `input_image_2`,
... up to the model's limit; a bad value answers 422 with FastAPI's ``{"detail": [{loc, msg, type}]}``)
and answers ``{id, polling_url, cost, input_mp, output_mp}`` (cost in credits at BFL's list prices).
GET /v1/get_result?id=... answers Pending on the first poll of a task, then its final status; GET
/delivery/{id} serves the result (a real image of the task's size, in its output_format), refusing
any request that carries the key.

Prompt words: ``REQUEST_MODERATED``, ``CONTENT_MODERATED``, ``GENERATION_ERROR`` and ``TASK_LOST``
end the task with Request Moderated, Content Moderated, Error and Task not found; ``EXPIRED_SAMPLE``
makes the result URL answer 403 as an expired signed URL does. `polling_base` (default: the fake's
own ``/v1``) is where polling URLs point, to test a polling URL on a foreign host. Faults from the
`FaultScript` apply to submits; `poll_script` to polls.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.faults import ECHO_TOKEN, Fault, FaultScript
from tests.fakes.images import make_image
from tests.fakes.server import FakeAPI, json_response

WORDS = {
    "REQUEST_MODERATED": "Request Moderated",
    "CONTENT_MODERATED": "Content Moderated",
    "GENERATION_ERROR": "Error",
    "TASK_LOST": "Task not found",
}
EXPIRED_WORD = "EXPIRED_SAMPLE"
RATIO_LIMIT = 21 / 9
MEGAPIXEL = 1024 * 1024


def _echo_key(fault: Fault, request: web.Request) -> Fault:
    """The fault with ``{token}`` filled in from the ``x-key`` header (BFL sends no Authorization)."""
    key = request.headers.get("x-key", "")

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(ECHO_TOKEN, key)
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return dataclasses.replace(fault, body=fill(fault.body), headers=fill(fault.headers))


@dataclass(frozen=True)
class ModelSpec:
    """How one endpoint takes its size and inputs, and its price in credits."""

    sizing: str  # "free" (width/height) or "ratio" (aspect_ratio)
    multiple: int = 16
    min_edge: int = 64
    max_edge: int = 2048
    max_pixels: int = 4 * 1024 * 1024
    max_inputs: int = 0
    first_mp: float = 4.0  # credits for the first megapixel (or the whole image)
    extra_mp: float = 0.0  # credits for each further output megapixel
    input_mp: float = 0.0  # credits per input megapixel
    ratio_mp: float = 1.0  # output megapixels of a ratio model
    default: tuple[int, int] = (1024, 1024)


MODELS = {
    "flux-2-pro": ModelSpec("free", max_inputs=8, first_mp=3.0, extra_mp=1.5, input_mp=1.5),
    "flux-2-max": ModelSpec("free", max_inputs=8, first_mp=7.0, extra_mp=3.0, input_mp=3.0),
    "flux-2-flex": ModelSpec("free", max_inputs=8, first_mp=5.0, extra_mp=5.0, input_mp=5.0),
    "flux-2-klein-4b": ModelSpec("free", max_inputs=4, first_mp=1.4, extra_mp=0.1, input_mp=0.1),
    "flux-2-klein-9b": ModelSpec("free", max_inputs=4, first_mp=1.5, extra_mp=0.2, input_mp=0.2),
    "flux-pro-1.1": ModelSpec(
        "free", multiple=32, min_edge=256, max_edge=1440, max_pixels=1440 * 1440, default=(1024, 768)
    ),
    "flux-pro-1.1-ultra": ModelSpec("ratio", first_mp=6.0, ratio_mp=4.0),
    "flux-kontext-pro": ModelSpec("ratio", max_inputs=4, first_mp=4.0),
    "flux-kontext-max": ModelSpec("ratio", max_inputs=4, first_mp=8.0),
}


class Invalid(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name, self.message = field_name, message

    def body(self) -> dict[str, Any]:
        return {"detail": [{"loc": ["body", self.field_name], "msg": self.message, "type": "value_error"}]}


@dataclass
class Task:
    model: str
    prompt: str
    width: int
    height: int
    output_format: str
    inputs: list[tuple[int, int]]
    final: str = "Ready"
    polls: int = 0
    expired: bool = False
    seed: int = 42


@dataclass
class Download:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FakeBFL(FakeAPI):
    """The BFL API with one key; tasks live in memory."""

    base_path = "/v1"
    thread_name = "fake-bfl"

    def __init__(self, key: str, seed: int = 0) -> None:
        super().__init__(seed)
        self.key = key
        self.tasks: dict[str, Task] = {}
        self.downloads: list[Download] = []
        self.poll_script = FaultScript(seed)
        self.polling_base: str | None = None

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/v1/get_result", self._poll)
        app.router.add_post("/v1/{endpoint}", self._submit)
        app.router.add_get("/delivery/{task_id}", self._deliver)
        return app

    def error_body(self, status: int) -> Any:
        return {"detail": f"HTTP {status}"}

    # --- handlers ------------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.record(request, body)
        fault = self.script.next()
        if fault is not None:
            answered = await self.fault_answer(request, _echo_key(fault, request), b'{"id": "x", "polling_url": "x"}')
            if answered is not None:
                return answered
        if request.headers.get("x-key") != self.key:
            return json_response(403, {"detail": "Not authenticated"})
        endpoint = request.match_info["endpoint"]
        spec = MODELS.get(endpoint)
        if spec is None:
            return json_response(404, {"detail": "Not Found"})
        try:
            task = self._task(endpoint, spec, body)
        except Invalid as exc:
            return json_response(422, exc.body())
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = task
        base = self.polling_base or self.base_url
        output_pixels = task.width * task.height
        input_pixels = sum(w * h for w, h in task.inputs)
        return json_response(
            200,
            {
                "id": task_id,
                "polling_url": f"{base}/get_result?id={task_id}",
                "cost": self._cost(spec, output_pixels, input_pixels),
                "input_mp": round(input_pixels / 1_000_000, 2),
                "output_mp": round(output_pixels / 1_000_000, 2),
            },
        )

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        self.record(request, with_query=True)
        fault = self.poll_script.next()
        if fault is not None:
            answered = await self.fault_answer(request, _echo_key(fault, request), b'{"status": "Pending"}')
            if answered is not None:
                return answered
        if request.headers.get("x-key") != self.key:
            return json_response(403, {"detail": "Not authenticated"})
        task_id = request.query.get("id", "")
        task = self.tasks.get(task_id)
        if task is None or task.final == "Task not found":
            return json_response(200, {"id": task_id, "status": "Task not found"})
        task.polls += 1
        if task.polls == 1:
            return json_response(200, {"id": task_id, "status": "Pending", "progress": 0.5})
        if task.final != "Ready":
            return json_response(200, {"id": task_id, "status": task.final, "result": None, "details": {}})
        result = {"sample": f"{self.root_url}/delivery/{task_id}?se=fake-signature", "seed": task.seed}
        return json_response(200, {"id": task_id, "status": "Ready", "result": result, "progress": None})

    async def _deliver(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.downloads.append(Download(request.path_qs, headers))
        if "x-key" in headers or self.key in str(headers):
            return web.Response(status=400, text="credentials are not accepted here")
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return web.Response(status=404, text="not found")
        if task.expired:
            return web.Response(status=403, text="<Error><Code>AuthenticationFailed</Code>Signed expiry time</Error>")
        data = make_image(task.width, task.height, task.output_format)
        return web.Response(body=data, content_type=f"image/{task.output_format}")

    # --- validation ------------------------------------------------------------------------------

    def _task(self, endpoint: str, spec: ModelSpec, body: Any) -> Task:
        if not isinstance(body, dict):
            raise Invalid("body", "Input should be a valid dictionary")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise Invalid("prompt", "Field required")
        output_format = body.get("output_format", "jpeg")
        if output_format not in ("jpeg", "png"):
            raise Invalid("output_format", "Input should be 'jpeg' or 'png'")
        inputs = self._inputs(spec, body)
        if spec.sizing == "free":
            if "aspect_ratio" in body:
                raise Invalid("aspect_ratio", "Extra inputs are not permitted")
            width, height = self._free_size(spec, body, inputs)
        else:
            if "width" in body or "height" in body:
                raise Invalid("width", "Extra inputs are not permitted")
            width, height = self._ratio_size(spec, body.get("aspect_ratio"), inputs)
        task = Task(endpoint, prompt, width, height, output_format, inputs)
        for word, status in WORDS.items():
            if word in prompt:
                task.final = status
        task.expired = EXPIRED_WORD in prompt
        seed = body.get("seed")
        if isinstance(seed, int):
            task.seed = seed
        return task

    @staticmethod
    def _inputs(spec: ModelSpec, body: dict[str, Any]) -> list[tuple[int, int]]:
        names = ["input_image", *(f"input_image_{i}" for i in range(2, 11))]
        found: list[tuple[int, int]] = []
        for index, name in enumerate(names):
            value = body.get(name)
            if value is None:
                continue
            if index != len(found):
                raise Invalid(name, f"{name} given without {names[len(found)]}")
            if len(found) >= spec.max_inputs:
                raise Invalid(name, f"at most {spec.max_inputs} input images")
            try:
                image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
            except (binascii.Error, ValueError, OSError):
                raise Invalid(name, "Input image is not a valid base64 image") from None
            found.append(image.size)
        return found

    @staticmethod
    def _free_size(spec: ModelSpec, body: dict[str, Any], inputs: list[tuple[int, int]]) -> tuple[int, int]:
        width, height = body.get("width"), body.get("height")
        if width is None and height is None:
            return inputs[0] if inputs else spec.default
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise Invalid(name, "Input should be a valid integer")
            if value % spec.multiple or not spec.min_edge <= value <= spec.max_edge:
                raise Invalid(
                    name, f"must be a multiple of {spec.multiple} between {spec.min_edge} and {spec.max_edge}"
                )
        assert isinstance(width, int) and isinstance(height, int)
        if width * height > spec.max_pixels:
            raise Invalid("width", "the image is over the megapixel limit")
        return width, height

    @staticmethod
    def _ratio_size(spec: ModelSpec, ratio: Any, inputs: list[tuple[int, int]]) -> tuple[int, int]:
        if ratio is None:
            if inputs:
                w, h = inputs[0]
                value = w / h
            else:
                value = 1.0
        else:
            parts = ratio.split(":") if isinstance(ratio, str) else []
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise Invalid("aspect_ratio", "aspect_ratio must look like '16:9'")
            value = int(parts[0]) / int(parts[1])
            if not 1 / RATIO_LIMIT - 1e-9 <= value <= RATIO_LIMIT + 1e-9:
                raise Invalid("aspect_ratio", "aspect_ratio must be between 21:9 and 9:21")
        area = spec.ratio_mp * 1024 * 1024
        width = round(math.sqrt(area * value) / 32) * 32
        height = round(math.sqrt(area / value) / 32) * 32
        return width, height

    @staticmethod
    def _cost(spec: ModelSpec, output_pixels: int, input_pixels: int) -> float:
        """Credits: the first megapixel, each further one begun, each input megapixel begun."""
        extra = max(0, math.ceil(output_pixels / MEGAPIXEL) - 1)
        return round(spec.first_mp + spec.extra_mp * extra + spec.input_mp * math.ceil(input_pixels / MEGAPIXEL), 4)
