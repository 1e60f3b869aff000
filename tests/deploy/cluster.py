"""The processes of a two-instance deployment (docs/deploy.md): gateways, HAProxy, a fake upstream.

Each is a real process started from the command line a person would type. `Gateway` can be killed
(SIGKILL), stopped gracefully (SIGTERM) and started again on the same port with the same
configuration; its log is appended to, so one file tells the whole story of an instance.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
START_SECONDS = 60.0
STOP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without provider keys, AWS settings or imagegate's own variables
    (nothing from the host leaks into a gateway), plus `extra`."""
    dropped = ("AWS_", "IMAGEGATE_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k != "FAL_KEY" and not k.startswith(dropped)
    }
    return {**env, **extra}


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail(log)}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {START_SECONDS:g} s (last: {last}):\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class FakeUpstream:
    """tests/fakes/openai.py as its own process, every image request delayed by `latency` seconds."""

    def __init__(self, workdir: Path, key: str, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "fake-openai.log"
        self.key = key
        self.latency = latency
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "tests.fakes.openai", "--port", str(self.port), "--key", self.key]
        args += ["--latency", str(self.latency)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}/_fake/requests", self.process, self.log, "the fake upstream")

    def stop(self) -> None:
        _stop(self.process)


@dataclass(frozen=True)
class Shared:
    """What every instance of the deployment shares."""

    database_url: str
    redis_url: str
    bucket: str
    s3_endpoint: str
    upstream: str  # the fake OpenAI's base URL (.../v1)
    env: Mapping[str, str]  # signing key, key pepper, AWS_* credentials, the upstream key
    drain_delay_seconds: float
    shutdown_grace_seconds: int
    webhook_port: int  # the test's webhook receiver on 127.0.0.1 (admitted by [inputs])


def instance_config(shared: Shared, instance_id: str, port: int, data_dir: Path) -> str:
    """One instance's imagegate.toml: the same for every instance but `instance_id`, port and data dir."""
    return f"""\
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
instance_id = "{instance_id}"
database_url = "{shared.database_url}"
redis_url = "{shared.redis_url}"
request_timeout_seconds = 120

[auth]
mode = "keys"

[storage]
url = "s3://{shared.bucket}/results"
endpoint_url = "{shared.s3_endpoint}"
region = "us-east-1"

[server]
trusted_proxies = ["127.0.0.1/32"]
drain_delay_seconds = {shared.drain_delay_seconds}
shutdown_grace_seconds = {shared.shutdown_grace_seconds}

[providers.openai]
base_url = "{shared.upstream}"
api_key_env = "DEPLOY_OPENAI_KEY"

[inputs]
allow_loopback = true
allowed_ports = [80, 443, {shared.webhook_port}]

[jobs]
lease_seconds = 3
poll_interval_seconds = 0.2

[webhooks]
retry_delays_seconds = [0.5, 1, 2, 4]
timeout_seconds = 5
"""


class Gateway:
    """One `imagegate serve --config FILE` process; restartable on the same port."""

    def __init__(self, workdir: Path, instance_id: str, shared: Shared) -> None:
        self.instance_id = instance_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / instance_id
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.data_dir / "imagegate.toml"
        self.config.write_text(instance_config(shared, instance_id, self.port, self.data_dir))
        self.log = self.data_dir / "server.log"
        self.env = clean_env(shared.env)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        assert not self.running, f"{self.instance_id} is already running"
        args = [sys.executable, "-m", "imagegate", "serve", "--config", str(self.config), "--log-level", "info"]
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {self.starts + 1} of {self.instance_id}\n".encode())
            log.flush()
            self.process = subprocess.Popen(args, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1

    def wait_ready(self) -> None:
        """Until /readyz answers 200 (database, Redis and the bucket reachable)."""
        assert self.process is not None
        _wait_http(f"{self.url}/readyz", self.process, self.log, f"gateway {self.instance_id}")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no reconciliation until the next start."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_SECONDS)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        _stop(self.process)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class HAProxy:
    """`haproxy -db -f deploy/haproxy.cfg` with the addresses given as environment variables."""

    def __init__(self, workdir: Path, backends: Mapping[str, str], check_inter: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = workdir / "haproxy.sock"
        self.log = workdir / "haproxy.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "IMAGEGATE_LB_BIND": f"127.0.0.1:{self.port}",
            "IMAGEGATE_LB_SOCKET": str(self.socket),
            "IMAGEGATE_LB_LOG": "stdout",
            "IMAGEGATE_CHECK_INTER": check_inter,
            **{f"IMAGEGATE_{name.upper()}": address for name, address in backends.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def check_config(self, binary: str) -> None:
        result = subprocess.run([binary, "-c", "-f", str(HAPROXY_CFG)], env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, f"haproxy -c failed:\n{result.stdout}{result.stderr}"

    def start(self, binary: str) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(HAPROXY_CFG)], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{tail(self.log)}")
            with contextlib.suppress(OSError):
                self.servers()
                return
            time.sleep(0.05)
        raise RuntimeError(f"haproxy's socket did not answer:\n{tail(self.log)}")

    def stop(self) -> None:
        _stop(self.process)

    def command(self, line: str) -> str:
        """One command on the admin socket (`show stat`, `show servers state`, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self, backend: str = "imagegate") -> dict[str, dict[str, str]]:
        """`show stat` rows of `backend`'s servers, by server name (status: UP, DOWN, UP 1/2, ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {row["svname"]: row for row in rows if row["pxname"] == backend and row["svname"] != "BACKEND"}

    def counter(self, column: str) -> int:
        """A `show stat` counter summed over the backend's servers (`wretr`: retries, `wredis`: redispatches)."""
        return sum(int(row[column] or 0) for row in self.servers().values())

    def status(self, server: str) -> str:
        return self.servers()[server]["status"]

    def wait_status(self, server: str, status: str, timeout: float = 30.0) -> None:
        """Until HAProxy's health checks have marked `server` fully `status` (UP or DOWN)."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.status(server)
            if seen == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"haproxy did not mark {server} {status} within {timeout:g} s (last: {seen})")


class DroppingServer:
    """A stand-in instance that is ready (/readyz 200) but closes every other request's connection
    without a byte of answer, as an instance killed mid-request does; it records what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str | None]] = []  # method, path, Idempotency-Key
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)  # so that the loop sees `close`
        self._closed = threading.Event()
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="dropping-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        if path == "/readyz":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            return
        self.received.append((method, path, headers.get("idempotency-key")))
        # no answer: the `with` closes the connection

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 (a thread): records every delivery; answers 500 to the first
    delivery of the job ids `fail_first` picks, after recording it (a receiver that processed a
    message but whose answer was lost), so those ids arrive twice."""

    def __init__(self, fail_first: Callable[[str], bool]) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.deliveries.append((headers, body))
                    message = headers.get("webhook-id", "")
                    fail = fail_first(message) and message not in receiver._failed
                    if fail:
                        receiver._failed.add(message)
                self.send_response(500 if fail else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def snapshot(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
