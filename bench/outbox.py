"""Enqueue on commit: the outbox relay against `enqueue_batch`, in the same run.

    uv run python bench/outbox.py            # JOBS_BENCH_DATABASE_URL, default local PostgreSQL

A `jobs-server serve` process on a fresh database, and a second fresh database as the
producer's (both on the same PostgreSQL server, so both clocks are the same). Prints:
  - throughput: `--jobs` jobs sent with `enqueue_batch` (batches of 500, one at a time),
    then the same number written to the outbox (untimed) and drained by one relay (batches of
    500); jobs/s of each and their ratio;
  - added latency: `--rate` single-row commits a second for `--seconds`, one relay running
    (`run(idle_seconds=--poll)`); latency = the job's `created_at` on the server - the outbox
    row's `created_at` in the producer's transaction; beside it the same rate of direct
    `enqueue` calls, latency = `created_at` - the call's start; p50 and p90 of each and the
    difference of the p50s (what enqueue on commit adds).
Each figure is the median of `--runs` (3) runs, with min and max, direct and relay alternating.
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

from _common import SERVER_URL, bench_database, load_average, summary, with_database
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
    tag = uuid.uuid4().hex[:8]  # keys of their own each run: a dedup key repeated would dedup
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.relay(pool, jobs).run(stop=stop, idle_seconds=poll))
    written: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        key = f"lat-{tag}-{i}"
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, REQUEST.model_copy(update={"dedup_key": key}))
            written[key] = float(await conn.fetchval("SELECT extract(epoch FROM now())"))
    while await outbox.relay(pool, jobs).waiting():
        await asyncio.sleep(0.05)
    stop.set()
    await relay
    server = await asyncpg.connect(db_url)
    rows = await server.fetch(
        "SELECT dedup_key, extract(epoch FROM created_at) AS at FROM jobs WHERE dedup_key LIKE $1",
        f"lat-{tag}-%",
    )
    await server.close()
    return [float(r["at"]) - written[r["dedup_key"]] for r in rows]


async def direct_latency(
    jobs: JobsClient, db_url: str, *, rate: float, seconds: float
) -> list[float]:
    sent: dict[str, float] = {}
    started = time.perf_counter()

    async def one(key: str) -> None:
        sent[key] = time.time()
        await jobs.enqueue(REQUEST.model_copy(update={"dedup_key": key}))

    calls = []
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        calls.append(asyncio.create_task(one(f"direct-{i}")))
    await asyncio.gather(*calls)
    server = await asyncpg.connect(db_url)
    rows = await server.fetch(
        "SELECT dedup_key, extract(epoch FROM created_at) AS at FROM jobs "
        "WHERE dedup_key LIKE 'direct-%'"
    )
    await server.execute("DELETE FROM jobs WHERE dedup_key LIKE 'direct-%'")
    await server.close()
    return [float(r["at"]) - sent[r["dedup_key"]] for r in rows]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return 1000 * statistics.median(seconds), 1000 * statistics.quantiles(seconds, n=10)[8]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.05, help="the relay's idle wait, s")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    async with bench_database("outbox") as db, producer_database() as pool:
        proc, url = await start_server(db, wakeups=True)
        try:
            async with JobsClient(url, TOKEN, timeout=60) as jobs:
                await batch_rate(jobs, BATCH)  # warm-up
                for _ in range(args.runs):
                    run = await one_run(jobs, pool, db, args)
                    for key, value in run.items():
                        figures.setdefault(key, []).append(value)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    for key, values in figures.items():
        print(f"{key:<44} {summary(values)}")
    print(
        f"({load_average()}; {args.jobs} jobs a throughput run, {args.rate:g}/s for "
        f"{args.seconds:g} s a latency run, relay poll {args.poll:g} s)"
    )


async def one_run(
    jobs: JobsClient, pool: asyncpg.Pool, db: str, args: argparse.Namespace
) -> dict[str, float]:
    direct = await batch_rate(jobs, args.jobs)
    relayed = await relay_rate(pool, jobs, args.jobs)
    lat = await added_latency(pool, jobs, db, rate=args.rate, seconds=args.seconds, poll=args.poll)
    plain = await direct_latency(jobs, db, rate=args.rate, seconds=args.seconds)
    (relay50, relay90), (direct50, direct90) = percentiles(lat), percentiles(plain)
    return {
        "enqueue_batch jobs/s": direct,
        "outbox relay jobs/s": relayed,
        "relay / enqueue_batch": relayed / direct,
        "direct enqueue latency p50 ms": direct50,
        "direct enqueue latency p90 ms": direct90,
        "enqueue on commit latency p50 ms": relay50,
        "enqueue on commit latency p90 ms": relay90,
        "added by enqueue on commit, p50 ms": relay50 - direct50,
    }


if __name__ == "__main__":
    asyncio.run(main())
