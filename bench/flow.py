"""Flow limits' cost: dispatch throughput to SQS (LocalStack) with concurrency and rate keys on
(every job keyed, limits configured but not binding, so both passes claim the same jobs), as a
ratio to the same jobs without keys or limits, measured in the same run, by turns.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/flow.py          # JOBS_BENCH_DATABASE_URL, JOBS_BENCH_SQS_ENDPOINT_URL
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg

from _common import SQS_URL, bench_database, load_average, summary
from jobs_schema import RateLimit, UseCaseConfig
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.scheduler import Dispatcher, Elector
from jobs_server.store.postgres import PostgresJobStore

LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, run_at, deadline, max_attempts,
                  backoff, created_at, concurrency_key, rate_key)
SELECT gen_random_uuid(), 'acme', $1, 'bench.noop', '{"n": 1}', now() - interval '1 hour',
       now() + interval '1 hour' + g * interval '1 millisecond', 3, '{}', now() - interval '1 hour',
       CASE WHEN $3 THEN 'account-' || (g % $4) END, CASE WHEN $3 THEN 'api-' || (g % $4) END
FROM generate_series(1, $2) g
"""


async def one_pass(
    url: str, publisher: SqsPublisher, *, keyed: bool, jobs: int, keys: int, batch: int
) -> float:
    """Jobs/s from pending to SQS for one use case of `jobs` due jobs."""
    name = f"flow-{'on' if keyed else 'off'}-{uuid.uuid4().hex[:6]}"
    uc = UseCaseConfig(
        queue=name,
        capacity=100_000,
        # limits that hold every job of the run: the pass pays for them without waiting
        concurrency_limit_per_key=100_000 if keyed else None,
        rate_limit=RateLimit(starts=10_000, per_seconds=1) if keyed else None,
    )
    conn = await asyncpg.connect(url)
    await conn.execute(LOAD, name, jobs, keyed, keys)
    await conn.execute("ANALYZE jobs")
    await conn.close()
    await publisher.ensure_queues([QueueSpec(name)])
    store = await PostgresJobStore.connect(url, min_size=2, max_size=4)
    elector = Elector(store, name=name, ttl_seconds=60.0)
    dispatcher = Dispatcher(
        store, publisher, {name: uc}, elector=elector, clock=store.clock, claim_batch=batch
    )
    assert await elector.run_once(store.clock.now())
    started = time.perf_counter()
    sent = 0
    while sent < jobs:
        sent += (await dispatcher.run_once(store.clock.now())).sent
    rate = jobs / (time.perf_counter() - started)
    await publisher._client.delete_queue(QueueUrl=await publisher.queue_url(name))
    await store.close()
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5_000, help="due jobs per pass")
    parser.add_argument("--keys", type=int, default=50, help="distinct keys of each kind")
    parser.add_argument("--batch", type=int, default=500, help="claim batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    print(load_average(), "(before)")
    on, off = [], []
    async with bench_database("flow") as url:
        publisher = await SqsPublisher.connect(
            region="us-east-1", endpoint_url=SQS_URL, in_flight=args.in_flight
        )
        try:
            for run in range(args.runs):
                order = (True, False) if run % 2 == 0 else (False, True)  # by turns
                for keyed in order:
                    rate = await one_pass(
                        url,
                        publisher,
                        keyed=keyed,
                        jobs=args.jobs,
                        keys=args.keys,
                        batch=args.batch,
                    )
                    (on if keyed else off).append(rate)
                    print(f"run {run + 1}: keys {'on ' if keyed else 'off'} {rate:,.0f} jobs/s")
        finally:
            await publisher.close()
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(
        f"{args.jobs:,} due jobs, {args.keys} concurrency and {args.keys} rate keys, "
        f"claim batch {args.batch}, {args.runs} runs"
    )
    print(f"keys off: jobs/s {summary(off)}")
    print(f"keys on:  jobs/s {summary(on)}")
    print(
        f"on / off (per run): {summary(ratios)} (aim >= 0.8); of medians "
        f"{statistics.median(on) / statistics.median(off):.2f}"
    )
    print(load_average(), "(after)")


if __name__ == "__main__":
    asyncio.run(main())
