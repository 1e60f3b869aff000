"""The request-path benchmark's building blocks: payloads, the fake's --image, /proc readers, ASGI client, report."""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pybase64
import pytest
from bench.asgi import lifespan, post_json
from bench.harness import gateway_env, gateway_src
from bench.procinfo import Memory, cpu_seconds, memory
from bench.request_path import REQUEST, Side, fetch_images
from bench.request_path_report import Level, PayloadRun, Round, cpu_table, latency_table, memory_table
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench import payloads
from tests.fakes.openai import FakeOpenAI


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_payloads_are_realistic_seeded_pngs_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "CACHE", tmp_path)
    large = payloads.payload_file("large")
    small = payloads.payload_file("small")
    assert _png_size(large.read_bytes()) == (1024, 1024)
    assert _png_size(small.read_bytes()) == (1024, 1024)
    assert 2_500_000 <= large.stat().st_size <= 2_700_000
    assert 8_000 <= small.stat().st_size <= 12_000
    first = large.read_bytes()
    large.unlink()
    assert payloads.payload_file("large").read_bytes() == first  # same seed, same bytes
    with pytest.raises(ValueError, match="unknown payload"):
        payloads.payload_file("medium")


async def test_fake_openai_serves_the_fixed_image_as_b64_json() -> None:
    image = b"\x89PNG\r\n\x1a\nnot really decoded by the client"
    fake = FakeOpenAI(key="sk-test")
    fake.image = image
    base = await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            request = {"model": "gpt-image-1", "prompt": "p", "size": "1024x1024", "n": 2}
            headers = {"Authorization": "Bearer sk-test"}
            async with session.post(f"{base}/images/generations", json=request, headers=headers) as response:
                body = orjson.loads(await response.read())
        assert response.status == 200
        assert [pybase64.b64decode(item["b64_json"]) for item in body["data"]] == [image, image]
    finally:
        await fake.stop()


async def test_client_decodes_every_image_and_counts_a_different_one_as_not_ok() -> None:
    fake = FakeOpenAI(key="sk-test")
    fake.image = b"the upstream image"
    base = await fake.start()
    try:
        side = Side("A", f"{base}/images/generations", REQUEST, {"Authorization": "Bearer sk-test"})
        same = await fetch_images(side, b"the upstream image", 4, 2)
        other = await fetch_images(side, b"another image", 2, 1)
        wrong_key = await fetch_images(Side("A", side.url, REQUEST, {}), b"the upstream image", 1, 1)
    finally:
        await fake.stop()
    assert (same.ok, len(same.latencies_ms), same.failures) == (4, 4, [])
    assert other.ok == 0
    assert other.failures == ["HTTP 200 but the image differs from the fake's"] * 2
    assert wrong_key.ok == 0
    assert wrong_key.failures[0].startswith("HTTP 401")


def test_cpu_and_memory_come_from_proc() -> None:
    before = cpu_seconds(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.1:  # burn 100 ms of CPU (not wall-clock)
        sum(range(1000))
    assert cpu_seconds(os.getpid()) - before >= 0.05
    mem = memory(os.getpid())
    assert 1 < mem.rss_mib <= mem.hwm_mib


def test_gateway_src_accepts_a_checkout_or_its_src(tmp_path: Path) -> None:
    (tmp_path / "src" / "imagegate").mkdir(parents=True)
    (tmp_path / "src" / "imagegate" / "__init__.py").write_text("")
    assert gateway_src(tmp_path) == (tmp_path / "src").resolve()
    assert gateway_src(tmp_path / "src") == (tmp_path / "src").resolve()
    assert gateway_env({"X": "1"}, tmp_path / "src")["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "src")
    with pytest.raises(SystemExit, match="no imagegate package"):
        gateway_src(tmp_path / "elsewhere")


async def test_asgi_client_runs_lifespan_and_posts_json() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def span(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"got": await request.json()}, status_code=201)

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])], lifespan=span)
    async with lifespan(app):
        assert events == ["startup"]
        status, body = await post_json(app, "/echo", b'{"a": 1}')
    assert (status, orjson.loads(body)) == (201, {"got": {"a": 1}})
    assert events == ["startup", "shutdown"]


def _round(latencies: list[float], cpu: float = 0.0) -> Round:
    return Round(latencies, len(latencies), len(latencies), 1.0, cpu, cpu / 2, cpu / 4)


def test_report_shows_added_latency_per_round_with_its_spread() -> None:
    level = Level(1, 3)
    level.a = [_round([10, 10, 10]), _round([10, 10, 10]), _round([10, 10, 10])]
    level.b = [_round([11, 11, 11], 0.003), _round([12, 12, 12], 0.006), _round([13, 13, 13], 0.009)]
    run = PayloadRun("large", 2_640_000, Memory(100, 100), [level], [Memory(120, 150)])
    row = latency_table([run])[2]
    assert "| large (2.64 MB) | 1 | 3 x 3 | 10.0 | 10.0 | 12.0 | 13.0 | 2.0 (1.0..3.0) | 2.0 (1.0..3.0) |" in row
    assert row.endswith("| 3.0 | 3.0 | 9/9 | 9/9 |")  # 3 per round in 1 s each; all ok
    assert "| 2.0 (1.0..3.0) |" in cpu_table([run])[2]  # gateway CPU ms per request in B rounds
    assert memory_table([run])[2] == "| large (2.64 MB) | 100.0 | 120.0 | 150.0 |"
