"""`imagegate serve` as a real process, for end-to-end tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gateway_process(
    data_dir: Path, config: str | None = None, env: Mapping[str, str] | None = None, log_level: str = "info"
) -> Iterator[str]:
    """Start the gateway on a free port with `config` (TOML text) and yield its base URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "imagegate",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_level,
    ]
    if config is not None:
        (data_dir / "imagegate.toml").write_text(config)
        args += ["--config", str(data_dir / "imagegate.toml")]
    base_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FAL_KEY"}
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**base_env, **(env or {})})
        base = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        try:
            _wait_ready(base, process, log_path)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"gateway did not start: {log_path.read_text()}")


def start_gateway(
    data_dir: Path, config_path: Path, env: Mapping[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`imagegate serve` with the config file at `config_path`, not stopped for the caller (who may
    kill it -9); returns the process and its base URL once it answers /healthz. Its log is
    `config_path` with the suffix `.log`."""
    port = port or free_port()
    args = [sys.executable, "-m", "imagegate", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--config", str(config_path), "--log-level", "info"]
    base_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FAL_KEY"}
    log_path = config_path.with_suffix(".log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**base_env, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log_path)
    except BaseException:
        process.kill()
        raise
    return process, base
