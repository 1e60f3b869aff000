"""A fake OpenRouter (chat completions with image output): a real aiohttp server on 127.0.0.1.

POST /api/v1/chat/completions (shared/providers-2.md sections 9 and 13); /_fake/* (the fault-script
control routes of tests/fakes/faults.py). It checks ``Authorization: Bearer`` (none: 401 "No auth
credentials found"; a wrong key: 401 "User not found."), knows three image models and what each
outputs (Seedream 4.5 images only; the Gemini models images and text), and answers a request whose
`modalities` the model cannot serve with OpenRouter's 404 "No endpoints found that support the
requested output modalities: ...". It validates the user message (a string, or `text` and
`image_url` parts whose URLs are base64 data: URLs of real images), `image_config` {aspect_ratio,
image_size} per model, and the model's input-image limit, then answers one real PNG of the size the
ratio and tier imply in `choices[0].message.images[]`, with `usage` (tokens and `cost` in USD).

`credits` (USD, None: unlimited) is the account's balance: a call it cannot cover answers 402.
Prompt words: ``TEXT_ONLY`` answers words and no image; ``FLAGGED`` answers the 403 a moderated
model gives (`metadata.reasons`). Faults come from its `FaultScript`, with OpenRouter-shaped error
bodies; in a fault's body or headers ``{token}`` / ``{authorization}`` become the request's key.

Run alone: ``python -m tests.fakes.openrouter --port 8902 [--key fake-openrouter-key]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import io
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from PIL import Image

from tests.fakes.images import make_image
from tests.fakes.server import FakeAPI, json_response

TEXT_WORD = "TEXT_ONLY"
FLAG_WORD = "FLAGGED"
MAX_BODY = 128 * 1024 * 1024
_TIER_SCALE = {"1K": 1, "2K": 2, "4K": 4}
_MESSAGES = {
    400: "Bad Request",
    401: "No auth credentials found",
    402: "Insufficient credits",
    403: "Forbidden",
    404: "Not Found",
    408: "Request timed out",
    429: "Rate limit exceeded: too many requests",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No available model provider that meets your routing requirements",
}


@dataclass(frozen=True)
class ModelSpec:
    """One image model on OpenRouter: what it outputs, its ratios and tiers, inputs, and price."""

    outputs: frozenset[str]
    ratios: tuple[str, ...]
    tiers: tuple[str, ...]
    default_tier: str
    max_inputs: int
    image_tokens: dict[str, int]  # per tier; {} for a model priced per image
    per_image_usd: float = 0.0

    def dims(self, ratio: str, tier: str) -> tuple[int, int]:
        """The tier's area at `ratio`, each edge rounded to 16."""
        width, height = (int(side) for side in ratio.split(":"))
        edge = 1024 * _TIER_SCALE[tier]
        scale = math.sqrt(width / height)
        return round(edge * scale / 16) * 16, round(edge / scale / 16) * 16


GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
MODELS = {
    "bytedance-seed/seedream-4.5": ModelSpec(
        frozenset({"image"}),
        ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"),
        ("1K", "2K", "4K"),
        "2K",
        14,
        {},
        0.04,
    ),
    "google/gemini-2.5-flash-image": ModelSpec(
        frozenset({"image", "text"}), GEMINI_RATIOS, ("1K",), "1K", 3, {"1K": 1290}
    ),
    "google/gemini-3-pro-image-preview": ModelSpec(
        frozenset({"image", "text"}), GEMINI_RATIOS, ("1K", "2K", "4K"), "1K", 14, {"1K": 1120, "2K": 1120, "4K": 2000}
    ),
}
# Gemini rates in USD per token (input text, output text, output image) for `usage.cost`.
GEMINI_RATES = {
    "google/gemini-2.5-flash-image": (0.30e-6, 2.50e-6, 30e-6),
    "google/gemini-3-pro-image-preview": (2e-6, 12e-6, 120e-6),
}


