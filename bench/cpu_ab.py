"""Gateway CPU per request, this checkout (B) against another (A), both running at once, interleaved.

`bench/request_path.py` reads CPU in 10 ms clock ticks over rounds of 20 requests, so at
concurrency 1 two versions that differ by half a millisecond read the same, and this 2-core VM
drifts by more than that between runs. Here both gateways run side by side in front of one fake
OpenAI (`--latency` standing in for generation time), rounds alternate A,B / B,A, and CPU is
read from `/proc/<pid>/task/*/schedstat` (nanoseconds, every thread). Reported per side: the
median over rounds of CPU per request, latency p50/p99 over all requests, and per round the
difference B - A, with the number of rounds in which B was cheaper.

    git worktree add /tmp/imagegate-before HEAD~1
    .venv/bin/python bench/cpu_ab.py --before-src /tmp/imagegate-before/src [--payload small|large]
        [--concurrency 1] [--rounds 20] [--per-round 50] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, start_fake, start_gateway, stop
from bench.payloads import payload_file
from bench.procinfo import git_revision, machine
from bench.request_path import KEY, REQUEST, gateway_config

BODY = {**REQUEST, "response_format": "b64_json"}


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in nanoseconds (schedstat's first field)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


async def requests(session: aiohttp.ClientSession, url: str, total: int, concurrency: int, out: list[float]) -> None:
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            async with session.post(url, json=BODY) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            out.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main(args: argparse.Namespace) -> None:
    fake, port = await start_fake(
        "openai", ["--key", KEY, "--latency", str(args.latency), "--image", str(payload_file(args.payload))]
    )
    config = gateway_config(f"http://127.0.0.1:{port}/v1")
    env = {"BENCH_OPENAI_KEY": KEY}
    gateways = {
        "A": start_gateway(Path(tempfile.mkdtemp(prefix="imagegate-ab-")), config, env, src=Path(args.before_src)),
        "B": start_gateway(Path(tempfile.mkdtemp(prefix="imagegate-ab-")), config, env, src=ROOT / "src"),
    }
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    latency: dict[str, list[float]] = {"A": [], "B": []}
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 100))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for gateway in gateways.values():  # warm-up
                await requests(session, f"{gateway.base}/v1/images/generations", 30, args.concurrency, [])
            for index in range(args.rounds):
                for name in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    gateway = gateways[name]
                    before = cpu_ns(gateway.pid)
                    url = f"{gateway.base}/v1/images/generations"
                    await requests(session, url, args.per_round, args.concurrency, latency[name])
                    cpu[name].append((cpu_ns(gateway.pid) - before) / args.per_round / 1e6)
    finally:
        for gateway in gateways.values():
            stop(gateway)
        stop(fake)
    print(f"A: {args.before_src} at {git_revision(Path(args.before_src))}; B: {ROOT} at {git_revision(ROOT)}")
    print(
        f"machine: {machine()}; payload {args.payload}, concurrency {args.concurrency}, fake latency "
        f"{args.latency * 1000:g} ms, {args.rounds} rounds x {args.per_round} requests per side\n"
    )
    print("| side | CPU ms/req, median (min..max) over rounds | latency p50 ms | p99 ms | p99/p50 |")
    print("|---|---|---:|---:|---:|")
    for name in ("A", "B"):
        values, lat = cpu[name], latency[name]
        p50, p99 = _percentile(lat, 0.5), _percentile(lat, 0.99)
        print(
            f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f}) "
            f"| {p50:.1f} | {p99:.1f} | {p99 / p50:.2f} |"
        )
    diffs = [b - a for a, b in zip(cpu["A"], cpu["B"], strict=True)]
    cheaper = sum(d < 0 for d in diffs)
    median = statistics.median(diffs)
    print(f"\nB - A per round: median {median:+.2f} ms/req; B cheaper in {cheaper} of {len(diffs)} rounds")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", required=True, help="the src/ directory of the other checkout (side A)")
    parser.add_argument("--payload", choices=("small", "large"), default="small")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    asyncio.run(main(parser.parse_args()))
