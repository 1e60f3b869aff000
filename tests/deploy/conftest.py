"""A two-instance deployment for tests/deploy (docs/deploy.md), built once per module.

    client -> HAProxy (deploy/haproxy.cfg) -> imagegate a | imagegate b -> fake OpenAI (a process)
                                                   |            |
                               PostgreSQL (a fresh schema), Redis, S3 (moto's server)

It needs HAProxy (Debian: `apt-get install haproxy`; `./dev test` installs it as root), moto's
server mode, PostgreSQL (``IMAGEGATE_TEST_POSTGRES``, default the local ``test`` database) and Redis
(``IMAGEGATE_TEST_REDIS_URL``). Without one of them the tests are skipped, except with ``CI=true``,
where they fail. Every process is stopped, the schema dropped and the moto server stopped at the
end, whatever happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.deploy.cluster import (
    REPO,
    FakeUpstream,
    Gateway,
    HAProxy,
    Shared,
    WebhookReceiver,
    clean_env,
    instance_config,
)

PG_DSN = os.environ.get("IMAGEGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("IMAGEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UPSTREAM_KEY = "sk-deploy-fake-upstream"
UPSTREAM_LATENCY = 0.4  # seconds per image request: requests are in flight when an instance dies
CHECK_INTER = "250ms"  # HAProxy's health check interval here (production: 2s)
DRAIN_DELAY = 3.0
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"deploy-webhook-secret-32-bytes!!").decode()
SHUTDOWN_GRACE = 15


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: several gateway processes behind HAProxy (tests/deploy)")


def require(ok: bool, what: str) -> None:
    """Skip without `what`, except under CI=true, where its absence is a failure."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI for the deployment tests")
    pytest.skip(f"{what} is not available")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 2).close()
    except OSError:
        return False
    return True


@dataclass
class Deployment:
    workdir: Path
    lb: HAProxy
    a: Gateway
    b: Gateway
    fake: FakeUpstream
    key: str  # an imagegate API key (keys mode), stored in the shared database
    schema: str
    bucket: str
    s3_endpoint: str
    webhooks: WebhookReceiver

    @property
    def gateways(self) -> dict[str, Gateway]:
        return {"a": self.a, "b": self.b}

    def ensure_up(self) -> None:
        """Both instances running, and HAProxy sending them traffic (after a test stopped one)."""
        for gateway in self.gateways.values():
            if not gateway.running:
                gateway.start()
        for name in self.gateways:
            self.lb.wait_status(name, "UP")

    def headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.key}"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        return headers

    async def ledger(self, where: str, *args: object) -> list[asyncpg.Record]:
        """Rows of the shared `requests` table (the ledger) matching `where` ($1, $2... are `args`)."""
        return await self.fetch(f"SELECT * FROM requests WHERE {where}", *args)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """A query on the deployment's schema of the shared database."""
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": self.schema})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=3)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def haproxy() -> str:
    """The haproxy binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    require(found is not None, "haproxy (apt-get install haproxy)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def deployment(haproxy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        require(False, f"moto[server] ({exc!r})")
        raise
    require(_reachable(PG_DSN, 5432), f"PostgreSQL at {PG_DSN}")
    require(_reachable(REDIS_URL, 6379), f"Redis at {REDIS_URL}")

    workdir = tmp_path_factory.mktemp("deploy")
    schema = f"deploy_{uuid.uuid4().hex[:12]}"
    bucket = f"imagegate-deploy-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        s3_endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "deploy-key", "AWS_SECRET_ACCESS_KEY": "deploy-secret"}
        boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)

        asyncio.run(_admin(f'CREATE SCHEMA "{schema}"'))
        stack.callback(lambda: asyncio.run(_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')))

        receiver = WebhookReceiver(lambda message: int(message[-2:], 16) % 5 == 0)  # a fifth arrive twice
        stack.callback(receiver.close)
        fake = FakeUpstream(workdir, UPSTREAM_KEY, UPSTREAM_LATENCY)
        stack.callback(fake.stop)
        fake.start()

        shared = Shared(
            database_url=f"{PG_DSN}?search_path={schema}",
            redis_url=REDIS_URL,
            bucket=bucket,
            s3_endpoint=s3_endpoint,
            upstream=f"{fake.url}/v1",
            env={
                **creds,
                "IMAGEGATE_SIGNING_KEY": f"deploy-signing-{uuid.uuid4().hex}",
                "IMAGEGATE_KEY_PEPPER": f"deploy-pepper-{uuid.uuid4().hex}",
                "DEPLOY_OPENAI_KEY": UPSTREAM_KEY,
                "IMAGEGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            },
            drain_delay_seconds=DRAIN_DELAY,
            shutdown_grace_seconds=SHUTDOWN_GRACE,
            webhook_port=receiver.port,
        )
        key = _create_key(workdir, shared)

        a = Gateway(workdir, "gw-a", shared)
        b = Gateway(workdir, "gw-b", shared)
        stack.callback(a.stop)
        stack.callback(b.stop)
        a.spawn()  # both at once: the migrations are safe when instances start together
        b.spawn()
        a.wait_ready()
        b.wait_ready()

        lb = HAProxy(workdir, {"a": f"127.0.0.1:{a.port}", "b": f"127.0.0.1:{b.port}"}, CHECK_INTER)
        lb.check_config(haproxy)
        stack.callback(lb.stop)
        lb.start(haproxy)
        deployment = Deployment(workdir, lb, a, b, fake, key, schema, bucket, s3_endpoint, receiver)
        deployment.ensure_up()
        yield deployment


def _create_key(workdir: Path, shared: Shared) -> str:
    """`imagegate keys create` against the shared database, from an admin config whose instance_id is
    its own: a command run with a serving instance's config would reconcile that instance's rows."""
    admin_dir = workdir / "admin"
    admin_dir.mkdir()
    config = admin_dir / "imagegate.toml"
    config.write_text(instance_config(shared, "deploy-admin", 0, admin_dir))
    args = [sys.executable, "-m", "imagegate", "keys", "create", "--name", "deploy-test", "--config", str(config)]
    args += ["--budget-usd", "1000", "--rpm", "100000", "--images-per-day", "1000000"]
    result = subprocess.run(args, cwd=REPO, env=clean_env(shared.env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"keys create failed:\n{result.stdout}{result.stderr}"
    return result.stdout.strip().splitlines()[-1]
