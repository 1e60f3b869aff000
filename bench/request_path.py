"""Request path: the fake OpenAI called directly (A) against the gateway in front of it (B), interleaved.

The fake (`python -m tests.fakes.openai --image PATH`, its own process, `--latency` standing in for
generation time) returns a fixed PNG as `b64_json`: `large` is a 1024x1024 noise PNG of about
2.6 MB (real gpt-image-1 output size), `small` about 10 KB (see bench/payloads.py). The gateway
(`imagegate serve`, its own process, default SQLite ledger in a temp data dir, open auth) sits in
front of it. This process is the client: it reads every response whole, parses the JSON and
base64-decodes the image (a failed or different image counts as not ok).

For each payload and concurrency: a warm-up on both sides, then `--rounds` rounds of A then B,
N requests each. Per side: p50/p99 over all rounds, throughput; added = B - A of each percentile
per round, median (min..max) over rounds. CPU per request from /proc/<pid>/stat
(utime+stime deltas over each round / requests) for the gateway, the fake and this client; gateway
VmRSS/VmHWM from /proc/<pid>/status before any traffic and after each concurrency level.

`--gateway-src DIR` runs the gateway from another checkout (`DIR/src` on PYTHONPATH; the fake and
this client always come from this checkout), e.g. the parent commit for a before/after:
    git worktree add /tmp/imagegate-before HEAD~1
    .venv/bin/python bench/request_path.py --gateway-src /tmp/imagegate-before
    .venv/bin/python bench/request_path.py

Run: .venv/bin/python bench/request_path.py [--rounds 5] [--serial 50] [--parallel 100] [--concurrency 50]
     [--latency 0.05] [--payloads large,small] [--gateway-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pybase64

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, Gateway, gateway_env, gateway_src, start_fake, start_gateway, stop
from bench.payloads import PAYLOADS, payload_file
from bench.procinfo import cpu_seconds, git_revision, machine, memory
from bench.request_path_report import Level, PayloadRun, Round, render

KEY = "sk-bench"
REQUEST = {"model": "gpt-image-1", "prompt": "request path", "size": "1024x1024", "quality": "low"}


class WarmUpFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Side:
    name: str  # "A" (fake directly) or "B" (through the gateway)
    url: str
    payload: dict[str, str]
    headers: dict[str, str]


@dataclass
class Batch:
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0


async def _one(session: aiohttp.ClientSession, side: Side, expected: bytes, batch: Batch) -> None:
    started = time.perf_counter()
    problem = None
    try:
        async with session.post(side.url, json=side.payload, headers=side.headers) as response:
            raw = await response.read()
            status = response.status
        if status != 200:
            problem = f"HTTP {status}: {raw[:200]!r}"
        elif pybase64.b64decode(orjson.loads(raw)["data"][0]["b64_json"], validate=True) != expected:
            problem = "HTTP 200 but the image differs from the fake's"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    batch.latencies_ms.append((time.perf_counter() - started) * 1000)
    if problem is None:
        batch.ok += 1
    elif len(batch.failures) < 3:
        batch.failures.append(problem)


async def fetch_images(side: Side, expected: bytes, total: int, concurrency: int) -> Batch:
    """`total` requests with `concurrency` in flight; each response read, parsed and decoded whole."""
    batch = Batch()
    remaining = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            await _one(session, side, expected, batch)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    batch.wall_s = time.perf_counter() - started
    return batch


async def measured(side: Side, expected: bytes, total: int, concurrency: int, gateway: int, fake: int) -> Round:
    before = (cpu_seconds(gateway), cpu_seconds(fake), time.process_time())
    batch = await fetch_images(side, expected, total, concurrency)
    after = (cpu_seconds(gateway), cpu_seconds(fake), time.process_time())
    gateway_cpu, fake_cpu, client_cpu = (b - a for a, b in zip(before, after, strict=True))
    return Round(batch.latencies_ms, batch.ok, total, batch.wall_s, gateway_cpu, fake_cpu, client_cpu)


async def run_level(
    sides: tuple[Side, Side], expected: bytes, concurrency: int, total: int, rounds: int, pids: tuple[int, int]
) -> Level:
    for side in sides:  # warm-up (connections, caches, the ledger's first writes); must fully succeed
        warm = await fetch_images(side, expected, max(10, concurrency), concurrency)
        if warm.failures:
            raise WarmUpFailed(f"side {side.name} ({side.url}) failed during warm-up: {warm.failures}")
    level = Level(concurrency, total)
    for _ in range(rounds):
        level.a.append(await measured(sides[0], expected, total, concurrency, *pids))
        level.b.append(await measured(sides[1], expected, total, concurrency, *pids))
    return level


def gateway_config(openai_url: str) -> str:
    return f"""
