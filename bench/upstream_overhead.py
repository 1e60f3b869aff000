"""Gateway overhead in front of the fake OpenAI: b64_json of a 1024x1024 PNG, versus the fake directly.

Same process, same run: the fake OpenAI (with a fixed per-request latency standing in for
generation time) is called directly, then through `imagegate serve`, at concurrency 1 and 50.
The added p50 and p99 are the differences of those percentiles.

Run: .venv/bin/python bench/upstream_overhead.py [--latency 0.05] [--serial 200] [--parallel 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.harness import machine, run_load, start_fake, start_gateway, stop

KEY = "sk-bench"
PAYLOAD = {"model": "gpt-image-1", "prompt": "overhead", "size": "1024x1024", "quality": "low"}


async def main(latency: float, serial: int, parallel: int) -> None:
    fake, port = await start_fake("openai", ["--key", KEY, "--latency", str(latency)])
    openai_url = f"http://127.0.0.1:{port}/v1"
    config = f"""
[providers.openai]
base_url = "{openai_url}"
api_key_env = "BENCH_OPENAI_KEY"
[catalog.status."gpt-image-1"]
openai = "active"
"""
    process, gateway = await start_gateway(
        Path(tempfile.mkdtemp(prefix="imagegate-ovh-")), config, {"BENCH_OPENAI_KEY": KEY}
    )
    rows = []
    try:
        direct_url = f"{openai_url}/images/generations"
        gateway_url = f"{gateway}/v1/images/generations"
        auth = {"Authorization": f"Bearer {KEY}"}
        await run_load(gateway_url, {**PAYLOAD, "response_format": "b64_json"}, 30, 5)  # warm-up
        await run_load(direct_url, PAYLOAD, 30, 5, auth)
        for concurrency, total in ((1, serial), (50, parallel)):
            direct = await run_load(direct_url, PAYLOAD, total, concurrency, auth)
            via = await run_load(gateway_url, {**PAYLOAD, "response_format": "b64_json"}, total, concurrency)
            rows.append((concurrency, total, direct, via))
    finally:
        stop(process)
        stop(fake)
    print(f"machine: {machine()}")
    print(f"fake OpenAI (own process) latency {latency * 1000:.0f} ms per request; 1024x1024 PNG as b64_json\n")
    print(
        "| concurrency | requests | direct p50 ms | direct p99 ms | gateway p50 ms | gateway p99 ms "
        "| added p50 ms | added p99 ms | gateway ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for concurrency, total, direct, via in rows:
        print(
            f"| {concurrency} | {total} | {direct.pct(50):.1f} | {direct.pct(99):.1f} | {via.pct(50):.1f} "
            f"| {via.pct(99):.1f} | {via.pct(50) - direct.pct(50):.1f} | {via.pct(99) - direct.pct(99):.1f} "
            f"| {via.ok}/{total} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--serial", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.latency, args.serial, args.parallel))
