"""Ledger write overhead per request, and the concurrent budget race, on SQLite and PostgreSQL.

For each database (a fresh SQLite file in WAL mode with synchronous=FULL; a fresh PostgreSQL
database), in the same process:
  - `begin` (reserve against the key's budget + insert the pending row) and `settle` (update the
    row, release the reservation, add the cost) timed per request: median and p99 over N
    sequential requests, and throughput at concurrency 20;
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
from decimal import Decimal
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import machine, percentile
from imagegate.accounting.keys import KeyStore
from imagegate.accounting.ledger import Ledger, LedgerEntry, Settlement
from imagegate.errors import BudgetExceededError
from imagegate.storage.db import Database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


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


async def one_request(ledger: Ledger, key) -> float:
    started = time.perf_counter()
    row = entry(key.id, Decimal("0.011"))
    await ledger.begin(row, key)
    await ledger.settle(row.request_id, settlement())
    return (time.perf_counter() - started) * 1000


async def measure(url: str, total: int) -> dict[str, float | int]:
    db = await Database.connect(url)
    await db.migrate()
    keys, ledger = KeyStore(db, b"pepper"), Ledger(db)
    try:
        key, _ = await keys.create("bench", Decimal("1000000"), None, None, None)
        for _ in range(20):
            await one_request(ledger, key)
        sequential = [await one_request(ledger, key) for _ in range(total)]
        started = time.perf_counter()
        sem = asyncio.Semaphore(20)

        async def limited() -> float:
            async with sem:
                return await one_request(ledger, key)

        await asyncio.gather(*(limited() for _ in range(total)))
        throughput = total / (time.perf_counter() - started)
        admitted = await race(keys, ledger)
    finally:
        await db.close()
    return {
        "p50": percentile(sequential, 50),
        "p99": percentile(sequential, 99),
        "rps": throughput,
        "admitted": admitted,
    }


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
    try:
        results = {
            "SQLite (WAL, synchronous=FULL)": await measure(sqlite_url, total),
            "PostgreSQL 15 (loopback)": await measure(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", total),
        }
    finally:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    print(f"machine: {machine()}")
    print(f"{total} requests: begin (reserve + pending row) + settle (row + budget), one transaction each\n")
    print(
        "| database | p50 ms / request | p99 ms / request | requests/s at concurrency 20 "
        "| budget race: admitted of 50 (budget for 1) |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['admitted']} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
