"""What the feasibility triggers (migration 0012) cost the store's own statements.

    uv run python bench/feasibility_triggers.py

Against PostgreSQL directly (no HTTP, no estimate): batches of enqueue_jobs (sizes 1 and 100),
then claim_due_jobs and complete_attempts of 100 jobs at a time, with a pool whose sessions
run the triggers (jobs.feasibility on) and one whose sessions skip them (off), runs
alternating; jobs per second, median / min / max of 3 runs and the ratio on/off per pair.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from _common import bench_database, load_average, summary
from jobs_schema import BackoffPolicy
from jobs_server.clock import DatabaseClock
from jobs_server.service import JobIds
from jobs_server.store.base import LeaderLease, NewJob, SucceededAttempt
from jobs_server.store.postgres import PostgresJobStore

JOBS = 4000


def jobs(ids: JobIds, store: PostgresJobStore, n: int) -> list[NewJob]:
    now = store.clock.now()
    return [
        NewJob(
            id=ids.new(),
            use_case="bench",
            job_type="t",
            payload={"n": 1},
            priority=i % 3,
            run_at=now,
            deadline=now + timedelta(seconds=30 + i % 600),
            max_attempts=3,
            backoff=BackoffPolicy(),
        )
        for i in range(n)
    ]


async def enqueue_rate(store: PostgresJobStore, size: int) -> float:
    ids = JobIds(store.clock)
    batches = [jobs(ids, store, size) for _ in range(JOBS // size)]
    started = time.perf_counter()
    for b in batches:
        await store.enqueue_jobs("acme", quota=None, jobs=b)
    return JOBS / (time.perf_counter() - started)


async def claim_complete_rate(store: PostgresJobStore, leader: LeaderLease) -> float:
    done, started = 0, time.perf_counter()
    while True:
        claimed = await store.claim_due_jobs(
            "bench", capacity=100, limit=100, lease_seconds=60, leader=leader, per_tenant_cap=None
        )
        if not claimed:
            break
        await store.complete_attempts(
            [SucceededAttempt(c.id, c.attempt, c.lease_token, None) for c in claimed]
        )
        done += len(claimed)
    return done / (time.perf_counter() - started)


async def main() -> None:
    async with bench_database("feas_triggers") as url:
        on = await PostgresJobStore.connect(url, max_size=2, clock=DatabaseClock())
        off = await PostgresJobStore.connect(
            url, max_size=2, clock=DatabaseClock(), feasibility=False
        )
        epoch = await on.acquire_leadership("main", "bench", ttl=3600)
        assert epoch is not None
        leader = LeaderLease("main", "bench", epoch)
        try:
            for label, fn in (
                ("enqueue_jobs, batches of 1", lambda s: enqueue_rate(s, 1)),
                ("enqueue_jobs, batches of 100", lambda s: enqueue_rate(s, 100)),
                ("claim_due_jobs + complete_attempts, 100 a call", None),
            ):
                with_it: list[float] = []
                without: list[float] = []
                for _ in range(3):
                    for store, out in ((off, without), (on, with_it)):
                        if fn is None:
                            await enqueue_rate(store, 100)
                            out.append(await claim_complete_rate(store, leader))
                        else:
                            out.append(await fn(store))
                ratios = [w / o for w, o in zip(with_it, without, strict=True)]
                print(
                    f"{label}\n    triggers on {summary(with_it)} jobs/s; off "
                    f"{summary(without)} jobs/s;\n    ratio on/off {summary(ratios)} "
                    f"({load_average()})",
                    flush=True,
                )
        finally:
            await on.close()
            await off.close()


if __name__ == "__main__":
    asyncio.run(main())
