"""Fault injection: the gateway in front of a failing primary (fake OpenAI) and a healthy fake fal.

The primary fails 10% of calls with HTTP 500 and 2% with a connection reset (seeded). Requests
for gpt-image-1 go to OpenAI first (priority 0) and fal second. Reports success rate, added
latency (gateway latency minus the same request sent straight to the primary with no faults, in
the same run and at the same concurrency), and upstream calls per request.

Run: .venv/bin/python bench/faults.py [--requests 1000] [--concurrency 50] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.harness import fake_control, machine, run_load, start_fake, start_gateway, stop

OPENAI_KEY = "sk-bench"
FAL_KEY = "bench-id:bench-secret"
PAYLOAD = {"model": "gpt-image-1", "prompt": "fault injection", "quality": "low", "response_format": "b64_json"}


def config(openai_url: str, run_url: str, queue_url: str) -> str:
    return f"""
request_timeout_seconds = 60
[providers.openai]
base_url = "{openai_url}"
api_key_env = "BENCH_OPENAI_KEY"
[providers.fal]
base_url = "{run_url}"
queue_url = "{queue_url}"
api_key_env = "BENCH_FAL_KEY"
poll_interval_seconds = 0.02
[catalog.status."gpt-image-1"]
openai = "active"
[routing]
backoff_base_seconds = 0.05
breaker_failures = 50
[routing.models."gpt-image-1"]
providers = [{{provider = "openai", priority = 0}}, {{provider = "fal", priority = 1}}]
"""


async def main(total: int, concurrency: int, latency: float) -> None:
    primary, openai_port = await start_fake("openai", ["--key", OPENAI_KEY, "--latency", str(latency), "--seed", "7"])
    secondary, fal_port = await start_fake("fal", ["--key", FAL_KEY, "--job-seconds", str(latency)])
    openai_url = f"http://127.0.0.1:{openai_port}/v1"
    run_url, queue_url = f"http://127.0.0.1:{fal_port}/run", f"http://127.0.0.1:{fal_port}/queue"
    env = {"BENCH_OPENAI_KEY": OPENAI_KEY, "BENCH_FAL_KEY": FAL_KEY}
    gateway = start_gateway(
        Path(tempfile.mkdtemp(prefix="imagegate-faults-")), config(openai_url, run_url, queue_url), env
    )
    try:
        direct_payload = {k: v for k, v in PAYLOAD.items() if k != "response_format"}
        auth = {"Authorization": f"Bearer {OPENAI_KEY}"}
        await run_load(f"{gateway.base}/v1/images/generations", PAYLOAD, 50, 10)  # warm-up, no faults
        baseline = await run_load(f"{openai_url}/images/generations", direct_payload, total, concurrency, auth)
        for port in (openai_port, fal_port):
            await fake_control(port, "POST", "clear")
        await fake_control(openai_port, "POST", "rates", {"rates": {"status:500": 0.10, "reset": 0.02}, "seed": 42})
        loaded = await run_load(f"{gateway.base}/v1/images/generations", PAYLOAD, total, concurrency, keep_bodies=True)
        primary_requests = await fake_control(openai_port, "GET", "requests")
        fal_requests = await fake_control(fal_port, "GET", "requests")
        await fake_control(openai_port, "POST", "clear")
        after = await run_load(f"{openai_url}/images/generations", direct_payload, total, concurrency, auth)
        baseline.latencies_ms.extend(after.latencies_ms)  # baseline = direct runs before and after
    finally:
        for proc in (gateway, primary, secondary):
            stop(proc)
    report(total, concurrency, latency, baseline, loaded, primary_requests, fal_requests)


def report(total, concurrency, latency, baseline, loaded, primary_requests, fal_requests) -> None:
    primary_calls = sum(1 for r in primary_requests if r["path"].startswith("/v1/images"))
    fal_calls = sum(1 for r in fal_requests if r["method"] == "POST" and r["path"].startswith("/queue/"))
    served: dict[str, int] = {}
    for body in loaded.bodies:
        provider = body.get("imagegate", {}).get("provider", "error")
        served[provider] = served.get(provider, 0) + 1
    print(f"machine: {machine()}")
    print(
        f"{total} requests, concurrency {concurrency}, upstream latency {latency * 1000:.0f} ms; "
        "primary faults: 10% HTTP 500, 2% connection reset (seeded); fakes and gateway in separate processes\n"
    )
    print("| metric | value |\n|---|---|")
    print(f"| success rate | {loaded.ok / total:.4%} ({loaded.ok}/{total}) |")
    print(f"| served by | {', '.join(f'{k}: {v}' for k, v in sorted(served.items()))} |")
    print(
        f"| upstream calls per request | {(primary_calls + fal_calls) / total:.3f} "
        f"(primary {primary_calls}, fal submits {fal_calls}) |"
    )
    print(
        f"| direct to primary, no faults (runs before and after) p50 / p99 ms | {baseline.pct(50):.1f} / "
        f"{baseline.pct(99):.1f} |"
    )
    print(f"| through gateway with faults p50 / p99 ms | {loaded.pct(50):.1f} / {loaded.pct(99):.1f} |")
    print(
        f"| added latency p50 / p99 ms | {loaded.pct(50) - baseline.pct(50):.1f} / "
        f"{loaded.pct(99) - baseline.pct(99):.1f} |"
    )
    print(f"| throughput through gateway | {total / loaded.wall_s:.1f} req/s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.latency))
