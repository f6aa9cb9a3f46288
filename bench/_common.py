"""Shared set-up of the benchmarks: a database of their own, LocalStack's endpoint, timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
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
async def bench_database(label: str, *, python: str | None = None) -> AsyncIterator[str]:
    """A fresh, migrated database, dropped afterwards. `python` (a baseline's interpreter, see
    `baseline_python`) migrates it with that checkout's migrations instead of ours."""
    name = f"jobs_bench_{label}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(SERVER_URL, name)
    if python is None:
        await migrate(url)
    else:
        env = os.environ | {"JOBS_DATABASE_URL": url}
        subprocess.run([python, "-m", "jobs_server", "migrate"], env=env, check=True)
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


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def baseline_python(rev: str) -> str:
    """The interpreter of a checkout of `rev` of this repository (a git worktree kept under
    ~/.cache/jobs-bench, synced from its own uv.lock), so that one run measures both."""
    repo = Path(__file__).resolve().parent.parent
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", rev + "^{commit}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = Path.home() / ".cache" / "jobs-bench" / sha[:12]
    if not tree.exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), sha], check=True
        )
    subprocess.run(
        ["uv", "sync", "--frozen", "--quiet"],
        cwd=tree,
        check=True,
        env=os.environ | {"VIRTUAL_ENV": ""},
    )
    return str(tree / ".venv" / "bin" / "python")


def this_python() -> str:
    return sys.executable
