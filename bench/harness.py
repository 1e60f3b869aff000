"""Shared pieces for the upstream benchmarks: a gateway process, a load generator, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tests.gateway_process import free_port, gateway_process


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


async def start_gateway(data_dir: Path, config: str, env: dict[str, str]) -> tuple[contextlib.ExitStack, str]:
    """`imagegate serve` with `config` as its TOML, in its own process; returns (handle for `stop`, base URL)."""
    stack = contextlib.ExitStack()
    base = stack.enter_context(gateway_process(data_dir, config, env, log_level="warning"))
    return stack, base


def stop(handle: subprocess.Popen[bytes] | contextlib.ExitStack) -> None:
    if isinstance(handle, contextlib.ExitStack):
        handle.close()
        return
    handle.terminate()
    try:
        handle.wait(timeout=10)
    except subprocess.TimeoutExpired:
        handle.kill()


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(1 for s in self.statuses if s == 200)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_load(
    url: str,
    payload: dict,
    total: int,
    concurrency: int,
    headers: dict[str, str] | None = None,
    keep_bodies: bool = False,
) -> LoadResult:
    """POST `payload` to `url` `total` times with `concurrency` requests in flight."""
    result = LoadResult()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            try:
                async with session.post(url, json=payload, headers=headers) as response:
                    body = await response.json(content_type=None)
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status, body = 599, {}
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses.append(status)
            if keep_bodies:
                result.bodies.append(body)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def start_fake(module: str, args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A fake upstream (`python -m tests.fakes.<module>`) in its own process; returns (process, port)."""
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), *args],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"http://127.0.0.1:{port}/_fake/requests") as response:
                    if response.status == 200:
                        return process, port
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError(f"fake {module} did not start")


async def fake_control(port: int, method: str, path: str, body: object = None) -> object:
    url = f"http://127.0.0.1:{port}/_fake/{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as response:
        return await response.json(content_type=None)
