"""Raw-socket helpers and a gateway process whose handle the test keeps (to send it SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.gateway_process import _wait_ready, free_port


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@contextlib.contextmanager
def running_gateway(data_dir: Path, config: str, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "imagegate.toml").write_text(config)
    port = free_port()
    args = [sys.executable, "-m", "imagegate", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--config", str(data_dir / "imagegate.toml")]
    base_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FAL_KEY"}
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**base_env, **(env or {})})
        gateway = Gateway(process, port, log_path)
        try:
            _wait_ready(gateway.base, process, log_path)
            yield gateway
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str | None]:
        error: dict[str, str | None] = orjson.loads(self.body)["error"]
        return error


def read_until_closed(sock: socket.socket, limit_seconds: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout past the limit)."""
    sock.settimeout(limit_seconds)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body)


def readable(sock: socket.socket, wait: float) -> bool:
    ready, _, _ = select.select([sock], [], [], wait)
    return bool(ready)
