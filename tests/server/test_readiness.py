"""/readyz for load balancers: database, Redis (when configured), result storage, and draining on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from imagegate.config import Settings, StorageSettings
from imagegate.web.app import create_app
from tests.server.process import running_gateway


async def test_ready_when_every_dependency_answers_and_not_when_draining(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, signing_key="k"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
        app.state.draining = True
        draining = await http.get("/readyz")
        assert draining.status_code == 503 and draining.json()["status"] == "draining"
    await app.state.runtime.aclose()


async def test_an_unreachable_redis_or_database_is_not_ready(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        signing_key="k",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"].startswith("unavailable") and checks["redis"].startswith("unavailable")
    assert checks["storage"] == "ok" and "nobody" not in response.text
    await app.state.runtime.aclose()


async def test_an_unreachable_object_store_is_not_ready(tmp_path: Path, monkeypatch) -> None:
    """The bucket itself is asked (a listing), not the local data dir."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    storage = StorageSettings(url="s3://imagegate-ready/files", endpoint_url=dead, region="us-east-1")
    app = create_app(Settings(data_dir=tmp_path, signing_key="k", storage=storage))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["storage"].startswith("unavailable")
    assert response.json()["checks"]["database"] == "ok"
    await app.state.runtime.aclose()


def test_sigterm_turns_readyz_red_while_still_serving_for_the_drain_delay(tmp_path: Path) -> None:
    config = "[server]\ndrain_delay_seconds = 3\n"
    with running_gateway(tmp_path, config, {}) as gateway:
        assert httpx.get(f"{gateway.base}/readyz", timeout=5).status_code == 200
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        response = httpx.get(f"{gateway.base}/readyz", timeout=5)
        assert response.status_code == 503 and response.json()["status"] == "draining"
        assert httpx.get(f"{gateway.base}/v1/models", timeout=5).status_code == 200  # still serving
        assert gateway.process.wait(timeout=30) == -signal.SIGTERM
