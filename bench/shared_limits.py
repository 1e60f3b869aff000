"""Two gateway processes sharing PostgreSQL and Redis: one key with --rpm 10 gets 30 requests.

A fresh PostgreSQL database and a unique Redis key space; `imagegate keys create --rpm 10`
through the CLI; two `imagegate serve` processes with the same config (auth mode `keys`) on two
ports; 30 requests (sandbox provider) alternate between them within a few seconds. Exactly 10
must be admitted across both. Also runs the same against a second key with --budget-usd covering
exactly one priced request, 50 requests at once across both processes: exactly 1 admitted (the
sandbox charges gpt-image-1's catalog prices here: `[sandbox] simulate_prices = true`).

Run: .venv/bin/python bench/shared_limits.py
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import gateway_process, machine


async def create_database() -> str:
    name = f"imagegate_shared_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def create_key(config: Path, data_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagegate",
            "keys",
            "create",
            "--name",
            "bench",
            *args,
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def hit(bases: list[str], key: str, count: int, payload: dict, together: bool) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(
                f"{bases[i % len(bases)]}/v1/images/generations", json=payload, headers=headers
            ) as response:
                await response.read()
                return response.status

        if together:
            return list(await asyncio.gather(*(one(i) for i in range(count))))
        statuses = []
        for i in range(count):
            statuses.append(await one(i))
        return statuses


async def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-shared-"))
    database_url = await create_database()
    config_text = f"""
database_url = "{database_url}"
redis_url = "redis://127.0.0.1:6379/0"
[auth]
mode = "keys"
[sandbox]
simulate_prices = true
"""
    config = data_dir / "imagegate.toml"
    config.write_text(config_text)
    env = {"IMAGEGATE_KEY_PEPPER": "shared-bench-pepper", "IMAGEGATE_SIGNING_KEY": "shared-bench-signing"}
    import os

    os.environ.update(env)
    rpm_key = create_key(config, data_dir, "--rpm", "10")
    budget_key = create_key(config, data_dir, "--budget-usd", "0.011")
    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(gateway_process(data_dir / f"gw{i}", config_text, env)).base for i in range(2)]
        rpm_statuses = await hit(bases, rpm_key, 30, {"prompt": "rpm", "model": "flux-1-schnell"}, together=False)
        dry = {"prompt": "budget", "model": "gpt-image-1", "quality": "low", "size": "1024x1024"}
        budget_statuses = await hit(bases, budget_key, 50, dry, together=True)
    print(f"machine: {machine()}; PostgreSQL {database_url.rsplit('/', 1)[1]}, Redis db 0\n")
    print("| test | sent | admitted (200) | refused | statuses |\n|---|---|---|---|---|")
    _row("--rpm 10, 30 requests alternating over 2 processes", rpm_statuses)
    _row("budget = one low 1024x1024 image ($0.011), 50 at once over 2 processes", budget_statuses)


def _row(name: str, statuses: list[int]) -> None:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    admitted = counts.get(200, 0)
    print(
        f"| {name} | {len(statuses)} | {admitted} | {len(statuses) - admitted} | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |"
    )


if __name__ == "__main__":
    asyncio.run(main())
