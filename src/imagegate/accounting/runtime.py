"""The stateful services a running gateway shares: database, keys, ledger, idempotency, limits, metrics.

Started lazily on first use (and eagerly from the server's lifespan): connect, migrate, then
reconcile this instance's unsettled ledger rows left by a crash. A background task reconciles
rows of any instance that are older than any live request could be. `aclose` flushes the ledger's
group-commit writer (queued begin/settle operations commit) before it closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import timedelta

from imagegate.accounting.idempotency import IdempotencyStore
from imagegate.accounting.keys import KeyStore
from imagegate.accounting.ledger import Ledger
from imagegate.accounting.ratelimit import RateLimiter, build_rate_limiter
from imagegate.config import Settings
from imagegate.metrics import Metrics
from imagegate.storage.db import Database

log = logging.getLogger("imagegate.accounting")
RECONCILE_EVERY_SECONDS = 60.0
ORPHAN_CLAIMS_EVERY_SECONDS = 15.0
ORPHAN_CLAIM_AGE = timedelta(seconds=30)  # a live request writes its ledger row right after its claim
IDEMPOTENCY_TTL = timedelta(hours=24)  # stored responses are replayed for a day


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None, *, serving: bool = True) -> None:
        """`serving`: this runtime belongs to the server of `instance` (not to a CLI command run beside
        it), so at start it reconciles the rows an earlier run of that instance left unsettled."""
        self.settings = settings
        self.serving = serving
        self.metrics = metrics or Metrics()
        self.instance = settings.instance_id or f"{socket.gethostname()}:{settings.port}"
        self.limiter: RateLimiter = build_rate_limiter(settings.redis_url, self.metrics)
        self._db: Database | None = None
        self._lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self.keys: KeyStore
        self.ledger: Ledger
        self.idempotency: IdempotencyStore

    async def ready(self) -> Database:
        """Connect and migrate once; afterwards a no-op. Raises ServiceUnavailableError when the DB is down."""
        if self._db is not None:
            return self._db
        async with self._lock:
            if self._db is None:
                db = await Database.connect(self.settings.resolved_database_url())
                try:
                    await db.migrate()
                except BaseException:
                    await db.close()
                    raise
                self.keys = KeyStore(db, self.settings.resolved_pepper())
                self.ledger = Ledger(db)
                self.idempotency = IdempotencyStore(db)
                self._db = db
                if self.serving:
                    await self._reconcile_own()
        return self._db

    async def _reconcile_own(self) -> None:
        count = await self.ledger.reconcile(self.instance, None)
        if count:
            log.warning("reconciled %d unsettled ledger rows left by a previous run of %s", count, self.instance)
        await self._release_orphan_claims()

    async def _release_orphan_claims(self) -> None:
        count = await self.idempotency.release_orphans(ORPHAN_CLAIM_AGE)
        if count:
            log.warning("released %d Idempotency-Key claims whose request never reached the ledger", count)

    def start_background(self) -> None:
        if self._reconciler is None:
            self._reconciler = asyncio.create_task(self._reconcile_stale())

    async def _reconcile_stale(self) -> None:
        stale = timedelta(seconds=self.settings.request_timeout_seconds + 60)
        last_reconcile = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(ORPHAN_CLAIMS_EVERY_SECONDS)
            try:
                await self.ready()
                await self._release_orphan_claims()
                if asyncio.get_running_loop().time() - last_reconcile >= RECONCILE_EVERY_SECONDS:
                    last_reconcile = asyncio.get_running_loop().time()
                    count = await self.ledger.reconcile(None, stale)
                    if count:
                        log.warning("reconciled %d stale ledger rows", count)
                    await self.idempotency.purge(IDEMPOTENCY_TTL)
            except Exception:
                log.exception("ledger reconciliation failed; retrying later")

    async def aclose(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await self.limiter.aclose()
        if self._db is not None:
            await self.ledger.aclose()  # flush: queued ledger writes commit before the database closes
            await self._db.close()
            self._db = None
