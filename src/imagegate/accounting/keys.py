"""API keys: random, prefixed, checksummed; stored only as an HMAC-SHA-256 of the key.

A key looks like ``igk_<33 base62 chars: 192 random bits>_<6 base62 chars: checksum>``. The
checksum lets `checksum_ok` reject typos and garbage without a secret; the stored `key_hash` is
HMAC-SHA-256(pepper, key), so a stolen database does not yield usable keys. The plaintext is
returned once by `KeyStore.create` and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, update

from imagegate.storage.db import Database
from imagegate.storage.schema import api_keys

KEY_PREFIX = "igk_"
PREFIX_CHARS = 12  # shown in listings: "igk_" and the first 8 random characters
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_BYTES = 24  # 192 bits
_BODY_CHARS = 33  # ceil(192 / log2(62))
_CHECK_CHARS = 6  # 62**6 > 2**32
_KEY_RE = re.compile(rf"igk_([0-9A-Za-z]{{{_BODY_CHARS}}})_([0-9A-Za-z]{{{_CHECK_CHARS}}})")


def _base62(data: bytes, width: int) -> str:
    number = int.from_bytes(data, "big")
    chars: list[str] = []
    while number:
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(hashlib.sha256(body.encode("ascii")).digest()[:4], _CHECK_CHARS)


def generate_key() -> str:
    body = _base62(secrets.token_bytes(_RANDOM_BYTES), _BODY_CHARS)
    return f"{KEY_PREFIX}{body}_{_checksum(body)}"


def checksum_ok(key: str) -> bool:
    """Cheap, secret-free check of the format and checksum (catches typos and garbage)."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        return False
    return hmac.compare_digest(_checksum(match.group(1)), match.group(2))


def hash_key(key: str, pepper: bytes) -> str:
    """HMAC-SHA-256(pepper, key) as 64 hex characters: the only form of a key that is stored."""
    return hmac.new(pepper, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    budget: Decimal | None  # USD; None: unlimited
    spent: Decimal
    reserved: Decimal
    rpm: int | None
    images_per_day: int | None
    models: tuple[str, ...] | None  # None: every model
    webhook_url: str | None = None  # where the key's async jobs are delivered when a request names none

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    @property
    def remaining(self) -> Decimal | None:
        """Budget not yet spent or reserved (None: unlimited)."""
        return None if self.budget is None else self.budget - self.spent - self.reserved


def _to_key(row: Any) -> ApiKey:
    models = tuple(json.loads(row.models)) if row.models is not None else None
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        budget=row.budget,
        spent=row.spent,
        reserved=row.reserved,
        rpm=row.rpm,
        images_per_day=row.images_per_day,
        models=models,
        webhook_url=row.webhook_url,
    )


def _check_limits(budget: Decimal | None, rpm: int | None, images_per_day: int | None) -> None:
    if budget is not None and (not budget.is_finite() or budget < 0):
        raise ValueError("budget must be a finite amount of zero or more")
    if rpm is not None and rpm < 1:
        raise ValueError("rpm must be at least 1")
    if images_per_day is not None and images_per_day < 1:
        raise ValueError("images_per_day must be at least 1")


class KeyStore:
    def __init__(self, db: Database, pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the key pepper must not be empty")
        self._db = db
        self._pepper = pepper

    async def create(
        self,
        name: str,
        budget: Decimal | None,
        rpm: int | None,
        images_per_day: int | None,
        models: Sequence[str] | None,
        webhook_url: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; the plaintext (second item) is returned only here and never stored."""
        _check_limits(budget, rpm, images_per_day)
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ValueError("the webhook URL must be an http(s) URL")
        plaintext = generate_key()
        key = ApiKey(
            id="key_" + _base62(secrets.token_bytes(12), 17),
            name=name,
            prefix=plaintext[:PREFIX_CHARS],
            created_at=datetime.now(UTC),
            revoked_at=None,
            budget=budget,
            spent=Decimal(0),
            reserved=Decimal(0),
            rpm=rpm,
            images_per_day=images_per_day,
            models=tuple(models) if models is not None else None,
            webhook_url=webhook_url,
        )
        values = {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "key_hash": hash_key(plaintext, self._pepper),
            "created_at": key.created_at,
            "budget": budget,
            "spent": key.spent,
            "reserved": key.reserved,
            "rpm": rpm,
            "images_per_day": images_per_day,
            "models": json.dumps(list(key.models)) if key.models is not None else None,
            "webhook_url": webhook_url,
        }
        async with self._db.transaction() as conn:
            await conn.execute(api_keys.insert().values(values))
        return key, plaintext

    async def list(self) -> list[ApiKey]:
        async with self._db.transaction(readonly=True) as conn:
            result = await conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))
            return [_to_key(row) for row in result]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._db.transaction(readonly=True) as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _to_key(row) if row is not None else None

    async def revoke(self, id_or_prefix: str) -> bool:
        """Revoke the one active key with this id or display prefix. False when there is none."""
        match = or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix)
        async with self._db.transaction() as conn:
            ids = (await conn.execute(select(api_keys.c.id).where(match, api_keys.c.revoked_at.is_(None)))).all()
            if len(ids) > 1:
                raise ValueError(f"{id_or_prefix} matches several keys; revoke by id")
            if not ids:
                return False
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == ids[0].id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return result.rowcount == 1

    async def authenticate(self, presented: str | None) -> ApiKey | None:
        """The active key matching `presented`, else None (missing, malformed, unknown or revoked).

        Every input takes the same path: one HMAC and one indexed lookup, then a constant-time
        comparison, so timing does not tell a malformed key from an unknown one.
        """
        candidate = presented or ""
        digest = hash_key(candidate, self._pepper)
        well_formed = checksum_ok(candidate)
        async with self._db.transaction(readonly=True) as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == digest))).first()
        stored = row.key_hash if row is not None else "0" * 64
        matches = hmac.compare_digest(stored, digest)
        if row is None or not matches or not well_formed or row.revoked_at is not None:
            return None
        return _to_key(row)
