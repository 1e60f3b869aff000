"""Per-request overhead of the gateway in front of the sandbox provider.

Compares, in one process and one run (medians over repeats, after warm-up):
  direct     the sandbox provider's `run()` for the same job (render + encode), no gateway
  asgi       the full gateway pipeline in-process over ASGI (parse, normalize, provider, identify,
             base64 or store + sign, JSON)
  http       a real `imagegate serve` process (uvicorn, uvloop, httptools) over loopback HTTP
The overhead is the difference of medians. The in-process ASGI side runs the app's lifespan (ledger
start-up) like uvicorn does; the ledger is the default SQLite in a temp data dir on both gateway sides.
Run: .venv/bin/python bench/overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.asgi import lifespan, post_json
from bench.harness import machine, start_gateway, stop
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.providers.base import CallContext
from imagegate.schemas import GenerateParams, parse_params, to_public
from imagegate.web.app import create_app

SIZES = ("1024x1024", "256x256")


def _job(app, size: str):
    params = parse_params(GenerateParams, {"prompt": "benchmark lighthouse", "size": size, "model": "gpt-image-2"})
    model = app.state.catalog.get("gpt-image-2")
    sandbox = app.state.registry.get("sandbox")
    offering = sandbox.extra_offering(model)
    return sandbox, plan_request(to_public(params, "text-to-image", 0, False), offering).jobs[0]


async def _time(fn, repeat: int) -> float:
    for _ in range(3):
        await fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> None:
    async with session.post(url, json=body) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")


async def _asgi(app, body: dict) -> None:
    status, raw = await post_json(app, "/v1/images/generations", orjson.dumps(body))
    if status != 200:
        raise RuntimeError(f"in-process gateway: HTTP {status} {raw[:200]!r}")


async def main(repeat: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    app = create_app(Settings(data_dir=data_dir, signing_key="bench"))
    gateway = start_gateway(data_dir / "server")
    url = f"{gateway.base}/v1/images/generations"
    rows = []
    try:
        async with lifespan(app), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for size in SIZES:
                sandbox, job = _job(app, size)
                ctx = CallContext("bench", asyncio.get_running_loop().time() + 3600)
                direct = await _time(lambda s=sandbox, j=job, c=ctx: s.run(j, None, c), repeat)
                for response_format in ("b64_json", "url"):
                    body = {
                        "prompt": "benchmark lighthouse",
                        "size": size,
                        "model": "gpt-image-2",
                        "response_format": response_format,
                    }
                    in_proc = await _time(lambda b=body: _asgi(app, b), repeat)
                    over_http = await _time(lambda b=body: _post(http, url, b), repeat)
                    rows.append((size, response_format, direct, in_proc, over_http))
    finally:
        stop(gateway)
    print(f"machine: {machine()}")
    print(f"median of {repeat} requests after 3 warm-up, sequential (concurrency 1), PNG output\n")
    print(
        "| size | response_format | direct sandbox ms | gateway ASGI ms | gateway HTTP ms "
        "| overhead ASGI ms | overhead HTTP ms | HTTP / direct |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, fmt, direct, in_proc, over_http in rows:
        print(
            f"| {size} | {fmt} | {direct:.1f} | {in_proc:.1f} | {over_http:.1f} | {in_proc - direct:.1f} "
            f"| {over_http - direct:.1f} | {over_http / direct:.2f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    asyncio.run(main(parser.parse_args().repeat))
