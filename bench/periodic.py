"""The leader's work with flow control on: 1,000 schedules due and 10,000 rate keys among the
pending jobs, at each size of pending rows (100k and 1M by default), median of the runs with
min and max.

Each run (the ManualClock moves a minute between runs) times what the leader does: the periodic
service's run_once (read the due schedules, then one statement that moves each on by
compare-and-set and stores its job; it runs in the background of the loop, off the dispatch
pass), the expirer, and the dispatcher's claim of one batch (500) from the use case whose
pending jobs spread over `--rate-keys` rate keys under a rate limit of 10 a second each (the
keyed claim), then a plain claim of one more batch of the same rows with no keys, for the
same-run ratio. Nothing is published: the figures are the database's and ours, not SQS's.

Every size is loaded first, each in a database of its own, and the runs then go by turns
(100k, 1M, 1M, 100k, ...): the host's speed drifts by a third over the minutes such a run
takes, so "the same at both sizes" is read from the ratio of neighbouring runs.

    uv run python bench/periodic.py                      # JOBS_BENCH_DATABASE_URL
    uv run python bench/periodic.py --pending 10000 --schedules 100 --rate-keys 100 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
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
from jobs_server.scheduler import Elector, Expirer, PeriodicJobs
from jobs_server.schedules import stored
from jobs_server.service import JobService
from jobs_server.store.base import ClaimedJob, LeaderLease
from jobs_server.store.postgres import PostgresJobStore

# Ids as the server makes them (UUIDv7: the creation millisecond first), so that the claims'
# index writes land where a real backlog's would, not on random pages of a 1M-row index.
LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, run_at, deadline, max_attempts,
                  backoff, created_at, rate_key)
SELECT (lpad(to_hex(floor(extract(epoch FROM now()) * 1000)::bigint - 3600000 + g), 12, '0')
        || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid,
       'load', 'bench', 'bench.noop', '{"n": 1}', now() - interval '1 hour',
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
        # as autovacuum keeps a table: a vacuum of the fresh load (visibility map, hint
        # bits) would otherwise run beside the measured runs, longer the larger the load
        await conn.execute("VACUUM (ANALYZE) jobs")
    finally:
        await conn.close()


@dataclass
class Size:
    """One size of pending rows: its database, loaded, and the leader's services over it."""

    pending: int
    store: PostgresJobStore
    clock: ManualClock
    start: datetime
    periodic: PeriodicJobs
    expirer: Expirer
    elector: Elector
    uc: UseCaseConfig
    schedules: int
    times: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("periodic", "expire", "keyed", "plain")}
    )


async def prepare(url: str, pending: int, schedules: int, rate_keys: int) -> Size:
    await load(url, pending, rate_keys)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = ManualClock(start)
    store = await PostgresJobStore.connect(url, min_size=1, max_size=2, clock=clock)
    cfg = config(rate_keys)
    definition = ScheduleDefinition(interval_seconds=60, use_case="bench", job_type="bench.tick")
    for i in range(schedules):
        row = stored(f"t{i % 10}", f"s{i}", definition, source=ScheduleSource.API, now=start)
        await store.create_schedule(row, limit=schedules)
    jobs = JobService(store, cfg, default_quota=None, max_payload_bytes=65536, clock=clock)
    return Size(
        pending=pending,
        store=store,
        clock=clock,
        start=start,
        periodic=PeriodicJobs(store, jobs, batch=schedules),
        expirer=Expirer(store, cfg.use_cases, batch=1000),
        elector=Elector(store, name="bench", ttl_seconds=86_400),
        uc=cfg.use_cases["bench"],
        schedules=schedules,
    )


async def checkpoint(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def run_once(size: Size, run: int) -> None:
    """One run at this size (the clock a minute on): the periodic pass, the expirer, the keyed
    claim of a batch, and the plain claim (no keys, the same rows) of one more batch right
    after it. Run 0 warms the statement cache and is not counted."""
    size.clock.set(size.start + timedelta(minutes=run + 1))
    leader = await size.elector.run_once(size.clock.now())
    assert leader is not None
    t0 = time.perf_counter()
    ticked = await size.periodic.run_once(size.clock.now())
    t1 = time.perf_counter()
    await size.expirer.run_once(size.clock.now())
    t2 = time.perf_counter()
    keyed = await claim(size.store, size.uc, leader, size.uc.rate_limit)
    t3 = time.perf_counter()
    plain = await claim(size.store, size.uc, leader, None)
    t4 = time.perf_counter()
    assert ticked.created == size.schedules, ticked
    assert len(keyed) == BATCH and len(plain) == BATCH, (len(keyed), len(plain))
    if run:
        for k, a, b in (
            ("periodic", t0, t1),
            ("expire", t1, t2),
            ("keyed", t2, t3),
            ("plain", t3, t4),
        ):
            size.times[k].append((b - a) * 1000)


async def claim(
    store: PostgresJobStore, uc: UseCaseConfig, leader: LeaderLease, rate: RateLimit | None
) -> list[ClaimedJob]:
    return await store.claim_due_jobs(
        "bench",
        capacity=uc.capacity,
        limit=BATCH,
        lease_seconds=60,
        leader=leader,
        per_tenant_cap=None,
        rate_limit=rate,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--rate-keys", type=int, default=10_000, help="0: no rate limit")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    async with AsyncExitStack() as stack:
        sizes = []
        for pending in args.pending:
            url = await stack.enter_async_context(bench_database(f"periodic{len(sizes)}"))
            size = await prepare(url, pending, args.schedules, args.rate_keys)
            stack.push_async_callback(size.store.close)
            sizes.append(size)
        await checkpoint(url)  # cluster-wide: every load's pages written out before the runs
        print(
            f"loaded: {', '.join(f'{s.pending:,}' for s in sizes)} pending rows; {load_average()}"
        )
        for run in range(args.runs + 1):
            # the sizes by turns, each first in every other run: the host's speed drifts over
            # a run of this length, and a ratio of neighbours does not
            for size in sizes if run % 2 == 0 else sizes[::-1]:
                await run_once(size, run)
        for size in sizes:
            report(size, args)
        first = sizes[0]
        for size in sizes[1:]:
            passes = [_passes(size), _passes(first)]
            ratios = [a / b for a, b in zip(*passes, strict=True)]
            print(
                f"the dispatch pass at {size.pending:,} / at {first.pending:,} pending rows, "
                f"per pair of neighbouring runs: {summary(ratios)}"
            )
        print(load_average(), "(after)")


def _passes(size: Size) -> list[float]:
    return [e + k for e, k in zip(size.times["expire"], size.times["keyed"], strict=True)]


def report(size: Size, args: argparse.Namespace) -> None:
    t = size.times
    head = f"{size.pending:,} pending rows, {args.rate_keys:,} rate keys"
    print(
        f"{head}: periodic run_once, {args.schedules} schedules due (in the background): "
        f"{summary(t['periodic'])} ms"
    )
    print(f"{head}: the expirer: {summary(t['expire'])} ms")
    print(f"{head}: the dispatcher's keyed claim of {BATCH}: {summary(t['keyed'])} ms")
    print(f"{head}: the plain claim of {BATCH} (no keys), same rows: {summary(t['plain'])} ms")
    ratios = [k / p for k, p in zip(t["keyed"], t["plain"], strict=True)]
    print(f"{head}: keyed / plain, same run: {summary(ratios)}")
    print(
        f"{head}: the dispatch pass (expirer + keyed claim): {summary(_passes(size))} ms over "
        f"{len(t['keyed'])} runs"
    )


if __name__ == "__main__":
    asyncio.run(main())
