"""A real `jobs-server serve` process with 1,000 idle event streams open: they hold no database
connection (only the pool's and the one LISTEN connection show in pg_stat_activity), a change
reaches every one of them, and SIGTERM ends them all (`shutdown`) so that the process stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx

from tests.conftest import TENANTS, USE_CASES, free_port

LISTENERS = 1000
POOL_MAX = 4
GUARD = 60.0  # the longest a step may take: a hang, not a measure


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    return env | {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_USE_CASES": json.dumps(USE_CASES),
        "JOBS_TENANTS": json.dumps(TENANTS),
        "JOBS_DB_POOL_MAX": str(POOL_MAX),
        "JOBS_METRICS_ENABLED": "false",
        "JOBS_SHUTDOWN_GRACE_SECONDS": "30",
    }


async def _port_open(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        assert proc.poll() is None, "jobs-server exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("jobs-server did not listen")


async def _data_line(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data: "):
            return line[6:]
    raise AssertionError("the stream ended without an event")


async def _kinds_to_end(lines: AsyncIterator[str]) -> list[str]:
    return [line[7:] async for line in lines if line.startswith("event: ")]


async def _connections(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return [r["query"] for r in rows]


async def test_idle_streams_hold_no_connections_and_end_on_sigterm(
    database_url: str, db: asyncpg.Connection
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs_server", "serve", "--port", str(port)],
        env=_env(database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _port_open(port, proc)
        limits = httpx.Limits(max_connections=LISTENERS + 10, max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                limits=limits,
                timeout=httpx.Timeout(GUARD, read=None),
                headers={"Authorization": "Bearer tok-acme"},
            ) as http,
            contextlib.AsyncExitStack() as stack,
        ):
            streams: list[httpx.Response] = []
            for _ in range(LISTENERS // 100):  # opened a hundred at a time
                opened = await asyncio.gather(
                    *(
                        stack.enter_async_context(http.stream("GET", "/v1/events"))
                        for _ in range(100)
                    )
                )
                streams += opened
            assert all(r.status_code == 200 for r in streams)

            held = await _connections(db)
            listening = [q for q in held if q.upper().startswith("LISTEN")]
            assert len(listening) == 1, held
            assert len(held) <= POOL_MAX + 1, held

            lines = [r.aiter_lines() for r in streams]
            created = await http.post(
                "/v1/jobs",
                json={"use_case": "labeling", "job_type": "labeling.tag", "payload": {}},
            )
            assert created.status_code == 201
            job_id = created.json()["job"]["id"]
            got = await asyncio.wait_for(asyncio.gather(*(_data_line(i) for i in lines)), GUARD)
            assert {json.loads(d)["id"] for d in got} == {job_id}
            assert len(got) == LISTENERS
            assert len(await _connections(db)) <= POOL_MAX + 1

            proc.send_signal(signal.SIGTERM)
            ends = await asyncio.wait_for(asyncio.gather(*(_kinds_to_end(i) for i in lines)), GUARD)
            assert all(kinds == ["shutdown"] for kinds in ends)
        # uvicorn raises SIGTERM again once it has stopped
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), GUARD) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
