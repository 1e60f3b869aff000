"""A fake Gemini API (`generateContent` for image models): a real aiohttp server on 127.0.0.1.

POST /v1beta/models/{model}:generateContent (shared/providers.md section 4.1, providers-2.md
section 1); /_fake/* (the fault-script control routes of tests/fakes/faults.py). It checks the
``x-goog-api-key`` header (none: 403 PERMISSION_DENIED; a wrong one: 400 INVALID_ARGUMENT with an
ErrorInfo reason API_KEY_INVALID, as Google answers), validates the body like Google (unknown
fields refused, `imageConfig.aspectRatio` and `imageSize` checked per model, uppercase K, at most
one candidate, the model's input-image limit) and answers one real PNG of the size the ratio and
tier imply, with a text part, `usageMetadata` (1290 output tokens on 2.5 Flash; 1120 at 1K/2K and
2000 at 4K on 3 Pro, which also draws a `thought` image first), `modelVersion` and `responseId`.

Prompt words: ``BLOCKED_BY_SAFETY`` answers finishReason IMAGE_SAFETY without an image;
``TEXT_ONLY`` answers words and no image (finishReason STOP); ``BLOCKED_PROMPT`` answers
`promptFeedback.blockReason` PROHIBITED_CONTENT with no candidates. Faults come from its
`FaultScript`; in a fault's body or headers ``{token}`` / ``{authorization}`` become the request's
key, as an upstream quoting the request back would do.

Run alone: ``python -m tests.fakes.google --port 8901 [--key fake-gemini-key]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import io
import math
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from PIL import Image

from tests.fakes.faults import Fault, reset_connection, truncated_response
from tests.fakes.images import make_image
from tests.fakes.server import FakeAPI

BLOCK_WORD = "BLOCKED_BY_SAFETY"
TEXT_WORD = "TEXT_ONLY"
PROMPT_BLOCK_WORD = "BLOCKED_PROMPT"
MAX_BODY = 128 * 1024 * 1024
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# 1K pixels per ratio (shared/providers.md section 8); 2K and 4K scale each edge by 2 and 4.
FLASH_SIZES = dict(
    zip(
        RATIOS,
        [
            (1024, 1024),
            (832, 1248),
            (1248, 832),
            (864, 1184),
            (1184, 864),
            (896, 1152),
            (1152, 896),
            (768, 1344),
            (1344, 768),
            (1536, 672),
        ],
        strict=True,
    )
)
PRO_SIZES = dict(
    zip(
        RATIOS,
        [
            (1024, 1024),
            (848, 1264),
            (1264, 848),
            (896, 1200),
            (1200, 896),
            (928, 1152),
            (1152, 928),
            (768, 1376),
            (1376, 768),
            (1584, 672),
        ],
        strict=True,
    )
)
_TIER_SCALE = {"1K": 1, "2K": 2, "4K": 4}
GENERATION_CONFIG_FIELDS = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "seed",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseModalities",
        "imageConfig",
        "thinkingConfig",
        "mediaResolution",
    }
)
REQUEST_FIELDS = frozenset({"contents", "generationConfig", "safetySettings", "systemInstruction", "cachedContent"})
_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report it."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


@dataclass(frozen=True)
class ModelSpec:
    """One Gemini image model: its 1K sizes per ratio, its tiers, input limit and output tokens."""

    sizes: dict[str, tuple[int, int]]
    tiers: tuple[str, ...]
    max_inputs: int
    thinks: bool  # Gemini 3: a thought part (text and an interim image) before the answer

    def dims(self, ratio: str, tier: str) -> tuple[int, int]:
        width, height = self.sizes[ratio]
        scale = _TIER_SCALE[tier]
        return width * scale, height * scale

    def output_tokens(self, tier: str) -> int:
        if not self.thinks:
            return 1290
        return 2000 if tier == "4K" else 1120


MODELS = {
    "gemini-2.5-flash-image": ModelSpec(FLASH_SIZES, ("1K",), 3, False),
    "gemini-3-pro-image-preview": ModelSpec(PRO_SIZES, ("1K", "2K", "4K"), 14, True),
    "gemini-3-pro-image": ModelSpec(PRO_SIZES, ("1K", "2K", "4K"), 14, True),
}


class ApiError(Exception):
    """A Google-shaped error reply."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.details)


