"""Per-request overhead of the gateway in front of the sandbox provider.

Compares, in one process and one run (medians over repeats, after warm-up):
  direct     the sandbox provider's `run()` for the same job (render + encode), no gateway
  asgi       the full gateway pipeline in-process over ASGI (parse, normalize, provider, identify,
             base64 or store + sign, JSON)
  http       a real `imagegate serve` process (uvicorn, uvloop, httptools) over loopback HTTP
The overhead is the difference of medians. Run: .venv/bin/python bench/overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_process import gateway_process

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


async def main(repeat: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    app = create_app(Settings(data_dir=data_dir, signing_key="bench"))
    stack = contextlib.ExitStack()
    base = stack.enter_context(gateway_process(data_dir / "server", log_level="warning"))
    rows = []
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as asgi,
            httpx.AsyncClient(base_url=base, timeout=60) as http,
        ):
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
                    in_proc = await _time(lambda b=body: asgi.post("/v1/images/generations", json=b), repeat)
                    over_http = await _time(lambda b=body: http.post("/v1/images/generations", json=b), repeat)
                    rows.append((size, response_format, direct, in_proc, over_http))
    finally:
        stack.close()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
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
