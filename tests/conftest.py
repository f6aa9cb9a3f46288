"""Real services for the tests: PostgreSQL (JOBS_TEST_DATABASE_URL, else an embedded pgserver)
with a migrated template database cloned per test, and jobs-server on a loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import uvicorn

from jobs_server.app import create_app
from jobs_server.serving import JobsUvicornServer
from jobs_server.settings import ServerSettings
from jobs_server.store.migrations import migrate

TENANTS = {
    "acme": {"max_active_jobs": 10_000, "tokens": ["tok-acme"]},
    "globex": {"max_active_jobs": 10_000, "tokens": ["tok-globex"]},
    "tiny": {"max_active_jobs": 10, "tokens": ["tok-tiny"]},
}
USE_CASES: dict[str, dict[str, Any]] = {
    "notifications": {
        "queue": "notifications",
        "capacity": 5,
        "default_delay_tolerance_seconds": 60,
        "max_attempts": 3,
        "timeout_seconds": 5,
        "job_types": ["notifications.send_email", "notifications.send_push"],
        "backoff": {"kind": "constant", "base_seconds": 1, "cap_seconds": 1, "jitter": 0},
    },
    "labeling": {"queue": "labeling", "capacity": 10},
}
ADMIN_TOKEN = "tok-admin"
READONLY_TOKEN = "tok-readonly"
WORKER_TOKEN = "tok-worker"


# aiobotocore finds credentials in the environment, as it would in production.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a PostgreSQL server where tests may create databases."""
    url = os.environ.get("JOBS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


@pytest.fixture(scope="session")
async def template_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"jobs_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await _admin(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    await migrate(with_database(pg_server_url, name))
    yield name
    conn = await _admin(pg_server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def database_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own (cloned from the template)."""
    name = f"jobs_test_{uuid.uuid4().hex[:12]}"
    conn = await _admin(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await conn.close()
    yield with_database(pg_server_url, name)
    conn = await _admin(pg_server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def empty_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = f"jobs_empty_{uuid.uuid4().hex[:12]}"
    conn = await _admin(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(pg_server_url, name)
    conn = await _admin(pg_server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for assertions on stored rows."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_settings(database_url: str, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "use_cases": USE_CASES,
        "tenants": TENANTS,
        "admin_token": ADMIN_TOKEN,
        "readonly_admin_token": READONLY_TOKEN,
        "worker_token": WORKER_TOKEN,
        "db_pool_min": 0,
        "db_pool_max": 10,
    }
    values.update(overrides)
    return ServerSettings(**values)


@dataclass
class LiveServer:
    url: str
    database_url: str
    settings: ServerSettings
    admin_token: str = ADMIN_TOKEN
    readonly_token: str = READONLY_TOKEN
    worker_token: str = WORKER_TOKEN
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def tenant_token(tenant: str) -> str:
        return str(TENANTS[tenant]["tokens"][0])  # type: ignore[index]


StartServer = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_server(database_url: str) -> AsyncIterator[StartServer]:
    """Factory: start jobs-server (uvicorn, real HTTP on loopback) with settings overrides."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> LiveServer:
        """`app_options`: keyword arguments of create_app besides the settings; `clock`: the
        server's (a ManualClock the test moves instead of sleeping)."""
        db_url = overrides.pop("database_url", database_url)
        app_options = overrides.pop("app_options", {})
        if "clock" in overrides:
            app_options = {**app_options, "clock": overrides.pop("clock")}
        settings = make_settings(db_url, **overrides)
        port = free_port()
        app = create_app(settings, **app_options)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = JobsUvicornServer(config, jobs=app.state.jobs)
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("jobs-server did not start")
        servers.append((server, task))
        return LiveServer(url=f"http://127.0.0.1:{port}", database_url=db_url, settings=settings)

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


@pytest.fixture
async def live_server(start_server: StartServer) -> LiveServer:
    return await start_server()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """An SQS endpoint on loopback: JOBS_TEST_SQS_ENDPOINT_URL (e.g. LocalStack), else a moto
    server in a subprocess of its own."""
    url = os.environ.get("JOBS_TEST_SQS_ENDPOINT_URL")
    if url:
        yield url
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def queue_prefix() -> str:
    """Queue names of this test's own, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"