def error_body(status: int, message: str | None = None, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    name, default = _STATUS.get(status, ("UNKNOWN", f"HTTP {status}"))
    error: dict[str, Any] = {"code": status, "message": message or default, "status": name}
    if details:
        error["details"] = details
    return {"error": error}


def _rate_limit_details(delay: str = "7s") -> list[dict[str, Any]]:
    return [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]


@dataclass
class Call:
    """A validated request."""

    model: str
    spec: ModelSpec
    prompt: str
    inputs: list[tuple[int, int]]
    modalities: tuple[str, ...]
    ratio: str
    tier: str

    @property
    def dims(self) -> tuple[int, int]:
        return self.spec.dims(self.ratio, self.tier)


def validate(model: str, body: Any) -> Call:
    """The request as Google would read it, or an ApiError."""
    spec = MODELS.get(model)
    if spec is None:
        raise ApiError(
            404, f"models/{model} is not found for API version v1beta, or is not supported for generateContent."
        )
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received. Expected an object.")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise ApiError(400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    prompt, inputs = _contents(body.get("contents"), spec)
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "Invalid value at 'generation_config': expected an object.")
    unknown = sorted(set(config) - GENERATION_CONFIG_FIELDS)
    if unknown:
        raise ApiError(400, f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'generation_config'.")
    if config.get("candidateCount", 1) != 1:
        raise ApiError(400, "Multiple candidates is not enabled for this model.")
    modalities = config.get("responseModalities") or ["TEXT"]
    if not isinstance(modalities, list) or any(m not in ("TEXT", "IMAGE", "AUDIO") for m in modalities):
        raise ApiError(400, "Invalid value at 'generation_config.response_modalities'.")
    ratio, tier = _image_config(config.get("imageConfig"), spec, inputs)
    return Call(model, spec, prompt, inputs, tuple(modalities), ratio, tier)


def _contents(contents: Any, spec: ModelSpec) -> tuple[str, list[tuple[int, int]]]:
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    inputs: list[tuple[int, int]] = []
    for turn in contents:
        parts = turn.get("parts") if isinstance(turn, dict) else None
        if not isinstance(parts, list) or not parts or turn.get("role", "user") not in ("user", "model"):
            raise ApiError(400, "* GenerateContentRequest.contents.parts: contents.parts must not be empty.")
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("inlineData"), dict):
                inputs.append(_input_image(part["inlineData"]))
            else:
                raise ApiError(
                    400,
                    "* GenerateContentRequest.contents.parts.data: one of text or inlineData must be set",
                )
    if len(inputs) > spec.max_inputs:
        raise ApiError(400, f"The model accepts at most {spec.max_inputs} input images; {len(inputs)} were sent.")
    prompt = " ".join(texts).strip()
    if not prompt:
        raise ApiError(400, "The prompt text is empty.")
    return prompt, inputs


def _input_image(data: dict[str, Any]) -> tuple[int, int]:
    mime = data.get("mimeType")
    if mime not in ("image/png", "image/jpeg", "image/webp"):
        raise ApiError(400, f"Unsupported MIME type: {mime}")
    try:
        raw = base64.b64decode(str(data.get("data", "")), validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.size
    except (binascii.Error, ValueError, OSError):
        raise ApiError(400, "Unable to process input image. Please retry or report it.") from None


def _image_config(config: Any, spec: ModelSpec, inputs: list[tuple[int, int]]) -> tuple[str, str]:
    config = config or {}
    if not isinstance(config, dict) or set(config) - {"aspectRatio", "imageSize"}:
        raise ApiError(400, "Invalid value at 'generation_config.image_config'.")
    ratio = config.get("aspectRatio")
    if ratio is None:  # the model keeps the first input's shape, else draws a square
        ratio = _nearest_ratio(inputs[0]) if inputs else "1:1"
    if ratio not in spec.sizes:
        raise ApiError(400, f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(spec.sizes)}.")
    tier = config.get("imageSize", "1K")
    if tier not in spec.tiers:
        raise ApiError(400, f"Unsupported image size: {tier}. Supported: {', '.join(spec.tiers)}.")
    return ratio, tier


def _nearest_ratio(dims: tuple[int, int]) -> str:
    wanted = math.log(dims[0] / dims[1])

    def distance(ratio: str) -> float:
        width, height = ratio.split(":")
        return abs(math.log(int(width) / int(height)) - wanted)

    return min(RATIOS, key=distance)


def usage_for(call: Call, with_image: bool) -> dict[str, Any]:
    text_tokens = max(1, len(call.prompt) // 4)
    image_tokens = 258 * len(call.inputs)
    output = call.spec.output_tokens(call.tier) if with_image else 24
    usage: dict[str, Any] = {
        "promptTokenCount": text_tokens + image_tokens,
        "candidatesTokenCount": output,
        "totalTokenCount": text_tokens + image_tokens + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}],
        "candidatesTokensDetails": [{"modality": "IMAGE" if with_image else "TEXT", "tokenCount": output}],
    }
    if image_tokens:
        usage["promptTokensDetails"].append({"modality": "IMAGE", "tokenCount": image_tokens})
    if call.spec.thinks:
        usage["thoughtsTokenCount"] = 180
        usage["totalTokenCount"] += 180
    return usage


