"""API keys: format, hashing, create/authenticate/revoke/list, and that plaintext never lands on disk."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event, select

from imagegate.accounting.keys import KeyStore, checksum_ok, generate_key, hash_key
from imagegate.storage.db import Database
from imagegate.storage.schema import metadata

from .conftest import PEPPER

KEY_RE = re.compile(r"igk_[0-9A-Za-z]{33}_[0-9A-Za-z]{6}")


def test_generated_keys_are_well_formed_unique_and_checksummed() -> None:
    generated = {generate_key() for _ in range(2000)}
    assert len(generated) == 2000
    for key in list(generated)[:200]:
        assert KEY_RE.fullmatch(key) and checksum_ok(key)
    key = next(iter(generated))
    body, check = key[:-7], key[-6:]
    flipped = check[:-1] + ("A" if check[-1] != "A" else "B")
    assert not checksum_ok(f"{body}_{flipped}")
    typo = key[:10] + ("x" if key[10] != "x" else "y") + key[11:]
    assert not checksum_ok(typo)
    for bad in ("", "igk_", "garbage", "' OR 1=1 --", key + "x", key.replace("igk_", "sk-_"), key.upper()):
        assert not checksum_ok(bad)


def test_hash_is_hmac_sha256_hex_and_depends_on_the_pepper() -> None:
    key = generate_key()
    digest = hash_key(key, b"one")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_key(key, b"one") != hash_key(key, b"two")


async def test_create_authenticate_get_list(keys: KeyStore) -> None:
    key, plaintext = await keys.create("ci", Decimal("5.5"), 60, 100, ["gpt-image-1", "flux-1-schnell"])
    assert KEY_RE.fullmatch(plaintext) and key.prefix == plaintext[:12] and key.id.startswith("key_")
    found = await keys.authenticate(plaintext)
    assert found is not None and found.id == key.id
    assert (found.budget, found.spent, found.reserved) == (Decimal("5.5"), 0, 0)
    assert (found.rpm, found.images_per_day) == (60, 100)
    assert found.models == ("gpt-image-1", "flux-1-schnell") and found.remaining == Decimal("5.5")
    assert found.created_at.tzinfo is not None and found.revoked_at is None
    assert await keys.get(key.id) == found
    assert await keys.get("key_nope") is None
    other, _ = await keys.create("other", None, None, None, None)
    assert [k.id for k in await keys.list()] == [key.id, other.id]
    assert other.budget is None and other.remaining is None


async def test_model_scope(keys: KeyStore) -> None:
    scoped, _ = await keys.create("scoped", None, None, None, ["flux-1-schnell"])
    free, _ = await keys.create("free", None, None, None, None)
    assert scoped.allows_model("flux-1-schnell") and not scoped.allows_model("gpt-image-1")
    assert free.allows_model("anything")
    stored = await keys.get(scoped.id)
    assert stored is not None and stored.models == ("flux-1-schnell",)


async def test_authenticate_refuses_everything_else(db: Database, keys: KeyStore) -> None:
    _, plaintext = await keys.create("a", None, None, None, None)
    revoked, revoked_text = await keys.create("b", None, None, None, None)
    assert await keys.revoke(revoked.id)
    body = plaintext[4:37]
    bad_checksum = f"igk_{body}_{'A' * 6}" if not plaintext.endswith("A" * 6) else f"igk_{body}_{'B' * 6}"
    unknown = generate_key()
    for presented in (
        None,
        "",
        "garbage",
        bad_checksum,
        "' OR 1=1 --",
        "igk_'; DROP TABLE api_keys; --_abcdef",
        unknown,
        revoked_text,
        plaintext + " ",
        plaintext.upper(),
        "\x00" * 50,
        "é" * 300,
    ):
        assert await keys.authenticate(presented) is None, presented
    assert await keys.authenticate(plaintext) is not None  # and the table is still there
    other_pepper = KeyStore(db, b"another-pepper")
    assert await other_pepper.authenticate(plaintext) is None


async def test_authenticate_takes_the_same_path_for_every_input(db: Database, keys: KeyStore) -> None:
    _, plaintext = await keys.create("a", None, None, None, None)
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "api_keys" in statement:
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        for presented in (None, "", "garbage", generate_key(), plaintext):
            statements.clear()
            await keys.authenticate(presented)
            assert len(statements) == 1 and "key_hash" in statements[0], presented
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_revoke_by_id_or_prefix(keys: KeyStore) -> None:
    by_id, text_a = await keys.create("a", None, None, None, None)
    by_prefix, text_b = await keys.create("b", None, None, None, None)
    assert await keys.revoke(by_id.id)
    assert await keys.revoke(by_prefix.prefix)
    assert not await keys.revoke(by_id.id)  # already revoked
    assert not await keys.revoke("key_unknown")
    assert await keys.authenticate(text_a) is None and await keys.authenticate(text_b) is None
    listed = {k.id: k for k in await keys.list()}
    assert listed[by_id.id].revoked_at is not None and listed[by_prefix.id].revoked_at is not None


async def test_invalid_limits_are_refused(db: Database, keys: KeyStore) -> None:
    for budget, rpm, per_day in (
        (Decimal(-1), None, None),
        (Decimal("NaN"), None, None),
        (None, 0, None),
        (None, None, 0),
    ):
        with pytest.raises(ValueError):
            await keys.create("x", budget, rpm, per_day, None)
    with pytest.raises(ValueError):
        KeyStore(db, b"")


async def test_plaintext_is_never_stored(db: Database, keys: KeyStore, tmp_path: Path) -> None:
    _, plaintext = await keys.create("secret", Decimal(1), None, None, None)
    secret_part = plaintext[12:37]  # beyond the displayed prefix
    async with db.transaction(readonly=True) as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                dumped = repr(tuple(row))
                assert plaintext not in dumped and secret_part not in dumped
    if db.dialect == "sqlite":
        await db.close()  # checkpoint the WAL into the main file
        for path in (tmp_path / "data").iterdir():
            raw = path.read_bytes()
            assert plaintext.encode() not in raw and secret_part.encode() not in raw
        stored = (tmp_path / "data" / "imagegate.db").read_bytes()
        assert hash_key(plaintext, PEPPER).encode() in stored  # the hash is what is kept
