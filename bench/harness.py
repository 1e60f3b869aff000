"""Shared pieces for the upstream benchmarks: gateway and fake processes, a load generator, percentiles.

Only base dependencies (aiohttp, no httpx): `./dev bench` must run on `pip install -e .`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procinfo import machine as machine  # re-exported: the scripts import it from here

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    """A running `imagegate serve` process."""

    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def gateway_src(path: Path) -> Path:
    """The directory to put on PYTHONPATH for a checkout (`DIR` or `DIR/src`) holding the imagegate package."""
    for candidate in (path / "src", path):
        if (candidate / "imagegate" / "__init__.py").is_file():
            return candidate.resolve()
    raise SystemExit(f"{path}: no imagegate package in {path}/src or {path}")


def gateway_env(env: Mapping[str, str] | None, src: Path | None) -> dict[str, str]:
    """The gateway's environment: ours without provider keys, plus `env`, plus PYTHONPATH=`src` when given."""
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FAL_KEY"}
    merged = {**base, **(env or {})}
    if src is not None:
        merged["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), merged.get("PYTHONPATH", ""))))
    return merged


def start_gateway(
    data_dir: Path,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    log_level: str = "warning",
    src: Path | None = None,
) -> Gateway:
    """`imagegate serve` on a free port with `config` (TOML text), from `src` when given; waits until ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "imagegate", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--log-level", log_level]
    if config is not None:
        (data_dir / "imagegate.toml").write_text(config)
        args += ["--config", str(data_dir / "imagegate.toml")]
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=gateway_env(env, src), cwd=data_dir)
    gateway = Gateway(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(gateway)
    except BaseException:
        stop(gateway)
        raise
    return gateway


@contextlib.contextmanager
def gateway_process(
    data_dir: Path, config: str | None = None, env: Mapping[str, str] | None = None, log_level: str = "warning"
) -> Iterator[Gateway]:
    gateway = start_gateway(data_dir, config, env, log_level)
    try:
        yield gateway
    finally:
        stop(gateway)


def _wait_ready(gateway: Gateway) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{gateway.base}/healthz", timeout=1) as response,
        ):
            if response.status == 200:
                return
        if gateway.process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"gateway did not start: {gateway.log_path.read_text()}")


def stop(handle: subprocess.Popen[bytes] | Gateway) -> None:
    process = handle.process if isinstance(handle, Gateway) else handle
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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


async def start_fake(module: str, args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A fake upstream (`python -m tests.fakes.<module>`) in its own process; returns (process, port)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/_fake/requests") as response:
                    if response.status == 200:
                        return process, port
            if process.poll() is not None:
                break
            await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError(f"fake {module} did not start")


async def fake_control(port: int, method: str, path: str, body: object = None) -> object:
    url = f"http://127.0.0.1:{port}/_fake/{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as response:
        return await response.json(content_type=None)
