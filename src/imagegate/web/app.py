"""The ASGI application: routes, error rendering, and the objects a running gateway shares."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from imagegate.accounting.gate import Gate
from imagegate.accounting.runtime import Runtime
from imagegate.catalog.loader import Catalog, load_catalog
from imagegate.config import Settings, resolved_webhook_secret
from imagegate.core.quoting import clip
from imagegate.envelope import build_envelope
from imagegate.errors import (
    ImagegateError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
)
from imagegate.imaging.pool import shutdown_pool
from imagegate.jobs.runner import JobRunner
from imagegate.jobs.store import JobStore
from imagegate.jobs.webhooks import Deliverer
from imagegate.providers.registry import ProviderRegistry, build_registry
from imagegate.redaction import install as install_redaction
from imagegate.redaction import local_secrets
from imagegate.service import ImageService
from imagegate.storage.blobs import open_store
from imagegate.storage.retention import Retention
from imagegate.storage.signing import LinkSigner
from imagegate.web import accounts, files, images, jobs, models, openapi
from imagegate.web.disconnect import ClientDisconnected
from imagegate.web.health import healthz, readyz
from imagegate.web.middleware import (
    BodyLimitMiddleware,
    RequestIdMiddleware,
    body_timeout_middleware,
    client_address_middleware,
)
from imagegate.web.responses import JSONResponse, error_response

log = logging.getLogger("imagegate.web")
STATIC_DIR = Path(__file__).resolve().parent / "static"
EDIT_PATHS = frozenset({"/v1/images/edits", "/playground/api/images/edits"})


def pages_routes() -> list[Route | Mount]:
    """Routes of the HTML pages; each page module exposes `routes()`."""
    from imagegate.web.pages import catalog, compare, playground

    return [*playground.routes(), *compare.routes(), *catalog.routes()]  # /models/compare before /models/{id}


async def home(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return RedirectResponse("/playground" if settings.playground.enabled else "/models", status_code=307)


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document(request.app.state.settings, request.app.state.catalog))


async def _imagegate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImagegateError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = clip(request.url.path)
    if exc.status_code == 405:
        # RFC 9110: a 405 names the methods the resource supports. Routes say so; StaticFiles does not.
        allow = (exc.headers or {}).get("Allow") or "GET, HEAD"
        message = f"{clip(request.method, 20)} is not allowed on {path}; use {allow}"
        return error_response(MethodNotAllowedError(message, headers={"Allow": allow}))
    if exc.status_code == 404:
        return error_response(NotFoundError(f"no route for {path}"))
    error = ImagegateError(str(exc.detail))
    error.status = exc.status_code
    error.type = "invalid_request_error"
    return error_response(error)


async def _client_gone(request: Request, exc: Exception) -> Response:
    log.info("client disconnected; request %s cancelled", request.scope.get("state", {}).get("request_id"))
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id")
    log.exception("unexpected error in request %s", request_id)
    response = error_response(InternalError(f"internal error; quote request id {request_id}"))
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


def _body_limit(settings: Settings) -> Callable[[Scope], int]:
    limits = settings.limits

    def limit_for(scope: Scope) -> int:
        if scope["path"] in EDIT_PATHS:
            for name, value in scope.get("headers", []):
                if name == b"content-type" and value.startswith(b"multipart/"):
                    return limits.max_multipart_bytes
            return limits.max_json_edit_bytes
        return limits.max_json_bytes

    return limit_for


def _routes() -> list[Route | Mount]:
    return [
        Route("/v1/images/generations", images.generations, methods=["POST"]),
        Route("/v1/images/edits", images.edits, methods=["POST"]),
        Route("/v1/images/jobs/{job_id}", jobs.job, methods=["GET", "DELETE"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/v1/files/{file_id}", files.get_file, methods=["GET"]),
        Route("/v1/requests", accounts.list_requests, methods=["GET"]),
        Route("/v1/usage", accounts.usage, methods=["GET"]),
        Route("/metrics", accounts.metrics, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
        *pages_routes(),
    ]


def create_app(
    settings: Settings,
    *,
    registry: ProviderRegistry | None = None,
    catalog: Catalog | None = None,
    today: Callable[[], date] = date.today,
) -> Starlette:
    catalog = catalog or load_catalog(settings.catalog.paths, settings.status_overrides())
    registry = registry or build_registry(settings)
    registry.redactor.add(*local_secrets(settings))  # one Redactor: providers, logs, error bodies
    install_redaction(registry.redactor)
    blobs = open_store(settings.storage, settings.data_dir, settings.files.max_bytes)
    signer = LinkSigner(settings.resolved_signing_key(), settings.files.ttl_seconds)
    service = ImageService(settings, catalog, registry, blobs, signer, today)
    runtime = Runtime(settings)
    gate = Gate(runtime, service)
    retention = Retention(blobs, settings.files, runtime.metrics)
    envelope = build_envelope(settings.limits, runtime.metrics)
    job_store = JobStore(runtime.ready)
    webhooks = Deliverer(job_store, settings.webhooks, settings.inputs, resolved_webhook_secret(settings))
    job_runner = JobRunner(job_store, gate, envelope, blobs, settings.jobs, runtime.instance, webhooks.wake)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await blobs.check()  # a missing bucket or unwritable directory stops the start, saying which
        retention.start()  # purges expired files now, then every [files] purge_interval_seconds
        try:
            await runtime.ready()
        except ImagegateError as exc:
            log.error("database not ready at start (%s); requests get 503 until it is", exc.message)
        runtime.start_background()
        job_runner.start()
        webhooks.start()
        yield
        await job_runner.aclose()  # running jobs go back to the queue for another instance
        await webhooks.aclose()
        await retention.stop()
        await registry.aclose()
        await runtime.aclose()
        shutdown_pool()

    routes = _routes()
    app = Starlette(
        routes=routes,
        middleware=[
            client_address_middleware(settings.server),
            Middleware(RequestIdMiddleware),
            body_timeout_middleware(settings.server, runtime.metrics.observe_slow_client),
            Middleware(BodyLimitMiddleware, limit_for=_body_limit(settings)),
        ],
        exception_handlers={
            ImagegateError: _imagegate_error,
            HTTPException: _http_error,
            ClientDisconnected: _client_gone,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.catalog = catalog
    app.state.registry = registry
    app.state.blobs = blobs
    app.state.retention = retention
    app.state.signer = signer
    app.state.service = service
    app.state.runtime = runtime
    app.state.gate = gate
    app.state.envelope = envelope
    app.state.jobs = job_store
    app.state.job_runner = job_runner
    app.state.webhooks = webhooks
    return app
