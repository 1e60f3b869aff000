"""The server edge in a real `imagegate serve` process, driven with raw sockets.

Slow headers and slow bodies are cut off with a 408, connections over the cap get a 503, forwarded
headers from an untrusted peer (even loopback) are ignored, and SIGTERM drains in-flight requests.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.server.process import Gateway, parse_response, read_until_closed, readable, running_gateway

EDGE_CONFIG = """
[server]
header_timeout_seconds = 0.5
body_idle_timeout_seconds = 1.0
min_upload_bytes_per_second = 4096
min_upload_grace_seconds = 2.0
[playground]
anonymous_images_per_ip_per_day = 1
"""
GEN_BODY = {"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1024", "response_format": "b64_json"}
POST_HEAD = (
    b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("edge"), EDGE_CONFIG) as gateway:
        yield gateway


def test_half_sent_headers_get_408_after_header_timeout(edge: Gateway) -> None:
    with edge.connect() as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\n")
        response = parse_response(read_until_closed(sock))
    assert response.status == 408 and response.headers["connection"] == "close"
    assert response.error()["code"] == "request_timeout"
    assert response.headers["content-type"] == "application/json"


def test_half_sent_second_request_on_keep_alive_connection_gets_408(edge: Gateway) -> None:
    with edge.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while not first.rstrip().endswith(b"}"):  # the /healthz JSON body
            chunk = sock.recv(65536)
            assert chunk, "closed before answering the first request"
            first += chunk
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        second = parse_response(read_until_closed(sock))
    assert parse_response(first).status == 200
    assert second.status == 408 and second.error()["code"] == "request_timeout"


def test_silent_connection_is_closed(edge: Gateway) -> None:
    with edge.connect() as sock:
        assert read_until_closed(sock) == b""


def test_idle_body_gets_408(edge: Gateway) -> None:
    with edge.connect() as sock:
        sock.sendall(POST_HEAD % 1000 + b'{"prompt": ')
        response = parse_response(read_until_closed(sock))
    assert response.status == 408 and response.error()["code"] == "request_timeout"
    assert "no request body data" in str(response.error()["message"])


def test_one_kilobyte_per_second_upload_gets_408(edge: Gateway) -> None:
    with edge.connect() as sock:
        sock.sendall(POST_HEAD % 100_000)
        for _ in range(150):  # 100 bytes every 0.1 s: 1 KB/s, for at most 15 s
            if readable(sock, 0.1):
                break
            sock.sendall(b" " * 100)
        response = parse_response(read_until_closed(sock))
    assert response.status == 408 and response.headers["connection"] == "close"
    assert "under the minimum of 4096 bytes/s" in str(response.error()["message"])


def test_forwarded_for_from_untrusted_loopback_peer_is_ignored(edge: Gateway) -> None:
    url = f"{edge.base}/playground/api/images/generations"
    first = httpx.post(url, json=GEN_BODY, headers={"x-forwarded-for": "198.51.100.1"}, timeout=30)
    second = httpx.post(url, json=GEN_BODY, headers={"x-forwarded-for": "198.51.100.2"}, timeout=30)
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "playground_cap_exceeded"


def test_slow_client_metrics_are_counted(edge: Gateway) -> None:
    with edge.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        read_until_closed(sock)
    metrics = httpx.get(f"{edge.base}/metrics", timeout=10).text
    assert 'imagegate_slow_client_refusals_total{reason="header_timeout"}' in metrics


def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    config = "[server]\nmax_connections = 3\nheader_timeout_seconds = 20\n"
    with running_gateway(tmp_path, config) as gateway:
        held = [gateway.connect() for _ in range(3)]
        try:
            with gateway.connect() as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                response = parse_response(read_until_closed(extra))
        finally:
            for sock in held:
                sock.close()
        assert response.status == 503 and response.headers["retry-after"] == "1"
        assert response.error()["code"] == "too_many_connections"
        assert response.error()["type"] == "server_error"
        for _ in range(100):  # the server notices the closed connections, then admits again
            if httpx.get(f"{gateway.base}/healthz", timeout=10).status_code == 200:
                break
            time.sleep(0.1)
        assert httpx.get(f"{gateway.base}/healthz", timeout=10).status_code == 200


def _upstream_config(openai_url: str, grace: int) -> str:
    return f"""
request_timeout_seconds = 60
[server]
shutdown_grace_seconds = {grace}
[providers.openai]
base_url = "{openai_url}"
api_key_env = "EDGE_OPENAI_KEY"
[catalog.status."gpt-image-1"]
openai = "active"
[routing.models."gpt-image-1"]
providers = [{{provider = "openai", priority = 0}}]
"""


def _post_in_thread(url: str, results: list[httpx.Response | Exception]) -> threading.Thread:
    def post() -> None:
        try:
            results.append(httpx.post(url, json=GEN_BODY, timeout=60))
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _terminate_once_upstream_called(gateway: Gateway, fake: FakeOpenAI) -> None:
    for _ in range(300):
        if fake.requests:
            break
        time.sleep(0.05)
    assert fake.requests, "the request never reached the upstream"
    gateway.process.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_during_request(tmp_path: Path, latency: float, grace: int) -> Iterator[tuple[Gateway, list]]:
    """A gateway whose upstream takes `latency` s; SIGTERM is sent once one request reached it.
    Yields the gateway and the list that gets that request's response (after the client thread ends)."""
    fake = FakeOpenAI(key="sk-edge")
    fake.latency = latency
    with (
        fake.run_in_thread() as openai_url,
        running_gateway(tmp_path, _upstream_config(openai_url, grace=grace), {"EDGE_OPENAI_KEY": "sk-edge"}) as gateway,
    ):
        results: list[httpx.Response | Exception] = []
        thread = _post_in_thread(f"{gateway.base}/v1/images/generations", results)
        _terminate_once_upstream_called(gateway, fake)
        try:
            yield gateway, results
        finally:
            thread.join(30)


def test_sigterm_lets_in_flight_request_finish_then_exits(tmp_path: Path) -> None:
    with _sigterm_during_request(tmp_path, latency=2.0, grace=20) as (gateway, results):
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()
        # uvicorn re-raises the caught SIGTERM once it has shut down cleanly: the conventional status.
        assert gateway.process.wait(timeout=30) == -signal.SIGTERM
    assert "Application shutdown complete" in gateway.log_path.read_text()
    response = results[0]
    assert isinstance(response, httpx.Response) and response.status_code == 200, results
    assert response.json()["imagegate"]["provider"] == "openai"


def test_sigterm_cuts_requests_longer_than_the_grace_with_503(tmp_path: Path) -> None:
    with _sigterm_during_request(tmp_path, latency=60.0, grace=1) as (gateway, results):
        gateway.process.wait(timeout=30)  # raises if the process outlives the grace by far
    response = results[0]
    assert isinstance(response, httpx.Response) and response.status_code == 503, results
    assert response.json()["error"]["code"] == "shutting_down"
