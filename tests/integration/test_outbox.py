"""Enqueue on commit: the producer's own PostgreSQL database (a database of this test's own)
holds the outbox; a real jobs-server on loopback receives what the relays send."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from jobs_schema import JobStatus
from jobs_sdk import JobsClient, Task, Unavailable
from jobs_sdk.outbox import Outbox, OutboxRelay
from tests.conftest import LiveServer, free_port
from tests.integration.test_sdk import FlakyProxy


class Label(BaseModel):
    n: int


label = Task("labeling", "outbox.label", Label)
outbox = Outbox()


@pytest.fixture
async def pool(empty_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The producer's database, with the outbox table."""
    pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await outbox.create_table(conn)
        await conn.execute("CREATE TABLE signups (email text PRIMARY KEY)")
    yield pool
    await pool.close()


@pytest.fixture
async def acme(live_server: LiveServer) -> AsyncIterator[JobsClient]:
    async with JobsClient(live_server.url, live_server.tenant_token("acme")) as client:
        yield client


def relay(pool: asyncpg.Pool, jobs: JobsClient, **options: Any) -> OutboxRelay:
    return outbox.relay(pool, jobs, **{"orphan_after": 0.0, **options})


async def _fill(pool: asyncpg.Pool, n: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, *(label.request(Label(n=i)) for i in range(n)))


async def _labels(jobs: JobsClient) -> list[int]:
    return sorted([int(j.payload["n"]) async for j in jobs.list(job_type=label.job_type)])


async def _rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM jobs_outbox"))


# -- the transaction decides -----------------------------------------------------------------


async def test_a_rolled_back_transaction_enqueues_nothing_a_committed_one_a_job(pool, acme):
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO signups VALUES ('bob@example.com')")
            await outbox.add(conn, label.request(Label(n=1)))
            raise RuntimeError("the signup failed")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO signups VALUES ('ada@example.com')")
        await outbox.add(conn, label.request(Label(n=2), dedup_key="ada"))
    done = await relay(pool, acme).drain()
    assert (done.sent, done.failed) == (1, 0)
    assert await _labels(acme) == [2]
    assert await _rows(pool) == 0


async def test_sqlalchemy_sessions_write_the_outbox_sync_and_async(empty_database_url, pool, acme):
    url = empty_database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(url)

    def sync_writes() -> None:
        with Session(engine) as session, session.begin():
            outbox.add_sync(session, label.request(Label(n=10)), label.request(Label(n=11)))
        with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
            outbox.add_sync(session, label.request(Label(n=99)))
            raise RuntimeError("rolled back")

    await asyncio.to_thread(sync_writes)
    engine.dispose()
    async_url = empty_database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    async_engine = create_async_engine(async_url)
    async with async_engine.begin() as conn:
        await outbox.add_async(conn, label.request(Label(n=12)))
    await async_engine.dispose()
    assert (await relay(pool, acme).drain()).sent == 3
    assert await _labels(acme) == [10, 11, 12]


# -- nothing lost, nothing twice -------------------------------------------------------------


async def test_a_relay_that_dies_between_send_and_delete_leaves_one_job_per_row(pool, acme):
    await _fill(pool, 30)

    async def lose_the_connection() -> None:
        # the server has answered; the relay's connection dies before it deletes the rows
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )

    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await relay(pool, acme, batch_size=30, on_sent=lose_the_connection).run_once()
    assert await _rows(pool) == 30  # nothing was deleted
    assert len(await _labels(acme)) == 30  # but the server has the jobs
    done = await relay(pool, acme).drain()  # another relay resends the same batch
    assert done.sent == 30
    assert await _labels(acme) == list(range(30))
    assert await _rows(pool) == 0


