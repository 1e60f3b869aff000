"""kill -9 with requests in flight, then restart: is every ledger row there once, and settled?

A gateway process (open auth, PostgreSQL ledger by default, or SQLite with --sqlite) sits in front
of a slow fake OpenAI (5 s per image). N requests are sent at once, each with its own
Idempotency-Key (`crash-<i>`, also used as its prompt). When the fake has received at least
`--in-flight` of them, the gateway is killed with SIGKILL and started again; its start-up
reconciliation settles what the dead process left pending. Then:

  lost        = requests the upstream received whose ledger row is missing
  duplicated  = idempotency keys with more than one ledger row
  unsettled   = ledger rows still `pending`

Run: .venv/bin/python bench/crash.py [--requests 250] [--in-flight 200] [--sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_process import free_port

from bench.harness import fake_control, machine, start_fake, stop

KEY = "sk-crash"


def config(openai_url: str, database_url: str, total: int) -> str:
    # The resource envelope would hold most requests back (32 in flight, 1 GiB of estimated image
    # memory): let every request be in flight at once, as this measures the ledger, not the envelope.
    return f"""
instance_id = "crash-bench"
database_url = "{database_url}"
request_timeout_seconds = 120
[limits]
max_image_requests_in_flight = {total}
image_memory_bytes = {total * 64 * 1024 * 1024}
[providers.openai]
base_url = "{openai_url}"
api_key_env = "CRASH_OPENAI_KEY"
timeout_seconds = 120
[catalog.status."gpt-image-1"]
openai = "active"
"""


def launch(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imagegate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--config",
            str(data_dir / "imagegate.toml"),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / f"server-{port}.log", "wb"),
        env={**os.environ, "CRASH_OPENAI_KEY": KEY},
    )


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not start")


async def fire(base: str, total: int) -> list[asyncio.Task[None]]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=total), timeout=aiohttp.ClientTimeout(total=300)
    )

    async def one(i: int) -> None:
        payload = {"model": "gpt-image-1", "prompt": f"crash-{i}", "quality": "low", "response_format": "b64_json"}
        try:
            async with session.post(
                f"{base}/v1/images/generations", json=payload, headers={"Idempotency-Key": f"crash-{i}"}
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # the gateway was killed under it

    tasks = [asyncio.create_task(one(i)) for i in range(total)]
    closer = asyncio.create_task(_close_later(session, list(tasks)))
    return [*tasks, closer]


async def _close_later(session: aiohttp.ClientSession, tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()


async def prepare_database(sqlite: bool, data_dir: Path) -> tuple[str, str | None]:
    if sqlite:
        return f"sqlite:///{data_dir / 'crash.db'}", None
    name = f"imagegate_crash_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}", name


async def ledger_rows(database_url: str) -> list[tuple[str, str | None, str]]:
    query = "SELECT id, idempotency_key, status FROM requests"
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(query))
    conn = await asyncpg.connect(database_url)
    try:
        return [(r["id"], r["idempotency_key"], r["status"]) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def main(total: int, in_flight: int, sqlite: bool) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-crash-"))
    fake, fake_port = await start_fake("openai", ["--key", KEY, "--latency", "5"])
    database_url, pg_name = await prepare_database(sqlite, data_dir)
    (data_dir / "imagegate.toml").write_text(config(f"http://127.0.0.1:{fake_port}/v1", database_url, total))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = launch(data_dir, port)
    try:
        await wait_ready(base)
        tasks = await fire(base, total)
        received = await wait_for_upstream(fake_port, in_flight)
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        pending_before = sum(1 for *_, status in await ledger_rows(database_url) if status == "pending")
        gateway = launch(data_dir, port)
        await wait_ready(base)
        rows = await ledger_rows(database_url)
        upstream = await fake_control(fake_port, "GET", "requests")
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=15)
        stop(fake)
    report(total, received, pending_before, rows, upstream, "SQLite" if sqlite else "PostgreSQL", pg_name)


async def wait_for_upstream(fake_port: int, count: int) -> int:
    for _ in range(600):
        seen = len(await fake_control(fake_port, "GET", "requests"))  # type: ignore[arg-type]
        if seen >= count:
            return seen
        await asyncio.sleep(0.05)
    raise RuntimeError("the fake never saw enough requests")


def report(
    total: int,
    received: int,
    pending_before: int,
    rows: list[tuple[str, str | None, str]],
    upstream: object,
    database: str,
    pg_name: str | None,
) -> None:
    prompts = {r["json"]["prompt"] for r in upstream if r.get("json")}  # type: ignore[attr-defined, union-attr]
    keys = [idem for _, idem, _ in rows if idem]
    lost = len(prompts - set(keys))
    duplicated = len(keys) - len(set(keys))
    unsettled = sum(1 for *_, status in rows if status == "pending")
    statuses: dict[str, int] = {}
    for *_, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
    print(f"machine: {machine()}; ledger on {database}" + (f" (database {pg_name})" if pg_name else ""))
    print(f"{total} requests sent at once; gateway killed with SIGKILL when the upstream had received {received}\n")
    print("| metric | value |\n|---|---|")
    print(f"| requests received upstream before the kill | {len(prompts)} |")
    print(f"| ledger rows pending right after the kill | {pending_before} |")
    print(
        f"| ledger rows after restart | {len(rows)} ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}) |"
    )
    print(f"| lost (received upstream, no ledger row) | {lost} |")
    print(f"| duplicated (same idempotency key twice) | {duplicated} |")
    print(f"| unsettled after reconciliation | {unsettled} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=250)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.in_flight, args.sqlite))
