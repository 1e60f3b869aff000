"""Memory of a real gateway process under bursts of large image work (the resource envelope).

Two scenarios, each against a fresh `imagegate serve` process (sandbox provider), RSS of the
server pid sampled from /proc/PID/status (VmRSS every 20 ms; VmHWM at the end):
  (a) edits: six concurrent edits, each with four 40-megapixel flat-colour PNGs (about 110 KiB each);
      RSS at start, peak, and 60 s after the last answer
  (b) generations: 500 concurrent sandbox generations at 1024x1024; RSS growth at peak and after
Every answer must be a 200, or a 503 carrying Retry-After: the table counts them.
Bar: (a) peak growth <= 1 GiB and back within 200 MiB of start a minute later; (b) growth <= 300 MiB.

Run: .venv/bin/python bench/memory.py [--only edits|generations] [--settle 60] [--config-extra TOML]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_process import free_port

MIB = 1024 * 1024
EDIT_PIXELS = (8000, 5000)  # 40 megapixels: exactly the default per-image cap
EDITS, IMAGES_PER_EDIT = 6, 4
GENERATIONS = 500
BASE_CONFIG = "request_timeout_seconds = 300\n[sandbox]\nenabled = true\n"


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class Sampler:
    """Samples VmRSS of a pid in a thread; `peak` is the highest sample since `reset`."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, read_status(self.pid)["VmRSS"])
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def server(config: str) -> Iterator[tuple[str, int]]:
    """`imagegate serve` with `config` on a free port; yields (base URL, pid)."""
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-membench-"))
    (data_dir / "imagegate.toml").write_text(config)
    port = free_port()
    args = [sys.executable, "-m", "imagegate", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--config", str(data_dir / "imagegate.toml"), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FAL_KEY"}
    with open(data_dir / "server.log", "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, process)
            yield base, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError("gateway did not start")


def flat_png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", EDIT_PIXELS, color).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


@dataclass
class Answers:
    statuses: list[int] = field(default_factory=list)
    missing_retry_after: int = 0
    other: dict[int, str] = field(default_factory=dict)

    def add(self, status: int, headers: object, body: bytes) -> None:
        self.statuses.append(status)
        if status == 503 and "Retry-After" not in headers:  # type: ignore[operator]
            self.missing_retry_after += 1
        if status not in (200, 503):
            self.other.setdefault(status, body[:200].decode(errors="replace"))

    def count(self, status: int) -> int:
        return sum(1 for s in self.statuses if s == status)


async def _post_all(requests: list[tuple[str, object]], answers: Answers) -> None:
    """Fire every request at once; (url, json dict or aiohttp.FormData factory)."""
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)

    async def one(session: aiohttp.ClientSession, url: str, body: object) -> None:
        kwargs = {"json": body} if isinstance(body, dict) else {"data": body()}  # type: ignore[operator]
        try:
            async with session.post(url, **kwargs) as response:
                answers.add(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            answers.add(599, {}, repr(exc).encode())

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one(session, url, body) for url, body in requests))


def _edit_form(pngs: list[bytes]) -> object:
    def build() -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("prompt", "add a moon")
        form.add_field("model", "gpt-image-1")
        form.add_field("size", "1024x1024")
        for index, data in enumerate(pngs):
            form.add_field("image[]", data, filename=f"{index}.png", content_type="image/png")
        return form

    return build


@dataclass
class Row:
    scenario: str
    start: int
    peak: int
    after: int
    hwm: int
    answers: Answers
    wall_s: float


def run_scenario(name: str, config: str, requests: list[tuple[str, object]], settle: float) -> Row:
    with server(config) as (base, pid):
        urls = [(base + path, body) for path, body in requests]
        time.sleep(1.0)
        start = read_status(pid)["VmRSS"]
        answers = Answers()
        with Sampler(pid) as sampler:
            began = time.perf_counter()
            asyncio.run(_post_all(urls, answers))
            wall = time.perf_counter() - began
            time.sleep(settle)
        status = read_status(pid)
        return Row(name, start, sampler.peak, status["VmRSS"], status["VmHWM"], answers, wall)


def print_table(rows: list[Row], settle: float) -> None:
    print(
        f"| scenario | RSS start MiB | RSS peak MiB | peak growth MiB | RSS {settle:g} s after MiB | held MiB "
        "| VmHWM MiB | 200 | 503 | 503 without Retry-After | other | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        a = r.answers
        other = ", ".join(f"{status}: {text!r}" for status, text in a.other.items()) or "-"
        print(
            f"| {r.scenario} | {r.start / MIB:.0f} | {r.peak / MIB:.0f} | {(r.peak - r.start) / MIB:.0f} "
            f"| {r.after / MIB:.0f} | {(r.after - r.start) / MIB:.0f} | {r.hwm / MIB:.0f} | {a.count(200)} "
            f"| {a.count(503)} | {a.missing_retry_after} | {other} | {r.wall_s:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("edits", "generations"))
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait before the 'after' sample")
    parser.add_argument("--config-extra", default="", help="TOML appended to the server config")
    args = parser.parse_args()
    config = BASE_CONFIG + args.config_extra.replace("\\n", "\n")
    rows: list[Row] = []
    if args.only in (None, "edits"):
        pngs = [flat_png((40 * i, 90, 200 - 40 * i)) for i in range(IMAGES_PER_EDIT)]
        print(
            f"edit inputs: {IMAGES_PER_EDIT} x {EDIT_PIXELS[0]}x{EDIT_PIXELS[1]} PNG, "
            f"{sum(map(len, pngs)) / 1024:.0f} KiB per request",
            flush=True,
        )
        edits = [("/v1/images/edits", _edit_form(pngs)) for _ in range(EDITS)]
        rows.append(run_scenario(f"(a) {EDITS} edits x {IMAGES_PER_EDIT} x 40 MP", config, edits, args.settle))
    if args.only in (None, "generations"):
        body = {"model": "gpt-image-1", "prompt": "a lighthouse", "size": "1024x1024"}
        gens = [("/v1/images/generations", dict(body, prompt=f"a lighthouse {i}")) for i in range(GENERATIONS)]
        rows.append(run_scenario(f"(b) {GENERATIONS} generations 1024x1024", config, gens, args.settle))
    print_table(rows, args.settle)


if __name__ == "__main__":
    main()
