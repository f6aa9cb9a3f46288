"""Periodic jobs: the time of one PeriodicJobs.run_once with 1,000 schedules due, at each size
of pending rows (100k and 1M by default), median of the runs with min and max.

Each run is one tick of every schedule (the ManualClock moves a minute between runs): read the
due schedules, then one transaction that moves each on by compare-and-set and stores its job.

    uv run python bench/periodic.py                      # JOBS_BENCH_DATABASE_URL
    uv run python bench/periodic.py --pending 10000 --schedules 100 --runs 3   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from _common import bench_database, load_average, summary
from jobs_schema import JobsConfig, ScheduleDefinition, ScheduleSource, UseCaseConfig
from jobs_server.clock import ManualClock
from jobs_server.scheduler import PeriodicJobs
from jobs_server.schedules import stored
from jobs_server.service import JobService
from jobs_server.store.postgres import PostgresJobStore

LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, run_at, deadline, max_attempts,
                  backoff, created_at)
SELECT gen_random_uuid(), 'load', 'bench', 'bench.noop', '{"n": 1}', now() - interval '1 hour',
       now() + (g * interval '1 millisecond'), 3, '{}', now() - interval '1 hour'
FROM generate_series(1, $1) g
"""
CONFIG = JobsConfig(
    use_cases={"bench": UseCaseConfig(queue="bench")},
    tenants={},
)


async def load(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, n, 100_000):
            await conn.execute(LOAD, min(100_000, n - start))
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


async def measure(pending: int, schedules: int, runs: int) -> list[float]:
    async with bench_database("periodic") as url:
        await load(url, pending)
        start = datetime.now(UTC).replace(microsecond=0)
        clock = ManualClock(start)
        store = await PostgresJobStore.connect(url, min_size=1, max_size=2, clock=clock)
        try:
            definition = ScheduleDefinition(
                interval_seconds=60, use_case="bench", job_type="bench.tick"
            )
            for i in range(schedules):
                row = stored(
                    f"t{i % 10}", f"s{i}", definition, source=ScheduleSource.API, now=start
                )
                await store.create_schedule(row)
            jobs = JobService(
                store, CONFIG, default_quota=None, max_payload_bytes=65536, clock=clock
            )
            periodic = PeriodicJobs(store, jobs, batch=schedules)
            times = []
            for run in range(runs + 1):  # the first warms the statement cache, not counted
                clock.set(start + timedelta(minutes=run + 1))
                began = time.perf_counter()
                ticked = await periodic.run_once(clock.now())
                elapsed = (time.perf_counter() - began) * 1000
                assert ticked.created == schedules, ticked
                if run:
                    times.append(elapsed)
            return times
        finally:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for pending in args.pending:
        times = await measure(pending, args.schedules, args.runs)
        print(
            f"run_once, {args.schedules} schedules due, {pending:,} pending rows: "
            f"{summary(times)} ms over {len(times)} runs; {load_average()}"
        )


if __name__ == "__main__":
    asyncio.run(main())