class FakeGoogle(FakeAPI):
    """The fake server. `script` scripts faults; `requests` records every generateContent call."""

    base_path = "/v1beta"
    thread_name = "fake-google"
    max_body = MAX_BODY

    def __init__(self, key: str = "fake-gemini-key", seed: int = 0) -> None:
        super().__init__(seed)
        self.key = key

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1beta/models/{target}", self._generate)
        return app

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.record(request, body, with_query=True)
        if self.script.latency > 0:
            await asyncio.sleep(self.script.latency)
        fault = self.script.next()
        if fault is not None:
            faulted = await self._apply_fault(request, fault)
            if faulted is not None:
                return faulted
        model, _, action = request.match_info["target"].partition(":")
        if action != "generateContent":
            return _json(404, error_body(404, f"Method not found: {action or 'none'}."))
        denied = self._check_key(request)
        if denied is not None:
            return _json(denied.status, denied.body())
        try:
            call = validate(model, body)
        except ApiError as exc:
            return _json(exc.status, exc.body())
        return _json(200, self._answer(call))

    def _check_key(self, request: web.Request) -> ApiError | None:
        if "key" in request.query:
            return ApiError(400, "This fake takes the key only in the x-goog-api-key header.")
        given = request.headers.get("x-goog-api-key")
        if not given:
            return ApiError(
                403,
                "Method doesn't allow unregistered callers; send an API key.",
            )
        if given != self.key:
            reason = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return ApiError(
                400, "API key not valid. Please pass a valid API key.", [{**reason, "domain": "googleapis.com"}]
            )
        return None

    def _answer(self, call: Call) -> dict[str, Any]:
        common = {"modelVersion": call.model, "responseId": uuid.uuid4().hex[:22]}
        if PROMPT_BLOCK_WORD in call.prompt:
            feedback = {"blockReason": "PROHIBITED_CONTENT"}
            return {"promptFeedback": feedback, "usageMetadata": usage_for(call, False), **common}
        if BLOCK_WORD in call.prompt:
            candidate: dict[str, Any] = {"finishReason": "IMAGE_SAFETY", "index": 0}
            candidate["finishMessage"] = "Unable to show the generated image: it may violate Google's policies."
            return {"candidates": [candidate], "usageMetadata": usage_for(call, False), **common}
        if TEXT_WORD in call.prompt or "IMAGE" not in call.modalities:
            words = {"text": f"I would rather describe it in words: {call.prompt}"}
            candidate = {"content": {"role": "model", "parts": [words]}, "finishReason": "STOP", "index": 0}
            return {"candidates": [candidate], "usageMetadata": usage_for(call, False), **common}
        width, height = call.dims
        picture = make_image(width, height, "png", seed=self.seed)
        parts: list[dict[str, Any]] = []
        if call.spec.thinks:  # an interim drawing, marked as thought: never the answer
            parts.append({"text": "Planning the composition.", "thought": True})
            sketch = make_image(64, 64, "png", seed=self.seed + 1)
            parts.append({"inlineData": {"mimeType": "image/png", "data": _b64(sketch)}, "thought": True})
        if "TEXT" in call.modalities:
            parts.append({"text": "Here is your image."})
        image_part: dict[str, Any] = {"inlineData": {"mimeType": "image/png", "data": _b64(picture)}}
        if call.spec.thinks:
            image_part["thoughtSignature"] = _b64(b"fake-signature")
        parts.append(image_part)
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage_for(call, True), **common}

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """The faulty answer, or None to answer normally (after a `latency` fault's delay)."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "stall":
            await self.wait_stopping()
        if fault.kind == "reset":
            return await reset_connection(request)
        if fault.kind == "truncate":
            part = {"inlineData": {"mimeType": "image/png", "data": _b64(make_image(512, 512))}}
            whole = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}]})
            return await truncated_response(request, whole, "application/json")
        key = request.headers.get("x-goog-api-key", "")
        headers = {name: _echo(value, key) for name, value in fault.headers.items()}
        if fault.kind == "malformed":
            text = fault.body if isinstance(fault.body, str) else "<html><body>upstream hiccup</body></html>"
            return web.Response(status=200, body=_echo(text, key).encode(), headers=headers, content_type="text/html")
        if fault.kind == "error_200":
            body = _echo(fault.body, key) if fault.body is not None else error_body(500)
            return _json(200, body, headers)
        if fault.body is not None:
            body = _echo(fault.body, key)
        elif fault.status == 429:
            body = error_body(429, None, _rate_limit_details())
        else:
            body = error_body(fault.status)
        return _json(fault.status, body, headers)


def _echo(value: Any, key: str) -> Any:
    """`value` with ``{token}`` / ``{authorization}`` replaced by the request's key."""
    if isinstance(value, str):
        return value.replace("{token}", key).replace("{authorization}", key)
    if isinstance(value, dict):
        return {_echo(k, key): _echo(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_echo(item, key) for item in value]
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def _serve_forever(port: int, key: str, seed: int) -> None:
    fake = FakeGoogle(key=key, seed=seed)
    print(f"fake Gemini API at {await fake.start(port)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--key", default="fake-gemini-key")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.key, args.seed))


if __name__ == "__main__":
    main()