[providers.openai]
base_url = "{openai_url}"
api_key_env = "BENCH_OPENAI_KEY"
[catalog.status."gpt-image-1"]
openai = "active"
"""


async def run_payload(name: str, args: argparse.Namespace, src: Path | None) -> PayloadRun:
    path = payload_file(name)
    expected = path.read_bytes()
    fake, port = await start_fake("openai", ["--key", KEY, "--latency", str(args.latency), "--image", str(path)])
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-request-path-"))  # kept only when something fails
    gateway: Gateway | None = None
    try:
        openai_url = f"http://127.0.0.1:{port}/v1"
        gateway = start_gateway(data_dir, gateway_config(openai_url), {"BENCH_OPENAI_KEY": KEY}, src=src)
        direct = Side("A", f"{openai_url}/images/generations", REQUEST, {"Authorization": f"Bearer {KEY}"})
        via = Side("B", f"{gateway.base}/v1/images/generations", {**REQUEST, "response_format": "b64_json"}, {})
        run = PayloadRun(name, len(expected), memory(gateway.pid))
        pids = (gateway.pid, fake.pid)
        for concurrency, total in ((1, args.serial), (args.concurrency, args.parallel)):
            try:
                level = await run_level((direct, via), expected, concurrency, total, args.rounds, pids)
            except WarmUpFailed as exc:
                raise SystemExit(f"{exc}\ngateway log: {gateway.log_path}") from None
            run.levels.append(level)
            run.memory_after.append(memory(gateway.pid))
    finally:
        if gateway is not None:
            stop(gateway)
        stop(fake)
    shutil.rmtree(data_dir, ignore_errors=True)
    return run


def gateway_code(src: Path | None) -> str:
    """Where the gateway process imports imagegate from, asked of the same interpreter and environment."""
    probe = subprocess.run(
        [sys.executable, "-c", "import imagegate; print(imagegate.__file__)"],
        capture_output=True,
        text=True,
        env=gateway_env(None, src),
        cwd=tempfile.gettempdir(),
        check=True,
    )
    package = Path(probe.stdout.strip()).parent
    return f"{package} at {git_revision(package)}"


async def main(args: argparse.Namespace) -> None:
    src = gateway_src(Path(args.gateway_src)) if args.gateway_src else None
    header = [
        f"gateway: {gateway_code(src)}; fake and client: {ROOT} at {git_revision(ROOT)}",
        f"machine: {machine()}",
        f"fake latency {args.latency * 1000:.0f} ms; response_format b64_json; {args.rounds} rounds per level, "
        "A then B each round; SQLite ledger (default) in a temp data dir; open auth",
    ]
    started = time.monotonic()
    runs = [await run_payload(name, args, src) for name in args.payloads.split(",")]
    header.append(f"total bench time {time.monotonic() - started:.0f} s")
    print(render(header, runs))


def _payloads(value: str) -> str:
    unknown = [name for name in value.split(",") if name not in PAYLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown payload(s) {unknown}; choose from {', '.join(PAYLOADS)}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per concurrency level")
    parser.add_argument("--serial", type=int, default=50, help="requests per side per round at concurrency 1")
    parser.add_argument("--parallel", type=int, default=100, help="requests per side per round at --concurrency")
    parser.add_argument("--concurrency", type=int, default=50, help="the parallel level's requests in flight")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake's seconds per image request")
    parser.add_argument("--payloads", type=_payloads, default=",".join(PAYLOADS), help="large, small or both")
    parser.add_argument("--gateway-src", default=None, help="run the gateway from this checkout (DIR or DIR/src)")
    asyncio.run(main(parser.parse_args()))
