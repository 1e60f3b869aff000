"""A fake Vertex AI for image models, with its OAuth token endpoint: a real aiohttp server on 127.0.0.1.

- ``POST /token``: the JWT-bearer grant a service account makes (form fields ``grant_type`` and
  ``assertion``). The assertion is checked like Google does: RS256, signed by the key whose public
  half the fake was given, ``aud`` Google's token endpoint (what google-auth signs whatever the
  token_uri) or this one, the cloud-platform scope, not expired. It answers
  ``{"access_token", "expires_in", "token_type": "Bearer"}``; `fail_tokens` scripts refusals and
  `expire_next_token` hands out a token the API already treats as expired (while it claims an hour).
- ``POST /v1/projects/{P}/locations/{L}/publishers/google/models/{MODEL}:generateContent``: the
  Gemini image models, by composition with tests/fakes/google.py (its request validation and its
  answer), plus Vertex's own `imageConfig` fields (personGeneration, outputMimeType,
  outputCompressionQuality: a JPEG comes back when asked).
- ``POST .../models/{imagen-4.0-*}:predict``: Imagen 4 fast / standard / ultra. Validates
  ``instances`` and ``parameters`` (unknown names refused, sampleCount 1-4, the five ratios, 2K
  only on standard and ultra, a seed only with addWatermark false, personGeneration's enum,
  outputOptions) and answers real PNG/JPEG images of the ratio's size, ``sampleCount`` of them; the
  same seed, prompt and parameters draw the same bytes, no seed draws new ones each call.
- Every API call needs ``Authorization: Bearer`` with a token this fake issued and has not expired
  (401 UNAUTHENTICATED otherwise); the project and location in the path must be the fake's.
- Prompt words: ``BLOCKED_BY_SAFETY`` filters every image (``raiFilteredReason`` with
  includeRaiReason, else no predictions); ``PARTLY_BLOCKED`` filters the last one. On Gemini models
  the words of tests/fakes/google.py apply.
- Faults: `script` (tests/fakes/faults.py) applies to the API routes, with ``{token}`` and
  ``{authorization}`` echo in bodies and headers; /_fake/* control routes as every fake has.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import google as gemini_fake
from tests.fakes.faults import (
    Fault,
    FaultScript,
    RecordedRequest,
    add_control_routes,
    echo,
    lower_headers,
    reset_connection,
    truncated_response,
)
from tests.fakes.images import make_image

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # what google-auth signs, whatever its token_uri
BLOCK_WORD = "BLOCKED_BY_SAFETY"
PARTIAL_WORD = "PARTLY_BLOCKED"
RAI_REASON = (
    "Your current safety filter threshold filtered out the generated image. Try rephrasing the prompt "
    "or lowering the threshold. Support code: 58061214."
)
MAX_BODY = 64 * 1024 * 1024
SIZES_1K = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768)}
IMAGEN_MODELS = {
    "imagen-4.0-generate-001": ("1K", "2K"),
    "imagen-4.0-ultra-generate-001": ("1K", "2K"),
    "imagen-4.0-fast-generate-001": ("1K",),
}
MAX_SAMPLES = 4
PARAMETERS = frozenset(
    {
        "sampleCount",
        "aspectRatio",
        "sampleImageSize",
        "negativePrompt",
        "seed",
        "addWatermark",
        "enhancePrompt",
        "personGeneration",
        "safetySetting",
        "includeRaiReason",
        "includeSafetyAttributes",
        "language",
        "outputOptions",
        "guidanceScale",
    }
)
PERSON_GENERATION = frozenset({"DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"})
MIME_FORMATS = {"image/png": "png", "image/jpeg": "jpeg"}
VERTEX_IMAGE_CONFIG = frozenset({"personGeneration", "outputMimeType", "outputCompressionQuality"})


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class TokenFault:
    """A scripted answer of the token endpoint: an OAuth error with `status`."""

    status: int = 400
    error: str = "invalid_grant"
    description: str = "Invalid JWT Signature."


@dataclass
class Predict:
    """A validated `:predict` request."""

    model: str
    prompt: str
    count: int
    ratio: str
    size: str
    fmt: str
    seed: int | None
    negative: str
    rai_reason: bool

    @property
    def dims(self) -> tuple[int, int]:
        width, height = SIZES_1K[self.ratio]
        scale = 2 if self.size == "2K" else 1
        return width * scale, height * scale


class FakeVertex:
    """The fake. `requests` records API calls, `token_requests` the token endpoint's; `issued`
    counts tokens handed out."""

    def __init__(
        self,
        project: str = "fake-project",
        location: str = "global",
        public_key: rsa.RSAPublicKey | None = None,
        client_email: str | None = None,
        seed: int = 0,
    ) -> None:
        self.project = project
        self.location = location
        self.public_key = public_key
        self.client_email = client_email
        self.seed = seed
        self.script = FaultScript(seed)
        self.requests: list[RecordedRequest] = []
        self.token_requests: list[dict[str, str]] = []
        self.token_faults: deque[TokenFault] = deque()
        self.expires_in = 3599
        self.issued = 0
        self._tokens: dict[str, float] = {}  # token -> time.time() it expires at
        self._expire_next = 0
        self._draws = 0
        self._gemini = gemini_fake.FakeGoogle(seed=seed)  # its validation and answers, never served
        self.root = ""
        self._runner: web.AppRunner | None = None

    @property
    def token_url(self) -> str:
        return f"{self.root}/token"

    # --- scripting -----------------------------------------------------------------------------

    def fail_tokens(self, fault: TokenFault | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.token_faults.append(fault or TokenFault())

    def expire_next_token(self, times: int = 1) -> None:
        """The next `times` tokens are refused by the API as expired, though they claim an hour."""
        self._expire_next += times

    def expire_all(self) -> None:
        """Every token issued so far expires now (the API answers 401 for them)."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    # --- serving -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/locations/{location}/publishers/google/models/{target}", self._api)
        add_control_routes(app, self.script, self.requests)
        return app

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:`port`; returns the root URL (the provider's base_url)."""
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.root = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.root

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the token endpoint --------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        self.token_requests.append(form)
        if self.token_faults:
            fault = self.token_faults.popleft()
            return web.json_response(
                {"error": fault.error, "error_description": fault.description}, status=fault.status
            )
        if form.get("grant_type") != JWT_GRANT:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        problem = self._check_assertion(form.get("assertion", ""))
        if problem is not None:
            return _oauth_error("invalid_grant", problem)
        token = f"ya29.fake-{uuid.uuid4().hex}"
        expired = self._expire_next > 0
        self._expire_next -= 1 if expired else 0
        self._tokens[token] = 0.0 if expired else time.time() + self.expires_in
        self.issued += 1
        return web.json_response({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def _check_assertion(self, assertion: str) -> str | None:
        """Why Google would refuse the signed JWT, or None."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: not a signed JWT."
        try:
            header, claims = (orjson.loads(_unb64(part)) for part in parts[:2])
            signature = _unb64(parts[2])
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            return "Invalid JWT: undecodable."
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return "Invalid JWT: RS256 expected."
        if self.public_key is not None:
            try:
                signed = f"{parts[0]}.{parts[1]}".encode()
                self.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return "Invalid JWT Signature."
        now = time.time()
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.token_url):
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        if self.client_email is not None and claims.get("iss") != self.client_email:
            return "Invalid JWT: unknown issuer."
        if CLOUD_SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: the cloud-platform scope is required."
        expiry, issued_at = claims.get("exp"), claims.get("iat")
        if not isinstance(expiry, int) or not isinstance(issued_at, int) or expiry < now or issued_at > now + 300:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        return None

    # --- the API -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(RecordedRequest(request.method, request.path_qs, lower_headers(request), body))
        fault = self.script.next()
        if fault is not None:
            faulted = await self._apply_fault(request, fault)
            if faulted is not None:
                return faulted
        try:
            self._authorize(request)
            model, _, action = request.match_info["target"].partition(":")
            if action == "predict" and model.startswith("imagen"):
                return _json(200, self._predict(self._validate_predict(model, body)))
            if action == "generateContent" and not model.startswith("imagen"):
                return _json(200, self._generate(model, body))
            raise ApiError(404, f"Publisher Model `{model}` was not found or does not support {action or 'this'}.")
        except ApiError as exc:
            return _json(exc.status, gemini_fake.error_body(exc.status, exc.message))
        except gemini_fake.ApiError as exc:
            return _json(exc.status, exc.body())

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if "key" in request.query or "x-goog-api-key" in request.headers:
            raise ApiError(401, "API keys are not supported by this API. Expected OAuth2 access token.")
        if not header.startswith("Bearer "):
            raise ApiError(401, "Request is missing required authentication credential. Expected OAuth 2 access token.")
        expires = self._tokens.get(header.removeprefix("Bearer ").strip())
        if expires is None or expires <= time.time():
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        if request.match_info["project"] != self.project:
            raise ApiError(403, f"Permission denied on resource project {request.match_info['project']}.")
        if request.match_info["location"] != self.location:
            raise ApiError(404, f"Location {request.match_info['location']} is not served here.")

    def _generate(self, model: str, body: Any) -> dict[str, Any]:
        """Gemini on Vertex: Vertex's own imageConfig fields, then the Gemini API fake's rules and answer."""
        fmt = "png"
        if isinstance(body, dict) and isinstance(body.get("generationConfig"), dict):
            config = body["generationConfig"]
            image_config = config.get("imageConfig")
            if isinstance(image_config, dict):
                fmt = _vertex_image_config(image_config)
                rest = {k: v for k, v in image_config.items() if k not in VERTEX_IMAGE_CONFIG}
                body = {**body, "generationConfig": {**config, "imageConfig": rest}}
        call = gemini_fake.validate(model, body)
        answer = self._gemini._answer(call)  # composition: the Gemini API fake's own reply
        if fmt == "jpeg":
            for candidate in answer.get("candidates", []):
                parts = candidate.get("content", {}).get("parts", [])
                last = parts[-1] if parts else {}
                if "inlineData" in last:
                    width, height = call.dims
                    picture = make_image(width, height, "jpeg", seed=self.seed)
                    last["inlineData"] = {"mimeType": "image/jpeg", "data": _b64(picture)}
        return answer

    def _validate_predict(self, model: str, body: Any) -> Predict:
        sizes = IMAGEN_MODELS.get(model)
        if sizes is None:
            raise ApiError(404, f"Publisher Model `publishers/google/models/{model}` was not found.")
        if not isinstance(body, dict) or set(body) - {"instances", "parameters"}:
            raise ApiError(400, "Invalid JSON payload received. Expected instances and parameters.")
        instances = body.get("instances")
        if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
            raise ApiError(400, "Exactly one instance is required.")
        if set(instances[0]) - {"prompt"}:
            raise ApiError(400, f"Unknown field in instance: {sorted(set(instances[0]) - {'prompt'})[0]}.")
        prompt = instances[0].get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "The prompt is empty.")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "parameters must be an object.")
        unknown = sorted(set(params) - PARAMETERS)
        if unknown:
            raise ApiError(400, f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'parameters'.")
        count = params.get("sampleCount", MAX_SAMPLES)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SAMPLES:
            raise ApiError(400, f"sampleCount must be between 1 and {MAX_SAMPLES}.")
        ratio = params.get("aspectRatio", "1:1")
        if ratio not in SIZES_1K:
            raise ApiError(400, f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(SIZES_1K)}.")
        size = params.get("sampleImageSize", "1K")
        if size not in sizes:
            raise ApiError(400, f"sampleImageSize {size} is not supported by {model}.")
        seed = params.get("seed")
        if seed is not None:
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 0xFFFFFFFF:
                raise ApiError(400, "seed must be an unsigned 32-bit integer.")
            if params.get("addWatermark", True) is not False:
                raise ApiError(
                    400,
                    "Image generation failed with the following error: "
                    "Seed is not supported when watermark is enabled.",
                )
        if "personGeneration" in params and params["personGeneration"] not in PERSON_GENERATION:
            raise ApiError(400, f"Invalid personGeneration: {params['personGeneration']}.")
        negative = params.get("negativePrompt", "")
        if not isinstance(negative, str):
            raise ApiError(400, "negativePrompt must be a string.")
        fmt = _output_options(params.get("outputOptions"))
        return Predict(model, prompt, count, ratio, size, fmt, seed, negative, params.get("includeRaiReason") is True)

    def _predict(self, call: Predict) -> dict[str, Any]:
        predictions: list[dict[str, Any]] = []
        filtered = call.count if BLOCK_WORD in call.prompt else (1 if PARTIAL_WORD in call.prompt else 0)
        width, height = call.dims
        for index in range(call.count):
            if index >= call.count - filtered:
                if call.rai_reason:
                    predictions.append({"raiFilteredReason": RAI_REASON})
                continue
            picture = make_image(width, height, call.fmt, seed=self._image_seed(call, index))
            predictions.append({"bytesBase64Encoded": _b64(picture), "mimeType": f"image/{call.fmt}"})
        return {"predictions": predictions} if predictions else {}

    def _image_seed(self, call: Predict, index: int) -> int:
        """Deterministic for a seed (with the prompt and parameters), fresh for every unseeded draw."""
        if call.seed is None:
            self._draws += 1
            key = f"draw:{self.seed}:{self._draws}"
        else:
            key = f"{call.model}|{call.seed}|{call.prompt}|{call.negative}|{call.ratio}|{call.size}|{index}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "stall":
            await asyncio.Event().wait()
        if fault.kind == "reset":
            return await reset_connection(request)
        if fault.kind == "truncate":
            whole = orjson.dumps({"predictions": [{"bytesBase64Encoded": _b64(make_image(256, 256))}]})
            return await truncated_response(request, whole, "application/json")
        headers = echo(fault.headers, request)
        if fault.kind == "malformed":
            text = fault.body if isinstance(fault.body, str) else "<html><body>upstream hiccup</body></html>"
            return web.Response(
                status=200, body=echo(text, request).encode(), headers=headers, content_type="text/html"
            )
        if fault.kind == "error_200":
            body = echo(fault.body, request) if fault.body is not None else gemini_fake.error_body(500)
            return _json(200, body, headers)
        if fault.body is not None:
            body = echo(fault.body, request)
        elif fault.status == 429:
            retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
            body = gemini_fake.error_body(429, None, retry)
        else:
            body = gemini_fake.error_body(fault.status)
        return _json(fault.status, body, headers)


def _vertex_image_config(config: dict[str, Any]) -> str:
    """Check Vertex's own imageConfig fields; the output format they ask for."""
    person = config.get("personGeneration")
    if person is not None and person not in PERSON_GENERATION:
        raise ApiError(400, f"Invalid personGeneration: {person}.")
    mime = config.get("outputMimeType", "image/png")
    if mime not in MIME_FORMATS:
        raise ApiError(400, f"Unsupported outputMimeType: {mime}.")
    quality = config.get("outputCompressionQuality")
    if quality is not None and (not isinstance(quality, int) or not 0 <= quality <= 100):
        raise ApiError(400, "outputCompressionQuality must be 0-100.")
    return MIME_FORMATS[mime]


def _output_options(options: Any) -> str:
    if options is None:
        return "png"
    if not isinstance(options, dict) or set(options) - {"mimeType", "compressionQuality"}:
        raise ApiError(400, "Invalid outputOptions.")
    mime = options.get("mimeType", "image/png")
    if mime not in MIME_FORMATS:
        raise ApiError(400, f"Unsupported mimeType: {mime}.")
    quality = options.get("compressionQuality")
    if quality is not None and (mime != "image/jpeg" or not isinstance(quality, int) or not 0 <= quality <= 100):
        raise ApiError(400, "compressionQuality applies to image/jpeg only, 0-100.")
    return MIME_FORMATS[mime]


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
