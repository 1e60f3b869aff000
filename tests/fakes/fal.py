"""A fake fal.ai (sync ``fal.run`` and the queue API) on 127.0.0.1, for adapter and end-to-end tests.

One port, two prefixes: sync ``/run/<endpoint_id>``, queue ``/queue/<endpoint_id>``; status, result
and cancel URLs use ``owner/alias`` only, as fal's do. Images are real, at the right pixel size,
served from ``/files/<id>.<ext>`` (inline data URIs with ``sync_mode: true``).

`script` (tests/fakes/faults.py) applies to submits and sync runs (``stall``: the job never
finishes), `file_script` to ``/files/`` downloads, `job_script` to a queued job's outcome
(``status``: COMPLETED with `error`, its result answers that status and body; ``stall``,
``latency``; ``malformed``/``error_200``/``reset``/``truncate`` spoil its result). A prompt with
``BLOCKED_BY_SAFETY`` gets a 422 ``content_policy_violation``. `validate_at = "result"` reports
invalid input as a failed job instead of a 422 on submit.

    python -m tests.fakes.fal --port 8901 [--key K] [--job-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pybase64
from aiohttp import web

from tests.fakes import faults
from tests.fakes.faults import Fault, FaultScript
from tests.fakes.images import data_uri, make_image
from tests.fakes.server import FakeServer

BLOCK_WORD = "BLOCKED_BY_SAFETY"
MAX_BODY = 256 * 1024 * 1024
PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
GPT_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
Family = Literal["gpt", "flux", "kontext", "recraft", "ideogram"]


@dataclass(frozen=True)
class Endpoint:
    family: Family
    image_field: str | None = None
    formats: tuple[str, ...] = ("jpeg", "png")  # the first is the default
    absent: frozenset[str] = frozenset()  # fields the endpoint's schema lacks: sending one is a 422
    max_n: int = 4


GPT_FORMATS = ("png", "jpeg", "webp")
_NO_N = frozenset({"num_images"})
_NO_FORMAT = frozenset({"output_format"})
ENDPOINTS = {
    "fal-ai/gpt-image-1/text-to-image": Endpoint("gpt", None, GPT_FORMATS),
    "fal-ai/gpt-image-1/edit-image": Endpoint("gpt", "image_urls", GPT_FORMATS),
    "fal-ai/flux/schnell": Endpoint("flux"),
    "fal-ai/flux/dev": Endpoint("flux"),
    "fal-ai/flux-pro/kontext": Endpoint("kontext", "image_url"),
    "fal-ai/flux-pro/kontext/text-to-image": Endpoint("kontext"),
    # Newer models: `image_size` presets or {width, height} like FLUX.1; some lack num_images
    # (one image per call) or output_format (one fixed format).
    "fal-ai/bytedance/seedream/v4.5/text-to-image": Endpoint("flux", None, ("png",), _NO_FORMAT, 6),
    "fal-ai/bytedance/seedream/v4.5/edit": Endpoint("flux", "image_urls", ("png",), _NO_FORMAT, 6),
    "fal-ai/flux-2-pro": Endpoint("flux", None, ("jpeg", "png"), _NO_N, 1),
    "fal-ai/flux-2-pro/edit": Endpoint("flux", "image_urls", ("jpeg", "png"), _NO_N, 1),
    "fal-ai/qwen-image": Endpoint("flux", None, ("png", "jpeg")),
    "fal-ai/recraft/v3/text-to-image": Endpoint("recraft", None, ("webp",), _NO_N | _NO_FORMAT, 1),
    "fal-ai/ideogram/v3": Endpoint("ideogram", None, ("png",), _NO_FORMAT, 4),
}
RECRAFT_STYLES = ("any", "realistic_image", "digital_illustration", "vector_illustration")
IDEOGRAM_SPEEDS = ("TURBO", "BALANCED", "QUALITY")


class FalInputError(Exception):
    """A FastAPI-style validation failure: 422 ``{"detail": [{"loc", "msg", "type"}]}``."""

    def __init__(self, loc: list[str | int], msg: str, kind: str = "literal_error") -> None:
        super().__init__(msg)
        self.loc, self.msg, self.kind = loc, msg, kind

    def body(self) -> dict[str, Any]:
        return {"detail": [{"loc": ["body", *self.loc], "msg": self.msg, "type": self.kind}]}


@dataclass(frozen=True)
class Call:  # a validated model input
    prompt: str
    spec: Endpoint
    n: int
    fmt: str
    width: int
    height: int
    seed: int
    sync_mode: bool
    transparent: bool


# --- validation --------------------------------------------------------------------------------


def validate(spec: Endpoint, body: Any, default_seed: int) -> Call:
    if not isinstance(body, dict):
        raise FalInputError([], "Input should be a valid dictionary", "dict_type")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise FalInputError(["prompt"], "Field required", "missing")
    extra = sorted(spec.absent & body.keys())
    if extra:
        raise FalInputError([extra[0]], "Extra inputs are not permitted", "extra_forbidden")
    n = body.get("num_images", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= spec.max_n:
        raise FalInputError(["num_images"], f"Input should be between 1 and {spec.max_n}", "less_than_equal")
    fmt = _choice(body, "output_format", spec.formats) or spec.formats[0]
    width, height = _dims(spec, body)
    if spec.family == "gpt":
        _choice(body, "quality", ("auto", "low", "medium", "high"))
        _choice(body, "background", ("auto", "transparent", "opaque"))
        if spec.image_field:
            _choice(body, "input_fidelity", ("low", "high"))
    if spec.family == "kontext":
        _choice(body, "safety_tolerance", ("1", "2", "3", "4", "5", "6"))
    if spec.family == "recraft":
        _choice(body, "style", RECRAFT_STYLES)
    if spec.family == "ideogram":
        _choice(body, "rendering_speed", IDEOGRAM_SPEEDS)
    if spec.image_field == "image_urls":
        _image_list(body)
    elif spec.image_field == "image_url":
        _image_ref(body.get("image_url"), ["image_url"])
    seed = body.get("seed", default_seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise FalInputError(["seed"], "Input should be a valid integer", "int_type")
    sync_mode = body.get("sync_mode", False)
    if not isinstance(sync_mode, bool):
        raise FalInputError(["sync_mode"], "Input should be a valid boolean", "bool_type")
    transparent = body.get("background") == "transparent" and fmt != "jpeg"
    return Call(prompt, spec, n, fmt, width, height, seed, sync_mode, transparent)


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if value not in allowed:
        listing = ", ".join(f"'{item}'" for item in allowed)
        raise FalInputError([name], f"Input should be {listing}")
    return str(value)


def _dims(spec: Endpoint, body: dict[str, Any]) -> tuple[int, int]:
    if spec.family == "kontext":
        ratio = _choice(body, "aspect_ratio", KONTEXT_RATIOS) or "1:1"
        return kontext_dims(ratio)
    size = body.get("image_size")
    if spec.family == "gpt":
        text = _choice(body, "image_size", GPT_SIZES) or "auto"
        if text == "auto":
            return 1024, 1024
        width, _, height = text.partition("x")
        return int(width), int(height)
    if size is None:
        return PRESETS["landscape_4_3"]
    if isinstance(size, dict):
        return _custom_size(size)
    if size not in PRESETS:
        listing = ", ".join(f"'{item}'" for item in PRESETS)
        raise FalInputError(["image_size"], f"Input should be {listing} or an object with width and height")
    return PRESETS[size]


def _custom_size(size: dict[str, Any]) -> tuple[int, int]:
    result = []
    for name in ("width", "height"):
        value = size.get(name, 512)
        if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 4096:
            raise FalInputError(["image_size", name], "Input should be an integer from 16 to 4096", "int_type")
        result.append(value)
    return result[0], result[1]


def kontext_dims(ratio: str) -> tuple[int, int]:
    """About one megapixel (1024*1024) at `ratio`, each edge a multiple of 16."""
    w, _, h = ratio.partition(":")
    value, area = int(w) / int(h), 1024 * 1024
    width = max(16, math.floor(math.sqrt(area * value) / 16 + 0.5) * 16)
    height = max(16, math.floor(math.sqrt(area / value) / 16 + 0.5) * 16)
    return width, height


def _image_list(body: dict[str, Any]) -> None:
    urls = body.get("image_urls")
    if not isinstance(urls, list) or not urls:
        raise FalInputError(["image_urls"], "Field required", "missing")
    if len(urls) > 16:
        raise FalInputError(["image_urls"], "List should have at most 16 items", "too_long")
    for index, url in enumerate(urls):
        _image_ref(url, ["image_urls", index])


def _image_ref(value: Any, loc: list[str | int]) -> None:
    if not isinstance(value, str) or not value:
        raise FalInputError(loc, "Field required", "missing")
    if value.startswith(("http://", "https://")):
        return
    header, _, payload = value.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise FalInputError(loc, "Input should be a URL or a base64 data URI", "url_parsing")
    try:
        data = pybase64.b64decode(payload, validate=True)
    except ValueError:
        raise FalInputError(loc, "Invalid base64 in data URI", "value_error") from None
    if not data.startswith((b"\x89PNG", b"\xff\xd8\xff")) and data[8:12] != b"WEBP":
        raise FalInputError(loc, "The data URI is not a PNG, JPEG or WebP image", "value_error")


# --- jobs --------------------------------------------------------------------------------------


@dataclass
class Job:
    request_id: str
    endpoint_id: str
    app: str
    created: float
    duration: float
    output: dict[str, Any] | None = None
    fault: Fault | None = None  # from job_script: the job's outcome
    failure: tuple[int, dict[str, Any]] | None = None  # (status, body) its result answers
    cancelled: bool = False

    def state(self, now: float) -> str:
        if self.cancelled:
            return "COMPLETED"
        if self.fault is not None and self.fault.kind == "stall":
            return "IN_PROGRESS"
        elapsed = now - self.created
        if elapsed < self.duration * 0.2:
            return "IN_QUEUE"
        return "IN_PROGRESS" if elapsed < self.duration else "COMPLETED"


def _error_fields(failure: tuple[int, dict[str, Any]]) -> dict[str, str]:
    status, body = failure
    detail = body.get("detail")
    items = [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []
    message = items[0].get("msg") if items else detail
    error_type = body.get("error_type") or (items[0].get("type") if items else None)
    kind = "validation_error" if status == 422 else "internal_error"
    return {"error": str(message or f"HTTP {status}"), "error_type": str(error_type or kind)}


class FakeFal(FakeServer[tuple[str, str]]):
    """The fake server. `requests` records every request (API and files); `cancelled` the ids
    cancelled with ``PUT cancel_url``; `jobs` every queued job by request id. `start` returns and
    `run_in_thread` yields ``(run_url, queue_url)``; `base_url` is the server's root."""

    thread_name = "fake-fal"
    max_body = MAX_BODY

    def __init__(self, key: str = "fal-key-id:fal-secret", seed: int = 0, job_seconds: float = 0.05) -> None:
        super().__init__(seed)
        self.key = key
        self.job_seconds = job_seconds
        self.file_script = FaultScript(seed + 1)
        self.job_script = FaultScript(seed + 2)
        self.cancelled: set[str] = set()
        self.jobs: dict[str, Job] = {}
        self.validate_at: Literal["submit", "result"] = "submit"
        self.files: dict[str, tuple[bytes, str]] = {}

    @property
    def run_url(self) -> str:
        return f"{self.base_url}/run"

    @property
    def queue_url(self) -> str:
        return f"{self.base_url}/queue"

    def urls(self) -> tuple[str, str]:
        return self.run_url, self.queue_url

    # --- routes ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/run/{endpoint:.+}", functools.partial(self._accept, queued=False))
        app.router.add_get("/queue/{owner}/{alias}/requests/{rid}/status", self._status)
        app.router.add_get("/queue/{owner}/{alias}/requests/{rid}", self._result)
        app.router.add_put("/queue/{owner}/{alias}/requests/{rid}/cancel", self._cancel)
        app.router.add_post("/queue/{endpoint:.+}", functools.partial(self._accept, queued=True))
        app.router.add_route("*", "/queue/{rest:.+}", self._not_found)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_post("/_fake/file_faults", self._push_faults(self.file_script))
        app.router.add_post("/_fake/job_faults", self._push_faults(self.job_script))
        return app

    # --- sync and submit ----------------------------------------------------------------------

    async def _accept(self, request: web.Request, queued: bool) -> web.StreamResponse:
        body = await self._read_json(request)
        endpoint_id = request.match_info["endpoint"].strip("/")
        self.record(request, body)
        if self.script.latency > 0:
            await asyncio.sleep(self.script.latency)
        fault = self.script.next()
        if fault is not None:
            sample: dict[str, Any] = {"images": [{"url": data_uri(make_image(256, 256, "jpeg"), "jpeg")}]}
            if queued:
                sample = {"request_id": str(uuid.uuid4()), "status": "IN_QUEUE", "queue_position": 0}
            faulted = await misbehave(request, fault, orjson.dumps(sample), "application/json")
            if faulted is not None:
                return faulted
        denied = self._check_key(request)
        if denied is not None:
            return denied
        spec = ENDPOINTS.get(endpoint_id)
        if spec is None:
            return _json(404, {"detail": f"Application '{endpoint_id}' not found"})
        stall = fault is not None and fault.kind == "stall"
        if not queued:
            return await self._run_now(request, spec, body, stall)
        return self._enqueue(endpoint_id, spec, body, stall)

    async def _run_now(self, request: web.Request, spec: Endpoint, body: Any, stall: bool) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        headers = {"x-fal-request-id": request_id}
        try:
            call = self._checked(spec, body)
        except FalInputError as exc:
            return _json(422, exc.body(), {**headers, "x-fal-error-type": exc.kind})
        if stall:
            await self.wait_stopping()
        await asyncio.sleep(self.job_seconds)
        return _json(200, self._output(call), headers)

    def _enqueue(self, endpoint_id: str, spec: Endpoint, body: Any, stalled: bool) -> web.Response:
        request_id = str(uuid.uuid4())
        job = Job(request_id, endpoint_id, "/".join(endpoint_id.split("/")[:2]), time.monotonic(), self.job_seconds)
        try:
            call = self._checked(spec, body)
        except FalInputError as exc:
            if self.validate_at == "submit":
                return _json(422, exc.body(), {"x-fal-error-type": exc.kind})
            job.failure = (422, exc.body())
        else:
            job.output = self._output(call)
        job.fault = Fault("stall") if stalled else self.job_script.next()
        if job.fault is not None and job.fault.kind == "latency":
            job.duration += job.fault.delay
        if job.fault is not None and job.fault.kind == "status":
            body = job.fault.body if isinstance(job.fault.body, dict) else {"detail": "Internal server error"}
            job.failure = (job.fault.status, body)
        self.jobs[request_id] = job
        return _json(200, {"request_id": request_id, "status": "IN_QUEUE", "queue_position": 0, **self._urls(job)})

    def _checked(self, spec: Endpoint, body: Any) -> Call:
        call = validate(spec, body, self.seed)
        if BLOCK_WORD in call.prompt:
            raise FalInputError(["prompt"], "The prompt was flagged by the content checker", "content_policy_violation")
        return call

    def _urls(self, job: Job) -> dict[str, str]:
        base = f"{self.queue_url}/{job.app}/requests/{job.request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _output(self, call: Call) -> dict[str, Any]:
        images = []
        for index in range(call.n):
            data = make_image(call.width, call.height, call.fmt, seed=call.seed + index, transparent=call.transparent)
            url = data_uri(data, call.fmt) if call.sync_mode else self._store(data, call.fmt)
            entry = {"url": url, "width": call.width, "height": call.height, "content_type": MIME[call.fmt]}
            images.append({**entry, "file_name": f"{index}.{EXTENSIONS[call.fmt]}", "file_size": len(data)})
        if call.spec.family == "gpt":
            return {"images": images}
        flux = {"seed": call.seed, "prompt": call.prompt, "has_nsfw_concepts": [False] * call.n}
        return {"images": images, **flux, "timings": {"inference": self.job_seconds}}

    def _store(self, data: bytes, fmt: str) -> str:
        name = f"{uuid.uuid4().hex}.{EXTENSIONS[fmt]}"
        self.files[name] = (data, MIME[fmt])
        return f"{self.base_url}/files/{name}"

    # --- queue --------------------------------------------------------------------------------

    def _job(self, request: web.Request, missing: dict[str, str]) -> Job | web.Response:
        """The job named by the URL (under its own owner/alias only), or the error answer."""
        self.record(request, None)
        denied = self._check_key(request)
        if denied is not None:
            return denied
        job = self.jobs.get(request.match_info["rid"])
        app = f"{request.match_info['owner']}/{request.match_info['alias']}"
        return _json(404, missing) if job is None or job.app != app else job

    async def _status(self, request: web.Request) -> web.Response:
        job = self._job(request, {"detail": "Request not found"})
        if isinstance(job, web.Response):
            return job
        state = job.state(time.monotonic())
        body: dict[str, Any] = {"status": state, "response_url": self._urls(job)["response_url"]}
        if state == "IN_QUEUE":
            return _json(200, {**body, "queue_position": 0})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        logs = [{"message": "generating", "level": "INFO", "source": "USER", "timestamp": stamp}]
        body["logs"] = logs if request.query.get("logs") in ("1", "true", "True") else None
        if state == "IN_PROGRESS":
            return _json(200, body)
        body["metrics"] = {"inference_time": job.duration}
        if job.cancelled:
            body.update({"error": "Request was cancelled", "error_type": "request_cancelled"})
        elif job.failure is not None:
            body.update(faults.echo(_error_fields(job.failure), request))
        return _json(200, body)

    async def _result(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request, {"detail": "Request not found"})
        if isinstance(job, web.Response):
            return job
        if job.state(time.monotonic()) != "COMPLETED":
            return _json(400, {"detail": "Request is still in progress"})
        if job.cancelled:
            return _json(400, {"detail": "Request was cancelled"})
        if job.failure is not None:
            return _json(job.failure[0], faults.echo(job.failure[1], request))
        assert job.output is not None
        if job.fault is not None and job.fault.kind in ("malformed", "error_200", "reset", "truncate"):
            spoiled = await misbehave(request, job.fault, orjson.dumps(job.output), "application/json")
            assert spoiled is not None
            return spoiled
        return _json(200, job.output, {"x-fal-request-id": job.request_id})

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self._job(request, {"status": "NOT_FOUND"})
        if isinstance(job, web.Response):
            return job
        if job.state(time.monotonic()) == "COMPLETED":
            return _json(400, {"status": "ALREADY_COMPLETED"})
        job.cancelled = True
        self.cancelled.add(job.request_id)
        return _json(202, {"status": "CANCELLATION_REQUESTED"})

    async def _not_found(self, request: web.Request) -> web.Response:
        self.record(request, None)
        return _json(404, {"detail": "Not Found"})

    # --- files --------------------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.record(request, None)
        fault = self.file_script.next()
        found = self.files.get(request.match_info["name"])
        if fault is not None and fault.kind == "stall":
            await self.wait_stopping()
        if fault is not None:
            data, content_type = found or (b"missing", "application/octet-stream")
            faulted = await misbehave(request, fault, data, content_type)
            if faulted is not None:
                return faulted
        if found is None:
            return _json(404, {"detail": "Not Found"})
        return web.Response(body=found[0], content_type=found[1])

    # --- faults and helpers -------------------------------------------------------------------

    def _check_key(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Key" and token.strip() == self.key:
            return None
        if not scheme:
            return _json(401, {"detail": "Missing authorization header"})
        return _json(401, {"detail": f"Invalid key: {token}"})

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", "replace")

    def _push_faults(self, script: FaultScript) -> Any:
        async def handler(request: web.Request) -> web.Response:
            for item in await request.json():
                fault, times = faults.fault_from_json(dict(item))
                script.push(fault, times)
            return _json(200, {"queued": len(script.queue)})

        return handler


async def misbehave(request: web.Request, fault: Fault, sample: bytes, content_type: str) -> web.StreamResponse | None:
    """Answer as `fault` says (`sample` is the body a truncated answer cuts short); None: answer
    normally (after a `latency` fault; `stall` is the caller's to handle)."""
    if fault.kind == "latency":
        await asyncio.sleep(fault.delay)
        return None
    if fault.kind == "reset":
        return await faults.reset_connection(request)
    if fault.kind == "truncate":
        return await faults.truncated_response(request, sample, content_type)
    headers = faults.echo(fault.headers, request)
    if fault.kind == "malformed":
        text = fault.body if isinstance(fault.body, str) else "<html><body>502 Bad Gateway</body></html>"
        return web.Response(status=200, body=faults.echo(text, request).encode(), content_type="text/html")
    if fault.kind == "error_200":
        body = faults.echo(fault.body, request) if fault.body is not None else {"detail": "Internal server error"}
        return _json(200, body)
    if fault.kind == "status":
        body = faults.echo(fault.body, request) if fault.body is not None else _status_body(fault.status)
        return _json(fault.status, body, headers)
    return None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _status_body(status: int) -> dict[str, Any]:
    messages = {429: "Rate limit exceeded", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return {"detail": messages.get(status, "Internal server error" if status >= 500 else f"HTTP {status}")}


async def _serve_forever(port: int, key: str, job_seconds: float, seed: int) -> None:
    fake = FakeFal(key=key, seed=seed, job_seconds=job_seconds)
    run_url, queue_url = await fake.start(port)
    print(f"run:   {run_url}\nqueue: {queue_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake fal.ai (sync and queue APIs) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--key", default="fal-key-id:fal-secret")
    parser.add_argument("--job-seconds", type=float, default=0.05, help="how long each queued job takes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.key, args.job_seconds, args.seed))


if __name__ == "__main__":
    main()
