"""GET /playground and its API: a front door to the normal image handlers.

With ``Authorization: Bearer ...`` the playground API is exactly /v1/images/*. Without it the caller
is anonymous and held to the [playground] caps: images per client IP per UTC day and images per
UTC day for everyone, counted before the handler runs and refunded when the request fails. Either
way each uploaded file is held to ``[playground] max_upload_bytes`` (413 naming the file's param),
as the page itself checks. The page reads the catalog through /playground/api/models, which needs no
key even in ``keys`` mode (the catalog pages are public too).
"""

from __future__ import annotations

from html import escape
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagegate.accounting.gate import Caller
from imagegate.accounting.keys import KEY_PREFIX
from imagegate.accounting.ratelimit import Limits, RateLimiter, refusal
from imagegate.config import Settings
from imagegate.errors import NotFoundError, PayloadTooLargeError, RateLimitError
from imagegate.web import images, models
from imagegate.web.pages.layout import page

GLOBAL_KEY = "anon:global"
FORMATS = ("png", "jpeg", "webp", "gif", "avif")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    if not settings.playground.enabled:
        raise NotFoundError(f"no route for {request.url.path}")
    return settings


def _has_key(request: Request, settings: Settings) -> bool:
    """A key to check (keys mode: any bearer token; open mode: an imagegate key, as the gate reads it)."""
    authorization = request.headers.get("authorization", "")
    if not authorization.lower().startswith("bearer "):
        return False
    return settings.auth.mode == "keys" or authorization[len("bearer ") :].strip().startswith(KEY_PREFIX)


def _client_ip(request: Request) -> str:
    """The caller's address: ClientAddressMiddleware has already resolved it behind trusted proxies."""
    return request.client.host if request.client else "unknown"


def _count(value: Any) -> int:
    """The number of images asked for, read leniently: the handler validates it properly."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


async def _requested_images(request: Request, edit: bool) -> int:
    """`n` (0 for a dry run), read from the body the handler will read again (Starlette caches it)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json":
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return 1
        if not isinstance(body, dict):
            return 1
        if body.get("dry_run") is True:
            return 0
        return _count(body.get("n", 1))
    if edit and content_type == "multipart/form-data":
        # Same options as the edits handler, so its own call gets this cached form back.
        form = await request.form(max_files=64, max_fields=256, max_part_size=1024 * 1024)
        if str(form.get("dry_run", "")).lower() == "true":
            return 0
        return _count(form.get("n", 1))
    return 1


