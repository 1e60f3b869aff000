"""`imagegate keys ...` and `imagegate usage`: API keys and the ledger from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import click

from imagegate.accounting.runtime import Runtime
from imagegate.config import Settings
from imagegate.errors import ImagegateError
from imagegate.web.accounts import parse_time

T = TypeVar("T")


def run_with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        runtime = Runtime(settings, serving=False)  # never reconcile a running server's live rows
        try:
            await runtime.ready()
            return await work(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(main())
    except ImagegateError as exc:
        raise click.ClickException(exc.message) from None


def _money(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"not a number: {value}") from None
    if amount < 0 or not amount.is_finite():
        raise click.BadParameter("must be zero or more")
    return amount


Common = Callable[[Callable[..., None]], Callable[..., None]]
Loader = Callable[[Path | None, Path | None], Settings]


def register(main: click.Group, common: Common, load: Loader) -> None:
    _register_keys(main, common, load)
    _register_usage(main, common, load)


def _register_keys(main: click.Group, common: Common, load: Loader) -> None:
    @main.group()
    def keys() -> None:
        """Create, list and revoke API keys."""

    @keys.command("create")
    @click.option("--name", required=True)
    @click.option("--budget-usd", default=None, help="Total budget in USD (default: unlimited).")
    @click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
    @click.option("--images-per-day", type=click.IntRange(min=1), default=None)
    @click.option("--models", default=None, help="Comma-separated model ids this key may use.")
    @click.option("--webhook-url", default=None, help="Where this key's async jobs are delivered by default.")
    @common
    def create(
        name: str,
        budget_usd: str | None,
        rpm: int | None,
        images_per_day: int | None,
        models: str | None,
        webhook_url: str | None,
        config_file: Path | None,
        data_dir: Path | None,
    ) -> None:
        """Create a key; the key itself is printed once, alone on the last line."""
        allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise click.BadParameter("must be an http(s) URL", param_hint="--webhook-url")
        settings = load(config_file, data_dir)
        key, plaintext = run_with_runtime(
            settings, lambda rt: rt.keys.create(name, _money(budget_usd), rpm, images_per_day, allowed, webhook_url)
        )
        click.echo(f"created {key.id} ({key.name}); store the key now, it is not shown again:", err=True)
        click.echo(plaintext)

    @keys.command("list")
    @common
    def list_keys(config_file: Path | None, data_dir: Path | None) -> None:
        """List keys (never the keys themselves)."""
        rows = run_with_runtime(load(config_file, data_dir), lambda rt: rt.keys.list())
        click.echo("ID  NAME  PREFIX  BUDGET  SPENT  RPM  IMAGES/DAY  MODELS  STATUS")
        for k in rows:
            status = "revoked" if k.revoked_at else "active"
            budget = k.budget if k.budget is not None else "-"
            models = ",".join(k.models) if k.models else "*"
            click.echo(
                f"{k.id}  {k.name}  {k.prefix}  {budget}  {k.spent}  {k.rpm or '-'}  {k.images_per_day or '-'}  "
                f"{models}  {status}"
            )

    @keys.command("revoke")
    @click.argument("key_id")
    @common
    def revoke(key_id: str, config_file: Path | None, data_dir: Path | None) -> None:
        """Revoke a key by id or prefix."""
        if not run_with_runtime(load(config_file, data_dir), lambda rt: rt.keys.revoke(key_id)):
            raise click.ClickException(f"no active key {key_id}")
        click.echo(f"revoked {key_id}")


def _register_usage(main: click.Group, common: Common, load: Loader) -> None:
    @main.command()
    @click.option("--key", "key_id", default=None, help="Only this key (default: all).")
    @click.option("--since", default=None, help="ISO 8601 time or Unix seconds.")
    @click.option("--until", default=None)
    @common
    def usage(
        key_id: str | None, since: str | None, until: str | None, config_file: Path | None, data_dir: Path | None
    ) -> None:
        """Totals by day, model and provider, from the ledger (JSON)."""
        try:
            start, end = parse_time(since, "since"), parse_time(until, "until")
        except ImagegateError as exc:
            raise click.BadParameter(exc.message) from None
        totals = run_with_runtime(load(config_file, data_dir), lambda rt: rt.ledger.usage(key_id, start, end))
        click.echo(json.dumps(totals, indent=2, default=str))