class ApiError(Exception):
    """An OpenRouter-shaped error reply."""

    def __init__(self, status: int, message: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.metadata = status, message, metadata

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.metadata is not None:
            error["metadata"] = self.metadata
        return {"error": error}


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


def validate(body: Any) -> Call:
    """The request as OpenRouter would read it, or an ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON body")
    model = body.get("model")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        raise ApiError(400, f"{model} is not a valid model ID")
    assert isinstance(model, str)
    modalities = body.get("modalities", ["text"])
    if not isinstance(modalities, list) or not modalities or any(m not in ("image", "text") for m in modalities):
        raise ApiError(400, "modalities must be a non-empty list of 'image' and 'text'")
    if not set(modalities) <= spec.outputs:
        wanted = ", ".join(modalities)
        raise ApiError(404, f"No endpoints found that support the requested output modalities: {wanted}")
    prompt, inputs = _messages(body.get("messages"))
    if len(inputs) > spec.max_inputs:
        raise ApiError(400, f"Provider returned error: at most {spec.max_inputs} input images; {len(inputs)} sent")
    ratio, tier = _image_config(body.get("image_config"), spec)
    return Call(model, spec, prompt, inputs, tuple(modalities), ratio, tier)


def _messages(messages: Any) -> tuple[str, list[tuple[int, int]]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: expected a non-empty array")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise ApiError(400, "the last message must be the user's")
    content = last.get("content")
    if isinstance(content, str):
        return _prompt([content]), []
    if not isinstance(content, list) or not content:
        raise ApiError(400, "messages[].content: expected a string or an array of parts")
    texts: list[str] = []
    inputs: list[tuple[int, int]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            inputs.append(_input_image(part["image_url"].get("url")))
        else:
            raise ApiError(400, "messages[].content[]: each part is text or image_url")
    return _prompt(texts), inputs


def _prompt(texts: list[str]) -> str:
    prompt = " ".join(texts).strip()
    if not prompt:
        raise ApiError(400, "the prompt is empty")
    return prompt


def _input_image(url: Any) -> tuple[int, int]:
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise ApiError(400, "image_url.url: this fake takes only base64 data: URLs")
    try:
        raw = base64.b64decode(url.partition(";base64,")[2], validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.size
    except (binascii.Error, ValueError, OSError):
        raise ApiError(400, "Provider returned error: unable to process input image") from None


def _image_config(config: Any, spec: ModelSpec) -> tuple[str, str]:
    config = config or {}
    if not isinstance(config, dict) or set(config) - {"aspect_ratio", "image_size"}:
        raise ApiError(400, "image_config: only aspect_ratio and image_size are known")
    ratio = config.get("aspect_ratio", "1:1")
    if ratio not in spec.ratios:
        raise ApiError(400, f"Provider returned error: unsupported aspect_ratio {ratio}")
    tier = config.get("image_size", spec.default_tier)
    if tier not in spec.tiers:
        raise ApiError(400, f"Provider returned error: unsupported image_size {tier}")
    return ratio, tier


def usage_for(call: Call, with_image: bool) -> dict[str, Any]:
    prompt = max(1, len(call.prompt) // 4) + 258 * len(call.inputs)
    image = call.spec.image_tokens.get(call.tier, 0) if with_image else 0
    text = 12 if "text" in call.modalities else 0
    completion = image + text
    rates = GEMINI_RATES.get(call.model)
    if rates is not None:
        cost = prompt * rates[0] + text * rates[1] + image * rates[2]
    else:
        cost = call.spec.per_image_usd if with_image else 0.0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": round(cost, 10),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": image},
    }


class FakeOpenRouter(FakeAPI):
    """The fake server. `script` scripts faults; `requests` records every chat-completions call."""

    base_path = "/api/v1"
    thread_name = "fake-openrouter"
    max_body = MAX_BODY

    def __init__(self, key: str = "fake-openrouter-key", seed: int = 0, credits: float | None = None) -> None:
        super().__init__(seed)
        self.key = key
        self.credits = credits

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/api/v1/chat/completions", self._complete)
        return app

    def error_body(self, status: int) -> Any:
        return {"error": {"code": status, "message": _MESSAGES.get(status, f"HTTP {status}")}}

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.record(request, body)
        if self.script.latency > 0:
            await asyncio.sleep(self.script.latency)
        fault = self.script.next()
        if fault is not None:
            sample = orjson.dumps({"choices": [{"message": {"images": [{"image_url": {"url": "data:"}}]}}]})
            faulted = await self.fault_answer(request, fault, sample)
            if faulted is not None:
                return faulted
        try:
            self._check_key(request)
            call = validate(body)
            answer = self._answer(call)
            self._charge(answer["usage"]["cost"])
        except ApiError as exc:
            return json_response(exc.status, exc.body())
        return json_response(200, answer)

    def _check_key(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "No auth credentials found")
        if given.strip() != self.key:
            raise ApiError(401, "User not found.")

    def _charge(self, cost: float) -> None:
        if self.credits is None:
            return
        if cost > self.credits:
            raise ApiError(
                402,
                "This request requires more credits, or fewer max_tokens. "
                "To increase, visit https://openrouter.ai/settings/credits and add more credits",
            )
        self.credits -= cost

    def _answer(self, call: Call) -> dict[str, Any]:
        if FLAG_WORD in call.prompt:
            metadata = {"reasons": ["violence"], "flagged_input": call.prompt[:100], "provider_name": "fake"}
            raise ApiError(
                403, f"{call.model} requires moderation on fake. Your input was flagged for violence", metadata
            )
        text_only = TEXT_WORD in call.prompt or "image" not in call.modalities
        message: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None, "reasoning": None}
        if "text" in call.modalities:
            message["content"] = f"I would rather describe it in words: {call.prompt}" if text_only else "Here it is."
        if not text_only:
            width, height = call.spec.dims(call.ratio, call.tier)
            picture = base64.b64encode(make_image(width, height, "png", seed=self.seed)).decode("ascii")
            url = f"data:image/png;base64,{picture}"
            message["images"] = [{"type": "image_url", "image_url": {"url": url}, "index": 0}]
        choice = {
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "STOP",
            "index": 0,
            "message": message,
        }
        return {
            "id": f"gen-{int(time.time())}-{uuid.uuid4().hex[:20]}",
            "provider": "Fake",
            "model": call.model,
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [choice],
            "usage": usage_for(call, not text_only),
        }


async def _serve_forever(port: int, key: str, seed: int) -> None:
    fake = FakeOpenRouter(key=key, seed=seed)
    print(f"fake OpenRouter at {await fake.start(port)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8902)
    parser.add_argument("--key", default="fake-openrouter-key")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.key, args.seed))


if __name__ == "__main__":
    main()
