"""Shared set-up of the benchmarks: a database of their own, LocalStack's endpoint, timing."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobs_server.store.migrations import migrate

SERVER_URL = os.environ.get(
    "JOBS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SQS_URL = os.environ.get("JOBS_BENCH_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")

for _name, _value in (
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
):
    os.environ.setdefault(_name, _value)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@asynccontextmanager
async def bench_database(label: str) -> AsyncIterator[str]:
    """A fresh, migrated database, dropped afterwards."""
    name = f"jobs_bench_{label}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(SERVER_URL, name)
    await migrate(url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(SERVER_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"
