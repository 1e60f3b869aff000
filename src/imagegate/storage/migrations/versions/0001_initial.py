"""Initial tables: api_keys, requests (the ledger), idempotency.

Money columns are BIGINT nano-dollars (1e-9 USD); timestamps are timezone-aware. This file spells
out its DDL and never imports the live schema module, so later schema edits cannot change it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _money(name: str, nullable: bool, default: str | None = None) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable, server_default=default)


def _create_api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _ts("created_at", False),
        _ts("revoked_at", True),
        _money("budget", True),
        _money("spent", False, "0"),
        _money("reserved", False, "0"),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("images_per_day", sa.Integer(), nullable=True),
        sa.Column("models", sa.Text(), nullable=True),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)


def _create_requests() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(64), sa.ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True),
        sa.Column("instance", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("size", sa.String(), nullable=True),
        sa.Column("quality", sa.String(), nullable=True),
        sa.Column("attempts", sa.Text(), nullable=True),
        _money("reserved", False, "0"),
        _money("cost", True),
        sa.Column("error_code", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        _ts("created_at", False),
        _ts("finished_at", True),
    )
    op.create_index("ix_requests_key_created", "requests", ["key_id", "created_at"])
    op.create_index("ix_requests_status_created", "requests", ["status", "created_at"])


def _create_idempotency() -> None:
    op.create_table(
        "idempotency",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.Text(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("key_id", "idem_key", name="pk_idempotency"),
    )


def upgrade() -> None:
    _create_api_keys()
    _create_requests()
    _create_idempotency()


def downgrade() -> None:
    op.drop_table("idempotency")
    op.drop_index("ix_requests_status_created", table_name="requests")
    op.drop_index("ix_requests_key_created", table_name="requests")
    op.drop_table("requests")
    op.drop_index("ix_api_keys_key_hash", table_name="api_keys")
    op.drop_table("api_keys")