def _cap_error(limit: int | None, scope: str, retry_after: RateLimitError) -> RateLimitError:
    seconds = int(retry_after.headers.get("retry-after", "1"))
    hours, minutes = divmod(max(seconds, 60) // 60, 60)
    message = (
        f"Anonymous playground cap reached: {limit} images per UTC day {scope}. "
        f"It resets at 00:00 UTC (in {hours} h {minutes} min); use an API key to go beyond it."
    )
    return RateLimitError(message, code="playground_cap_exceeded", headers=retry_after.headers)


async def _admit_anonymous(request: Request, settings: Settings, n: int) -> list[str]:
    """Counts `n` images against both caps; returns the keys charged (for a refund)."""
    limiter: RateLimiter = request.app.state.gate.runtime.limiter
    caps = settings.playground
    ip_key = f"anon:ip:{_client_ip(request)}"
    verdict = await limiter.acquire(ip_key, Limits(None, caps.anonymous_images_per_ip_per_day), n)
    if not verdict.allowed:
        raise _cap_error(verdict.limit, "per IP address", refusal(verdict))
    verdict = await limiter.acquire(GLOBAL_KEY, Limits(None, caps.anonymous_images_per_day), n)
    if not verdict.allowed:
        await limiter.refund_images(ip_key, n)
        raise _cap_error(verdict.limit, "for all anonymous users", refusal(verdict))
    return [ip_key, GLOBAL_KEY]


def _too_large(param: str, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{param} is larger than the playground's {limit / (1024 * 1024):g} MiB upload limit", param=param
    )


def _data_url_bytes(value: Any) -> int:
    """Decoded size of a base64 data URL (0 for anything else: the handler reports what is wrong)."""
    if not isinstance(value, str) or not value.startswith("data:"):
        return 0
    payload = value.partition(",")[2]
    return len(payload) * 3 // 4


async def _check_uploads(request: Request, limit: int) -> None:
    """`[playground] max_upload_bytes` per file, on the server as in the browser. The body is read
    with the handler's own options, so the handler gets the same cached form or body back."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    sized: list[tuple[str, int]] = []
    if content_type == "multipart/form-data":
        form = await request.form(max_files=64, max_fields=256, max_part_size=1024 * 1024)
        files = [v for k, v in form.multi_items() if k in images.IMAGE_FIELDS and isinstance(v, UploadFile)]
        names = ["image"] if len(files) == 1 else [f"image[{i}]" for i in range(len(files))]
        sized = [(name, upload.size or 0) for name, upload in zip(names, files, strict=True)]
        mask = form.get("mask")
        if isinstance(mask, UploadFile):
            sized.append(("mask", mask.size or 0))
    elif content_type == "application/json":
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        refs = body.get("images") if isinstance(body.get("images"), list) else []
        for index, ref in enumerate(refs):
            if isinstance(ref, dict):
                sized.append((f"images[{index}].image_url", _data_url_bytes(ref.get("image_url"))))
        if isinstance(body.get("mask"), dict):
            sized.append(("mask.image_url", _data_url_bytes(body["mask"].get("image_url"))))
    for param, size in sized:
        if size > limit:
            raise _too_large(param, limit)


async def _front_door(request: Request, edit: bool) -> Response:
    settings = _settings(request)
    handler = images.edits if edit else images.generations
    if edit:
        await _check_uploads(request, settings.playground.max_upload_bytes)
    if _has_key(request, settings):
        return await handler(request)
    request.state.caller = Caller()
    n = await _requested_images(request, edit)
    charged = await _admit_anonymous(request, settings, n) if n else []
    limiter: RateLimiter = request.app.state.gate.runtime.limiter
    try:
        response = await handler(request)
    except BaseException:
        for key in charged:
            await limiter.refund_images(key, n)
        raise
    if response.status_code >= 400:
        for key in charged:
            await limiter.refund_images(key, n)
    return response


async def api_generations(request: Request) -> Response:
    return await _front_door(request, edit=False)


async def api_edits(request: Request) -> Response:
    return await _front_door(request, edit=True)


async def api_models(request: Request) -> Response:
    _settings(request)
    return models.catalog_list(request)


async def api_model(request: Request) -> Response:
    _settings(request)
    return models.catalog_get(request)


EDIT_INPUTS_HTML = """  <div id="edit-inputs" class="pg-edit" hidden>
    <div class="field"><label for="files">Images (<span id="max-images">1</span> at most; PNG, JPEG or WebP)</label>
      <input id="files" type="file" multiple accept="image/png,image/jpeg,image/webp"></div>
    <div id="dropzone" class="pg-drop" tabindex="0" role="button" aria-describedby="dropzone-help">
      Drop images here</div>
    <small id="dropzone-help" class="muted">Or press Enter to choose files.</small>
    <ul id="thumbs" class="pg-thumbs" aria-label="Chosen images"></ul>
    <div id="mask-area" class="pg-mask" hidden>
      <p class="muted">Paint over the first image where it should change.</p>
      <div class="pg-mask-wrap"><img id="mask-base" alt="First input image"><canvas id="mask-canvas"
        aria-label="Mask: painted pixels are edited"></canvas></div>
      <div class="pg-row">
        <label for="brush">Brush size</label><input id="brush" type="range" min="4" max="200" value="40">
        <button type="button" id="mask-clear">Clear mask</button>
      </div>
      <div class="field"><label for="mask-file">Or upload a mask (PNG with transparency)</label>
        <input id="mask-file" type="file" accept="image/png"></div>
    </div>
  </div>
"""

FORMAT_OPTIONS = "".join(f'<option value="{f}">{f}</option>' for f in FORMATS)
PARAMS_HTML = (
    """  <div class="pg-params">
    <div class="field" id="size-field"><label for="size">Size</label><select id="size"></select></div>
    <div class="field" id="custom-size-field" hidden><label for="custom-size">Custom size (WxH)</label>
      <input id="custom-size" type="text" inputmode="numeric" placeholder="1280x720" pattern="[0-9]+x[0-9]+"></div>
    <div class="field" id="ratio-field" hidden><label for="aspect-ratio">Aspect ratio</label>
      <select id="aspect-ratio"></select></div>
    <div class="field" id="resolution-field" hidden><label for="resolution">Resolution</label>
      <select id="resolution"></select></div>
    <div class="field" id="quality-field" hidden><label for="quality">Quality</label>
      <select id="quality"></select></div>
    <div class="field" id="background-field" hidden><label for="background">Background</label>
      <select id="background"></select></div>
    <div class="field"><label for="output-format">Output format</label>
      <select id="output-format">"""
    + FORMAT_OPTIONS
    + """</select></div>
    <div class="field"><label for="compression">Compression <output id="compression-value" for="compression">
      100</output></label><input id="compression" type="range" min="0" max="100" value="100" disabled></div>
    <div class="field"><label for="n">Images (n)</label><input id="n" type="number" min="1" max="10" value="1"></div>
  </div>
"""
)

OUTPUT_HTML = """<section class="pg-out" aria-label="Output">
  <div id="alert" role="alert" class="error"></div>
  <div id="progress" class="card pg-progress" hidden>
    <span id="status" aria-live="polite"></span> <span id="elapsed">0.0 s</span>
    <button type="button" id="cancel">Cancel</button>
  </div>
  <div class="card"><h2>Estimate</h2><p id="estimate-note" class="muted"></p>
    <table id="estimate-table"><thead><tr><th>Provider</th><th>Estimated cost (USD)</th><th>Size</th>
      <th>Calls</th></tr></thead><tbody></tbody></table></div>
  <div id="preview" class="pg-preview" hidden><img id="preview-img" alt="Partial preview"></div>
  <div id="results" class="pg-results" aria-live="polite"></div>
  <div id="result-meta" class="pg-meta"></div>
  <table id="decisions" hidden><caption>Normalization decisions</caption><thead><tr><th>Param</th><th>Asked</th>
    <th>Sent</th><th>Handling</th><th>Note</th></tr></thead><tbody></tbody></table>
  <div class="card"><h2>History</h2><ul id="history" class="pg-history"></ul></div>
</section>
"""


def _body(settings: Settings) -> str:
    caps = settings.playground
    keys = settings.auth.mode == "keys"
    key_field = (
        '<div class="field"><label for="api-key">API key (optional)</label>'
        '<input id="api-key" type="password" autocomplete="off" placeholder="sk-..."'
        ' aria-describedby="api-key-help">'
        f'<small id="api-key-help" class="muted">Without a key you get {caps.anonymous_images_per_ip_per_day}'
        " free images per UTC day.</small></div>"
        if keys
        else ""
    )
    return f"""<link rel="stylesheet" href="/static/playground.css">
<div id="playground" class="pg" data-max-upload="{caps.max_upload_bytes}" data-auth-mode="{escape(settings.auth.mode)}"
 data-default-model="{escape(settings.default_model)}">
<h1>Playground</h1>
<div class="pg-grid">
<form id="pg-form" class="card pg-controls" novalidate>
  <fieldset class="pg-modes"><legend>Mode</legend>
    <label><input type="radio" name="mode" id="mode-generate" value="generate" checked> Text to image</label>
    <label><input type="radio" name="mode" id="mode-edit" value="edit"> Edit</label>
  </fieldset>
  {key_field}
  <div class="field"><label for="model">Model</label><select id="model"></select></div>
  <div class="field"><label for="prompt">Prompt</label>
    <textarea id="prompt" rows="4" required placeholder="A lighthouse at dusk, watercolour"></textarea></div>
{EDIT_INPUTS_HTML}{PARAMS_HTML}  <div class="pg-row pg-actions">
    <button type="submit" id="generate" class="primary">Generate</button>
    <button type="button" id="estimate">Estimate</button>
  </div>
</form>
{OUTPUT_HTML}</div>
<dialog id="viewer" class="pg-viewer" aria-label="Enlarged image"><img id="viewer-img" alt="Enlarged result">
  <button type="button" id="viewer-close">Close</button></dialog>
</div>"""


async def page_handler(request: Request) -> Response:
    settings = _settings(request)
    return page(
        "Playground",
        _body(settings),
        active="/playground",
        scripts=["playground.js"],
        description="Try the image models: generate and edit, with cost estimates.",
    )


def routes() -> list[Route]:
    return [
        Route("/playground", page_handler, methods=["GET"]),
        Route("/playground/api/images/generations", api_generations, methods=["POST"]),
        Route("/playground/api/images/edits", api_edits, methods=["POST"]),
        Route("/playground/api/models", api_models, methods=["GET"]),
        Route("/playground/api/models/{model_id:path}", api_model, methods=["GET"]),
    ]
