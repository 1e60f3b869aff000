"""Command line: `imagegate serve`, `imagegate models`, `imagegate generate`."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import date
from pathlib import Path

import click
import orjson
import pybase64

from imagegate import cli_accounts
from imagegate.config import ConfigError, Settings, load_settings
from imagegate.errors import ImagegateError

_common = [
    click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML configuration file.",
    ),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where images and keys are kept (default ./data).",
    ),
]


def common_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(_common):
        func = option(func)
    return func


def _settings(
    config_file: Path | None, data_dir: Path | None, host: str | None = None, port: int | None = None
) -> Settings:
    try:
        return load_settings(config_file, host=host, port=port, data_dir=data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="imagegate")
def main() -> None:
    """imagegate: one OpenAI-compatible API for image generation and editing."""


@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--log-level", default="info", show_default=True)
@common_options
def serve(host: str | None, port: int | None, log_level: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Start the gateway."""
    from imagegate.web.app import create_app
    from imagegate.web.server import serve as run_server

    settings = _settings(config_file, data_dir, host, port)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    providers = ", ".join(f"{p.name}{'' if p.available() else ' (no key)'}" for p in app.state.registry)
    click.echo(
        f"imagegate on http://{settings.host}:{settings.port}  data: {settings.data_dir}  "
        f"providers: {providers or 'none'}  auth: {settings.auth.mode}",
        err=True,
    )
    _warn_open(settings)
    run_server(app, settings, log_level, app.state.runtime.metrics)


def _warn_open(settings: Settings) -> None:
    if settings.auth.mode != "open":
        return
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        click.echo("auth mode 'open': no API key needed; only this machine can reach the gateway.", err=True)
        return
    click.echo(
        f"WARNING: auth mode 'open' while bound to {settings.host}: anyone who can reach this port can spend "
        'your provider credit. Set [auth] mode = "keys" and create keys with `imagegate keys create`.',
        err=True,
    )


@main.command()
@common_options
def models(config_file: Path | None, data_dir: Path | None) -> None:
    """List the catalog's models."""
    from imagegate.catalog.loader import load_catalog
    from imagegate.providers.registry import build_registry
    from imagegate.web.models import model_json

    settings = _settings(config_file, data_dir)
    catalog = load_catalog(settings.catalog.paths, settings.status_overrides())
    registry = build_registry(settings)
    rows = [("MODEL", "CREATOR", "MODES", "MAX RES", "INPUTS", "STATUS", "PROVIDERS")]
    for model in catalog.models():
        info = model_json(model, registry, date.today())
        providers = ",".join(
            f"{p['provider']}{'' if p['status'] == 'active' else '(' + p['status'] + ')'}" for p in info["providers"]
        )
        modes = ",".join("gen" if m == "text-to-image" else "edit" for m in info["modes"])
        rows.append(
            (
                model.id,
                model.creator,
                modes,
                model.max_resolution,
                str(model.max_input_images),
                info["status"],
                providers,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


@main.command()
@click.argument("prompt")
@click.option("--model", default=None, help="Catalog model (default from config).")
@click.option("--size", default=None, help='"WxH", "W:H" or "auto".')
@click.option("--output-format", default=None, type=click.Choice(["png", "jpeg", "webp", "gif", "avif", "svg"]))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File to write (default ./imagegate-<request id>.<format>).",
)
@common_options
def generate(
    prompt: str,
    model: str | None,
    size: str | None,
    output_format: str | None,
    output: Path | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Run one generation through the in-process service and write the image."""
    settings = _settings(config_file, data_dir)
    try:
        body = asyncio.run(_generate(settings, prompt, model, size, output_format))
    except ImagegateError as exc:
        raise click.ClickException(f"{exc.message} (param: {exc.param})" if exc.param else exc.message) from None
    ext = body["output_format"]
    target = output or Path(f"imagegate-{body['imagegate']['request_id']}.{ext}")
    target.write_bytes(pybase64.b64decode(body["data"][0]["b64_json"]))
    meta = body["imagegate"]
    click.echo(
        f"{target}  {body['size']} {ext}  model={meta['model']} provider={meta['provider']} cost=${meta['cost_usd']}"
    )


async def _generate(
    settings: Settings, prompt: str, model: str | None, size: str | None, output_format: str | None
) -> dict[str, object]:
    from imagegate.schemas import GenerateParams, parse_params
    from imagegate.web.app import create_app
    from imagegate.web.middleware import new_request_id
    from imagegate.web.render import images_body

    app = create_app(settings)
    service = app.state.service
    fields = {
        "prompt": prompt,
        "model": model,
        "size": size,
        "output_format": output_format,
        "response_format": "b64_json",
    }
    params = parse_params(GenerateParams, {k: v for k, v in fields.items() if v is not None})
    try:
        prepared = service.prepare(params, "text-to-image")
        completion = await service.execute(prepared, None, new_request_id())
        items = await service.deliver(prepared, completion, "http://localhost")
    finally:
        await app.state.registry.aclose()
    body: dict[str, object] = orjson.loads(images_body(completion, items))
    return body


def _load(config_file: Path | None, data_dir: Path | None) -> Settings:
    return _settings(config_file, data_dir)


cli_accounts.register(main, common_options, _load)


if __name__ == "__main__":
    sys.exit(main())
