"""Probes for load balancers: /healthz (alive) and /readyz (ready to take traffic).

`/healthz` answers 200 while the process serves at all (and lists which providers are callable).
`/readyz` answers 200 only when a new request can be served end to end: the database answers a
query, Redis answers a PING (when configured), the result store is writable, and the process is
not draining. On SIGTERM the server marks itself draining first (`app.state.draining`), so a balancer
stops sending new requests while those in flight finish (docs/configuration.md, "Server edge").
Each failed check is named; no check blocks for long (each is bounded by a short timeout).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse

from imagegate import __version__
from imagegate.providers.registry import ProviderRegistry
from imagegate.storage.blobs import BlobStore, LocalBlobStore

CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> JSONResponse:
    registry: ProviderRegistry = request.app.state.registry
    providers = {p.name: p.available() for p in registry}
    return JSONResponse({"status": "ok", "version": __version__, "providers": providers})


async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}
    if getattr(state, "draining", False):
        checks["draining"] = "the server is shutting down"
    checks.update(await _check("database", _database(request)))
    if state.settings.redis_url:
        checks.update(await _check("redis", state.runtime.limiter.ping()))
    checks.update(await _check("storage", _storage(state.blobs)))
    failed = {name: reason for name, reason in checks.items() if reason != "ok"}
    status = "draining" if "draining" in failed else ("ready" if not failed else "not_ready")
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if not failed else 503)


async def _storage(blobs: BlobStore) -> None:
    """A local directory must take a write (a full disk fails here); a bucket must answer a listing."""
    if isinstance(blobs, LocalBlobStore):
        await asyncio.to_thread(_writable, blobs.root)
    else:
        await blobs.check()


async def _database(request: Request) -> None:
    db = await request.app.state.runtime.ready()
    await db.ping()


async def _check(name: str, probe: object) -> dict[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    except Exception as exc:  # the probe's failure is the answer; its words never carry secrets here
        return {name: f"unavailable ({type(exc).__name__})"}
    return {name: "ok"}


def _writable(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-", delete=True) as probe:
        probe.write(b"ok")
        probe.flush()
        os.fsync(probe.fileno())
