"""Ledger write overhead per request, and the concurrent budget race, on SQLite and PostgreSQL.

For each database (a fresh SQLite file in WAL mode with synchronous=FULL; a fresh PostgreSQL
database) and each write mode (group commit through the ledger's one writer, the default; one
transaction per operation, `Ledger(db, group_commit=False)`), in the same process:
  - a request is `begin` (reserve against the key's budget + insert the pending row) then `settle`
    (update the row, release the reservation, add the cost); timed per request: p50 and p99 over N
    sequential requests, over N requests at concurrency 50, and throughput at concurrency 20 and 50;
  - CPU per request at concurrency 50 (process time, every thread: Python, driver, SQLite and its
    fsyncs) and transactions committed per request (group commit: the writer's counter);
  - the race: 50 `begin` calls started together (asyncio.Barrier) against a key whose budget
    covers exactly one reservation: how many were admitted (must be 1).

Run: .venv/bin/python bench/ledger.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import machine, percentile
from imagegate.accounting.keys import ApiKey, KeyStore
from imagegate.accounting.ledger import Ledger, LedgerEntry, Settlement
from imagegate.errors import BudgetExceededError
from imagegate.storage.db import Database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Result:
    sequential: list[float]
    concurrent: list[float]
    rps20: float
    rps50: float
    cpu_ms: float
    commits: float | None
    admitted: int


def entry(key_id: str, reserve: Decimal) -> LedgerEntry:
    return LedgerEntry(
        request_id="req_" + uuid.uuid4().hex,
        key_id=key_id,
        instance="bench",
        model="gpt-image-1",
        mode="text-to-image",
        n=1,
        size="1024x1024",
        quality="low",
        reserved=reserve,
        idempotency_key=None,
    )


def settlement() -> Settlement:
    return Settlement(
        status="succeeded",
        provider="openai",
        images=1,
        size="1024x1024",
        quality="low",
        attempts=[{"provider": "openai", "status": "ok", "latency_ms": 50.0}],
        cost=Decimal("0.011"),
        error_code=None,
        latency_ms=55.0,
    )


async def one_request(ledger: Ledger, key: ApiKey) -> float:
    started = time.perf_counter()
    row = entry(key.id, Decimal("0.011"))
    await ledger.begin(row, key)
    await ledger.settle(row.request_id, settlement())
    return (time.perf_counter() - started) * 1000


async def at_concurrency(ledger: Ledger, key: ApiKey, total: int, limit: int) -> tuple[list[float], float, float]:
    """Latencies, requests/s and CPU ms per request with `limit` requests in flight."""
    sem = asyncio.Semaphore(limit)

    async def limited() -> float:
        async with sem:
            return await one_request(ledger, key)

    cpu, started = time.process_time(), time.perf_counter()
    latencies = await asyncio.gather(*(limited() for _ in range(total)))
    elapsed = time.perf_counter() - started
    return list(latencies), total / elapsed, (time.process_time() - cpu) / total * 1000


async def measure(url: str, total: int, group_commit: bool) -> Result:
    db = await Database.connect(url)
    await db.migrate()
    keys, ledger = KeyStore(db, b"pepper"), Ledger(db, group_commit)
    try:
        key, _ = await keys.create("bench", Decimal("1000000"), None, None, None)
        for _ in range(20):
            await one_request(ledger, key)
        sequential = [await one_request(ledger, key) for _ in range(total)]
        _, rps20, _ = await at_concurrency(ledger, key, total, 20)
        commits_before = ledger.writer.commits if ledger.writer else 0
        concurrent, rps50, cpu_ms = await at_concurrency(ledger, key, total, 50)
        commits = (ledger.writer.commits - commits_before) / total if ledger.writer else None
        admitted = await race(keys, ledger)
    finally:
        await ledger.aclose()
        await db.close()
    return Result(sequential, concurrent, rps20, rps50, cpu_ms, commits, admitted)


async def race(keys: KeyStore, ledger: Ledger) -> int:
    key, _ = await keys.create("race", Decimal("0.25"), None, None, None)
    barrier = asyncio.Barrier(50)

    async def one() -> bool:
        await barrier.wait()
        try:
            await ledger.begin(entry(key.id, Decimal("0.25")), key)
        except BudgetExceededError:
            return False
        return True

    return sum(await asyncio.gather(*(one() for _ in range(50))))


async def main(total: int) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'ledger.db'}"
    name = f"imagegate_ledger_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    pg_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    results: dict[tuple[str, str], Result] = {}
    try:
        for database, url in (("SQLite (WAL, synchronous=FULL)", sqlite_url), ("PostgreSQL 15 (loopback)", pg_url)):
            for mode, group_commit in (("group commit", True), ("transaction per operation", False)):
                results[database, mode] = await measure(url, total, group_commit)
    finally:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    print(f"machine: {machine()}")
    print(f"{total} requests per column: begin (reserve + pending row) + settle (row + budget)\n")
    print(
        "| database | writes | sequential p50 / p99 ms | concurrency 50: p50 / p99 ms | requests/s at 20 / 50 "
        "| CPU ms / request at 50 | transactions / request at 50 | budget race: admitted of 50 (budget for 1) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (database, mode), r in results.items():
        commits = f"{r.commits:.2f}" if r.commits is not None else "2"
        print(
            f"| {database} | {mode} | {percentile(r.sequential, 50):.2f} / {percentile(r.sequential, 99):.2f} "
            f"| {percentile(r.concurrent, 50):.2f} / {percentile(r.concurrent, 99):.2f} "
            f"| {r.rps20:.0f} / {r.rps50:.0f} | {r.cpu_ms:.2f} | {commits} | {r.admitted} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
