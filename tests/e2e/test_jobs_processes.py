"""Jobs across real gateway processes sharing the embedded SQLite file and data dir: a job whose
instance is killed -9 mid-generation is finished by another instance and charged once."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.fakes.openai import FakeOpenAI
from tests.gateway_process import start_gateway

KEY = "sk-jobs-process-key"


def _config(path: Path, instance: str, openai_url: str) -> Path:
    path.write_text(
        f"""
instance_id = "{instance}"
[providers.openai]
base_url = "{openai_url}"
api_key_env = "JOBS_OPENAI_KEY"
[catalog.status."gpt-image-1"]
openai = "active"
[sandbox]
enabled = false
[jobs]
lease_seconds = 2
poll_interval_seconds = 0.1
"""
    )
    return path


def _wait(client: httpx.Client, url: str, done, seconds: float) -> dict:
    until = time.monotonic() + seconds
    while True:
        body = client.get(url).json()
        if done(body) or time.monotonic() > until:
            return body
        time.sleep(0.05)


def test_a_job_of_a_killed_instance_is_finished_by_another_and_charged_once(tmp_path: Path) -> None:
    fake = FakeOpenAI(key=KEY)
    fake.latency = 1.5
    data = tmp_path / "shared"
    env = {"JOBS_OPENAI_KEY": KEY, "IMAGEGATE_SIGNING_KEY": "shared-signing-key"}
    with fake.run_in_thread() as openai_url:
        a, base_a = start_gateway(data, _config(tmp_path / "a.toml", "a", openai_url), env)
        try:
            with httpx.Client(timeout=10) as client:
                accepted = client.post(
                    f"{base_a}/v1/images/generations",
                    json={"prompt": "a slow lighthouse", "model": "gpt-image-1", "response_format": "url"},
                    headers={"Prefer": "respond-async"},
                )
                assert accepted.status_code == 202, accepted.text
                location = accepted.headers["location"]
                running = _wait(client, f"{base_a}{location}", lambda b: b["status"] == "running", 10)
                assert running["status"] == "running"
                time.sleep(0.3)  # the upstream call is in flight
                a.send_signal(signal.SIGKILL)
                a.wait(10)
        finally:
            if a.poll() is None:
                a.kill()
        b, base_b = start_gateway(data, _config(tmp_path / "b.toml", "b", openai_url), env)
        try:
            with httpx.Client(timeout=10) as client:
                done = _wait(client, f"{base_b}{location}", lambda b: b["status"] in ("succeeded", "failed"), 30)
                assert done["status"] == "succeeded", done
                assert done["progress"]["attempts"] == 2
                link = done["result"]["data"][0]["url"]  # minted for A's address (where the job was accepted)
                assert link.startswith(base_a)
                image = client.get(base_b + link[len(base_a) :])  # served by B from the shared store
                assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            b.terminate()
            b.wait(20)
    calls = [r for r in fake.requests if r.path == "/v1/images/generations"]
    with sqlite3.connect(data / "imagegate.db") as db:
        rows = db.execute("select status, cost from requests").fetchall()
    print(f"\nupstream calls {len(calls)}; ledger rows {rows}")
    assert len(calls) == 2  # the killed instance's call and the takeover's
    assert len(rows) == 1 and rows[0][0] == "succeeded"  # one request, settled once
