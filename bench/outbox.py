"""Enqueue on commit: the outbox relay against `enqueue_batch`, in the same run.

    uv run python bench/outbox.py            # JOBS_BENCH_DATABASE_URL, default local PostgreSQL

A `jobs-server serve` process on a fresh database, and a second fresh database as the
producer's (both on the same PostgreSQL server, so both clocks are the same). Prints:
  - throughput: `--jobs` jobs sent with `enqueue_batch` (batches of 500, one at a time),
    then the same number written to the outbox (untimed) and drained by one relay (batches of
    500); jobs/s of each and their ratio;
  - added latency: `--rate` single-row commits a second for `--seconds`, one relay running
    (`run(idle_seconds=--poll)`); latency = the job's `created_at` on the server - the outbox
    row's `created_at` in the producer's transaction; p50 and p90.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from _common import SERVER_URL, bench_database, with_database
from enqueue import TOKEN, start_server
from jobs_schema import EnqueueRequest
from jobs_sdk import JobsClient
from jobs_sdk.outbox import Outbox

REQUEST = EnqueueRequest(use_case="bench", job_type="bench.noop", payload={"to": "a@example.com"})
BATCH = 500


@asynccontextmanager
async def producer_database() -> AsyncIterator[asyncpg.Pool]:
    name = f"jobs_bench_producer_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    pool = await asyncpg.create_pool(with_database(SERVER_URL, name), min_size=2, max_size=4)
    try:
        async with pool.acquire() as conn:
            await Outbox().create_table(conn)
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(SERVER_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def batch_rate(jobs: JobsClient, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n // BATCH):
        await jobs.enqueue_batch([REQUEST] * BATCH)
    return n / (time.perf_counter() - started)


async def relay_rate(pool: asyncpg.Pool, jobs: JobsClient, n: int) -> float:
    outbox = Outbox()
    async with pool.acquire() as conn:
        for _ in range(n // BATCH):
            async with conn.transaction():
                await outbox.add(conn, *[REQUEST] * BATCH)
    started = time.perf_counter()
    done = await outbox.relay(pool, jobs, batch_size=BATCH).drain()
    elapsed = time.perf_counter() - started
    assert done.sent == n, done
    return n / elapsed


async def added_latency(
    pool: asyncpg.Pool, jobs: JobsClient, db_url: str, *, rate: float, seconds: float, poll: float
) -> list[float]:
    outbox = Outbox()
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.relay(pool, jobs).run(stop=stop, idle_seconds=poll))
    written: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        key = f"lat-{i}"
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, REQUEST.model_copy(update={"dedup_key": key}))
            written[key] = float(await conn.fetchval("SELECT extract(epoch FROM now())"))
    while await outbox.relay(pool, jobs).waiting():
        await asyncio.sleep(0.05)
    stop.set()
    await relay
    server = await asyncpg.connect(db_url)
    rows = await server.fetch(
        "SELECT dedup_key, extract(epoch FROM created_at) AS at FROM jobs "
        "WHERE dedup_key LIKE 'lat-%'"
    )
    await server.close()
    return [float(r["at"]) - written[r["dedup_key"]] for r in rows]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.05, help="the relay's idle wait, s")
    args = parser.parse_args()
    async with bench_database("outbox") as db, producer_database() as pool:
        proc, url = await start_server(db, wakeups=True)
        try:
            async with JobsClient(url, TOKEN, timeout=60) as jobs:
                await batch_rate(jobs, BATCH)  # warm-up
                direct = await batch_rate(jobs, args.jobs)
                relayed = await relay_rate(pool, jobs, args.jobs)
                print(f"enqueue_batch, batches of {BATCH}:  {direct:8.0f} jobs/s")
                print(f"outbox relay, batches of {BATCH}:   {relayed:8.0f} jobs/s")
                print(f"relay / enqueue_batch:           {relayed / direct:8.2f}")
                lat = await added_latency(
                    pool, jobs, db, rate=args.rate, seconds=args.seconds, poll=args.poll
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    q = statistics.quantiles(lat, n=10)
    print(
        f"added latency, {len(lat)} commits at {args.rate:g}/s, relay poll {args.poll:g} s: "
        f"p50 {1000 * statistics.median(lat):.1f} ms, p90 {1000 * q[8]:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
