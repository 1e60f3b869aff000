"""The command line: models table, generate to a file, config errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from imagegate.cli import main


def test_models_table_lists_catalog(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "CREATOR", "MODES"]
    gpt = next(line for line in lines if line.startswith("gpt-image-1 "))
    assert "openai(retired)" in gpt and "fal" in gpt and "sandbox" in gpt


def test_generate_writes_the_image(tmp_path: Path) -> None:
    target = tmp_path / "out.webp"
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "a cat in a hat",
            "--model",
            "gpt-image-2",
            "--size",
            "1280x720",
            "--output-format",
            "webp",
            "-o",
            str(target),
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.format == "WEBP" and image.size == (1280, 720)
    assert "provider=sandbox" in result.output and "cost=$0" in result.output


def test_generate_reports_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", "x", "--size", "huge", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "size" in result.output


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text("port = 'eighty'\nunknown_key = 1\n")
    result = CliRunner().invoke(main, ["models", "--config", str(config)])
    assert result.exit_code != 0
    assert "port" in result.output and "unknown_key" in result.output


def test_config_file_is_applied(tmp_path: Path) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text('default_model = "flux-1-schnell"\n[catalog.status."gpt-image-1"]\nopenai = "active"\n')
    result = CliRunner().invoke(main, ["models", "--config", str(config), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    gpt = next(line for line in result.output.splitlines() if line.startswith("gpt-image-1 "))
    assert "openai(retired)" not in gpt
    target = tmp_path / "default.png"
    result = CliRunner().invoke(
        main, ["generate", "x", "-o", str(target), "--config", str(config), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "model=flux-1-schnell" in result.output


def test_keys_create_list_revoke_and_usage(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--data-dir", str(tmp_path)]
    created = runner.invoke(
        main,
        [
            "keys",
            "create",
            "--name",
            "team-a",
            "--budget-usd",
            "5",
            "--rpm",
            "10",
            "--images-per-day",
            "100",
            "--models",
            "gpt-image-1,flux-1-schnell",
            *common,
        ],
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("igk_") and len(key) > 30
    listed = runner.invoke(main, ["keys", "list", *common])
    assert "team-a" in listed.output and key not in listed.output and key[:12] in listed.output
    assert "gpt-image-1,flux-1-schnell" in listed.output
    assert runner.invoke(main, ["keys", "revoke", key[:12], *common]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["keys", "list", *common]).output
    assert runner.invoke(main, ["keys", "revoke", "key_nope", *common]).exit_code != 0
    usage = runner.invoke(main, ["usage", *common])
    assert usage.exit_code == 0 and '"totals"' in usage.output
    assert runner.invoke(main, ["keys", "create", "--name", "x", "--budget-usd", "lots", *common]).exit_code != 0
    assert runner.invoke(main, ["usage", "--since", "tomorrow", *common]).exit_code != 0


def test_an_admin_command_beside_a_running_server_leaves_its_live_rows_alone(tmp_path: Path) -> None:
    """`imagegate keys list` shares the server's data dir and instance id; it must not reconcile the
    server's in-flight (pending) ledger rows as if that instance had crashed."""
    import asyncio
    import sqlite3
    from decimal import Decimal

    from imagegate.accounting.ledger import LedgerEntry
    from imagegate.accounting.runtime import Runtime
    from imagegate.config import Settings

    settings = Settings(data_dir=tmp_path, instance_id="gw-a")

    async def begin_as_the_server() -> None:
        runtime = Runtime(settings)
        await runtime.ready()
        entry = LedgerEntry("req_live", None, "gw-a", "gpt-image-1", "text-to-image", 1, None, None, Decimal(0), None)
        await runtime.ledger.begin(entry)
        await runtime.ledger.aclose()
        await runtime._db.close()  # type: ignore[union-attr]  # gone without settling, as in flight

    asyncio.run(begin_as_the_server())
    config = tmp_path / "gw-a.toml"
    config.write_text('instance_id = "gw-a"\n')
    listed = CliRunner().invoke(main, ["keys", "list", "--data-dir", str(tmp_path), "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    with sqlite3.connect(tmp_path / "imagegate.db") as db:
        assert db.execute("select status from requests where id = 'req_live'").fetchone() == ("pending",)
