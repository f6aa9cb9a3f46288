"""A scheduler pass with flow control on: 1,000 schedules due and 10,000 rate keys among the
pending jobs, at each size of pending rows (100k and 1M by default), median of the runs with
min and max.

Each run is one pass as the leader makes it (the ManualClock moves a minute between runs):
PeriodicJobs.run_once (read the due schedules, then one transaction that moves each on by
compare-and-set and stores its job), then the dispatcher's claim of one batch (500) from the
use case, whose pending jobs spread over `--rate-keys` rate keys under a rate limit of 10 a
second each (the keyed claim; no publishing: the figure is the database's and ours, not SQS's).

    uv run python bench/periodic.py                      # JOBS_BENCH_DATABASE_URL
    uv run python bench/periodic.py --pending 10000 --schedules 100 --rate-keys 100 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from _common import bench_database, load_average, summary
from jobs_schema import (
    JobsConfig,
    RateLimit,
    ScheduleDefinition,
    ScheduleSource,
    UseCaseConfig,
)
from jobs_server.clock import ManualClock
from jobs_server.scheduler import Elector, PeriodicJobs
from jobs_server.schedules import stored
from jobs_server.service import JobService
from jobs_server.store.postgres import PostgresJobStore

LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, run_at, deadline, max_attempts,
                  backoff, created_at, rate_key)
SELECT gen_random_uuid(), 'load', 'bench', 'bench.noop', '{"n": 1}', now() - interval '1 hour',
       now() + (g * interval '1 millisecond'), 3, '{}', now() - interval '1 hour',
       CASE WHEN $2 > 0 THEN 'key-' || (g % $2) END
FROM generate_series($3::bigint, $3 + $1 - 1) g
"""
BATCH = 500


def config(rate_keys: int) -> JobsConfig:
    limit = RateLimit(starts=10, per_seconds=1.0) if rate_keys else None
    return JobsConfig(
        use_cases={"bench": UseCaseConfig(queue="bench", capacity=100_000, rate_limit=limit)},
        tenants={},
    )


async def load(url: str, n: int, rate_keys: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, n, 100_000):
            await conn.execute(LOAD, min(100_000, n - start), rate_keys, start)
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


async def measure(
    pending: int, schedules: int, rate_keys: int, runs: int
) -> tuple[list[float], list[float]]:
    """(periodic ms, dispatch ms) of each run."""
    async with bench_database("periodic") as url:
        await load(url, pending, rate_keys)
        start = datetime.now(UTC).replace(microsecond=0)
        clock = ManualClock(start)
        store = await PostgresJobStore.connect(url, min_size=1, max_size=2, clock=clock)
        cfg = config(rate_keys)
        try:
            definition = ScheduleDefinition(
                interval_seconds=60, use_case="bench", job_type="bench.tick"
            )
            for i in range(schedules):
                row = stored(
                    f"t{i % 10}", f"s{i}", definition, source=ScheduleSource.API, now=start
                )
                await store.create_schedule(row)
            jobs = JobService(store, cfg, default_quota=None, max_payload_bytes=65536, clock=clock)
            periodic = PeriodicJobs(store, jobs, batch=schedules)
            elector = Elector(store, name="bench", ttl_seconds=86_400)
            uc = cfg.use_cases["bench"]
            ticks, passes = [], []
            for run in range(runs + 1):  # the first warms the statement cache, not counted
                clock.set(start + timedelta(minutes=run + 1))
                leader = await elector.run_once(clock.now())
                assert leader is not None
                began = time.perf_counter()
                ticked = await periodic.run_once(clock.now())
                between = time.perf_counter()
                claimed = await store.claim_due_jobs(
                    "bench",
                    capacity=uc.capacity,
                    limit=BATCH,
                    lease_seconds=60,
                    leader=leader,
                    per_tenant_cap=None,
                    rate_limit=uc.rate_limit,
                )
                ended = time.perf_counter()
                assert ticked.created == schedules, ticked
                assert len(claimed) == BATCH, len(claimed)
                if run:
                    ticks.append((between - began) * 1000)
                    passes.append((ended - between) * 1000)
            return ticks, passes
        finally:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--rate-keys", type=int, default=10_000, help="0: no rate limit")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for pending in args.pending:
        ticks, passes = await measure(pending, args.schedules, args.rate_keys, args.runs)
        total = [a + b for a, b in zip(ticks, passes, strict=True)]
        head = f"{pending:,} pending rows, {args.rate_keys:,} rate keys"
        print(f"{head}: periodic run_once, {args.schedules} schedules due: {summary(ticks)} ms")
        claim = "keyed claim" if args.rate_keys else "claim"
        print(f"{head}: the dispatcher's {claim} of {BATCH}: {summary(passes)} ms")
        print(
            f"{head}: the pass, both: {summary(total)} ms over {len(total)} runs; {load_average()}"
        )


if __name__ == "__main__":
    asyncio.run(main())