KILLED_RELAY = """
import asyncio, os, signal, sys
import asyncpg
from jobs_sdk import JobsClient
from jobs_sdk.outbox import Outbox

async def main(database_url, server_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)

    async def die():  # the server has answered; the relay dies before it deletes the rows
        os.kill(os.getpid(), signal.SIGKILL)

    async with JobsClient(server_url, "tok-acme") as jobs:
        await Outbox().relay(pool, jobs, on_sent=die).run_once()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_relay_process_killed_between_send_and_delete(
    pool, acme, live_server, empty_database_url
):
    await _fill(pool, 20)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_RELAY, empty_database_url, live_server.url
    )
    assert await asyncio.wait_for(process.wait(), 60) == -9
    assert len(await _labels(acme)) == 20  # the server has the jobs
    for _ in range(200):  # until PostgreSQL has noticed the dead connection
        if await pool.fetchval(_OTHER_TRANSACTIONS) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _rows(pool) == 20  # its transaction died with it: nothing was deleted
    assert (await relay(pool, acme).drain()).sent == 20
    assert await _labels(acme) == list(range(20))
    assert await _rows(pool) == 0


_OTHER_TRANSACTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
)


async def test_two_relays_at_once_send_each_row_once(pool, live_server):
    await _fill(pool, 400)
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token) as a, JobsClient(live_server.url, token) as b:
        first, second = await asyncio.gather(
            relay(pool, a, batch_size=20).drain(), relay(pool, b, batch_size=20).drain()
        )
        assert first.sent + second.sent == 400
        assert first.sent and second.sent  # both took part
        assert await _labels(a) == list(range(400))
    assert await _rows(pool) == 0


async def test_a_server_outage_loses_nothing(pool, acme, live_server):
    await _fill(pool, 25)
    port = free_port()
    async with JobsClient(f"http://127.0.0.1:{port}", "tok-acme", retries=0) as down:
        patient = relay(pool, down, batch_size=10, orphan_after=3600)
        with pytest.raises(Unavailable):
            await patient.run_once()
        proxy = FlakyProxy(live_server.url, [], port=port)  # the server is back
        await proxy.start()
        try:
            # its own unfinished batch first, at once: the same request, now answered
            assert (await patient.run_once()).sent == 10
        finally:
            await proxy.stop()
    assert await _labels(acme) == list(range(10))  # the first batch, not a new one
    proxy = FlakyProxy(live_server.url, ["lose_reply"])  # stored, but the answer is lost
    await proxy.start()
    try:
        async with JobsClient(proxy.url, "tok-acme", retries=0) as flaky:
            with pytest.raises(Unavailable):
                await relay(pool, flaky, batch_size=10).run_once()
    finally:
        await proxy.stop()
    assert await _rows(pool) == 15
    done = await relay(pool, acme, batch_size=10).drain()
    assert await _labels(acme) == list(range(25))
    assert (done.sent, await _rows(pool)) == (15, 0)


# -- refusals --------------------------------------------------------------------------------


async def test_a_refused_request_stays_in_the_outbox_and_the_rest_goes(pool, acme):
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, label.request(Label(n=1)))
        await outbox.add(
            conn, Task("notifications", "notifications.fax", Label).request(Label(n=2))
        )
        await outbox.add(conn, label.request(Label(n=3)))
    done = await relay(pool, acme).drain()
    assert (done.sent, done.failed) == (2, 1)
    assert await _labels(acme) == [1, 3]
    error = await pool.fetchval("SELECT error FROM jobs_outbox")
    assert error.startswith("unknown_job_type: ")
    assert (await relay(pool, acme).drain()).idle  # a failed row is not sent again


async def test_a_full_quota_puts_rows_back_for_later(pool, live_server):
    await _fill(pool, 12)
    async with JobsClient(live_server.url, live_server.tenant_token("tiny")) as tiny:
        done = await relay(pool, tiny).drain()
        assert (done.sent, done.requeued, done.failed) == (10, 2, 0)
        assert await _rows(pool) == 2
        await tiny.cancel_where(limit=2)  # room for two more
        assert (await relay(pool, tiny).drain()).sent == 2
        assert (await tiny.count(status=JobStatus.PENDING)).count == 10
    assert await _rows(pool) == 0


async def test_the_relay_command_drains_the_outbox(pool, live_server, empty_database_url):
    await _fill(pool, 5)
    process = await asyncio.create_subprocess_exec(
        "jobs",
        "--json",
        "outbox",
        "relay",
        "--once",
        "--orphan-after",
        "0",
        env={
            "JOBS_URL": live_server.url,
            "JOBS_TOKEN": "tok-acme",
            "JOBS_OUTBOX_DATABASE_URL": empty_database_url,
            "PATH": _path(),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == '{"sent": 5, "requeued": 0, "failed": 0, "again": false}'
    assert await _rows(pool) == 0


def _path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
