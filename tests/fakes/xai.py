"""A fake xAI image API (Grok Imagine): OpenAI's Images API shape with xAI's differences, on 127.0.0.1
(shared/providers-2.md section 8): JSON generations and JSON edits (`image: {url}` or `images: [{url}]`,
data: URLs here), `aspect_ratio` instead of `size`, `size` / `quality` / `style` refused as "Argument
not supported", `response_format` url (the default) or b64_json, `n` 1-10, no mask. Bearer key.
Each image request consults `script` first (the generic `FakeServer.fault_answer`, xAI's error shape).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pybase64
from aiohttp import web

from tests.fakes.images import make_image
from tests.fakes.server import FakeAPI

MODELS = ("grok-imagine-image", "grok-imagine-image-quality")
RATIOS = ("2:1", "20:9", "19.5:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:19.5", "9:20", "1:2", "auto")
_STATUS_CODES = {401: "Unauthorized", 429: "Too many requests", 500: "Internal error", 503: "Service unavailable"}
UNSUPPORTED = ("size", "quality", "style", "mask", "output_format", "background", "output_compression")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": "Client specified an invalid argument", "error": message}, status=status)


def _dims(ratio: str) -> tuple[int, int]:
    """About one megapixel at `ratio`, edges rounded to 16 ("auto" is square)."""
    if ratio == "auto":
        return 1024, 1024
    width, height = (float(part) for part in ratio.split(":"))
    scale = math.sqrt(1024 * 1024 / (width * height))
    return max(16, round(width * scale / 16) * 16), max(16, round(height * scale / 16) * 16)


class FakeXAI(FakeAPI):
    """The fake; `requests` records every image request, `script` scripts faults (tests/fakes/faults.py)."""

    base_path = "/v1"
    thread_name = "fake-xai"
    max_body = 64 * 1024 * 1024

    def __init__(self, key: str = "xai-fake") -> None:
        super().__init__()
        self.key = key
        self._files: dict[str, bytes] = {}

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_get("/files/{name}", self._file)
        return app

    def error_body(self, status: int) -> Any:
        """xAI's error shape: a short `code` and the message in `error`."""
        return {"code": _STATUS_CODES.get(status, f"HTTP {status}"), "error": f"The request failed with HTTP {status}"}

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        return await self._images(request, edit=False)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        return await self._images(request, edit=True)

    async def _file(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["name"])
        return web.Response(body=data, content_type="image/png") if data else web.Response(status=404)

    async def _images(self, request: web.Request, edit: bool) -> web.StreamResponse:
        body: Any = await request.json() if request.content_type == "application/json" else None
        self.record(request, body)
        fault = self.script.next()
        if fault is not None:
            sample = {"data": [{"b64_json": pybase64.b64encode(make_image(64, 64, "png")).decode()}]}
            faulted = await self.fault_answer(request, fault, orjson.dumps(sample))
            if faulted is not None:
                return faulted
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided")
        if not isinstance(body, dict):
            return _error(400, "the body must be JSON")
        for name in UNSUPPORTED:
            if name in body:
                return _error(400, f"Argument not supported: {name}")
        if body.get("model") not in MODELS:
            return _error(404, f"The model {body.get('model')} does not exist")
        ratio = body.get("aspect_ratio", "auto")
        n = body.get("n", 1)
        if ratio not in RATIOS or not isinstance(n, int) or not 1 <= n <= 10:
            return _error(400, "aspect_ratio or n out of range")
        if edit and not (isinstance(body.get("image"), dict) or isinstance(body.get("images"), list)):
            return _error(400, "an edit needs image or images")
        width, height = _dims(str(ratio))
        items = []
        for index in range(n):
            data = make_image(width, height, "png", seed=index)
            if body.get("response_format") == "b64_json":
                items.append({"b64_json": pybase64.b64encode(data).decode(), "revised_prompt": body.get("prompt")})
            else:
                name = f"img{len(self._files)}.png"
                self._files[name] = data
                items.append({"url": f"{self.root_url}/files/{name}"})
        return web.json_response({"data": items})
