"""Scheduler figures: claim time at 100k and 1M pending rows, dispatch throughput to SQS
(LocalStack) against the endpoint's own SendMessageBatch ceiling, and fairness at scale.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/dispatch.py      # JOBS_BENCH_DATABASE_URL, JOBS_BENCH_SQS_ENDPOINT_URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from _common import SQS_URL, bench_database
from jobs_schema import UseCaseConfig
from jobs_server.publisher.base import OutgoingMessage, QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.scheduler import Dispatcher, Elector
from jobs_server.store.postgres import PostgresJobStore, load_queries

Q = load_queries()
LEADER = ("bench", "bench-holder", 1)
NO_PAUSES: list[str] = []  # the claim statements' paused tenants
SESSION = {"jit": "off"}  # as PostgresJobStore sets it

LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, run_at, deadline, max_attempts,
                  backoff, created_at)
SELECT gen_random_uuid(), $1, $2, 'bench.noop', '{"n": 1}', now() - interval '1 hour',
       now() + (g * interval '1 millisecond') + $4 * interval '1 second', 3, '{}',
       now() - interval '1 hour'
FROM generate_series(1, $3) g
"""


async def load(
    conn: asyncpg.Connection, tenant: str, use_case: str, n: int, offset: float = 0
) -> None:
    for start in range(0, n, 100_000):
        await conn.execute(LOAD, tenant, use_case, min(100_000, n - start), offset)
    await conn.execute("ANALYZE jobs")


async def claim_once(
    conn: asyncpg.Connection, query: str, *args: object, prep: str = ""
) -> tuple[float, list[asyncpg.Record]]:
    """One claim inside a transaction that is rolled back, so every sample sees the same rows."""
    tx = conn.transaction()
    await tx.start()
    try:
        if prep:
            await conn.execute(prep)
        started = time.perf_counter()
        rows = await conn.fetch(query, *args)
        return time.perf_counter() - started, rows
    finally:
        await tx.rollback()


async def median_claim(
    conn: asyncpg.Connection, query: str, *args: object, prep: str = "", runs: int = 20
) -> tuple[float, list[asyncpg.Record]]:
    times, rows = [], []
    for _ in range(runs):
        t, rows = await claim_once(conn, query, *args, prep=prep)
        times.append(t * 1000)
    return statistics.median(times), rows


async def explain(conn: asyncpg.Connection, query: str, *args: object) -> str:
    tx = conn.transaction()
    await tx.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query, *args)
        return "\n".join(r[0] for r in rows)
    finally:
        await tx.rollback()


def plain_args(use_case: str, batch: int) -> tuple[object, ...]:
    return (use_case, 100_000, batch, 60.0, *LEADER, datetime.now(UTC), NO_PAUSES)


async def claim_scaling(url: str, show_plans: bool) -> None:
    conn = await asyncpg.connect(url, server_settings=SESSION)
    await conn.execute(
        "INSERT INTO scheduler_leader (name, holder, epoch, expires_at) "
        "VALUES ($1, $2, $3, now() + interval '1 day')",
        *LEADER,
    )
    results = {}
    for total in (100_000, 1_000_000):
        have = await conn.fetchval("SELECT count(*) FROM jobs WHERE use_case = 'bench'")
        started = time.perf_counter()
        await load(conn, "big", "bench", total - have)
        print(f"loaded {total:,} pending rows in {time.perf_counter() - started:.1f} s")
        ms, rows = await median_claim(conn, Q["claim_due_jobs"], *plain_args("bench", 100))
        assert len(rows) == 100
        results[total] = ms
        print(f"claim of 100 at {total:>9,} pending rows: median {ms:.2f} ms (20 runs)")
        if show_plans:
            print(await explain(conn, Q["claim_due_jobs"], *plain_args("bench", 100)))
    print(f"claim time 1M / 100k: {results[1_000_000] / results[100_000]:.2f}x (aim <= 1.5x)")
    await fairness(conn, show_plans)
    await conn.close()


async def fairness(conn: asyncpg.Connection, show_plans: bool) -> None:
    for i in range(100):
        await load(conn, f"small-{i:03d}", "bench", 1, offset=3600)
    args = (*plain_args("bench", 1000)[:2], 1000, 60.0, *LEADER, datetime.now(UTC), 5, NO_PAUSES)
    fair_ms, rows = await median_claim(conn, Q["claim_due_jobs_fair"], *args)
    small = {r["tenant"] for r in rows if r["tenant"] != "big"}
    solo_ms, solo = await median_claim(
        conn, Q["claim_due_jobs_fair"], *args, prep="DELETE FROM jobs WHERE tenant <> 'big'"
    )
    print(
        f"fair pass, 1 tenant with 1M due + 100 with one each (cap 5): {fair_ms:.2f} ms, "
        f"claimed {len(rows)} ({len(small)} of the 100 small tenants)"
    )
    same_ms, same = await median_claim(
        conn,
        Q["claim_due_jobs"],
        "bench",
        100_000,
        len(rows),
        60.0,
        *LEADER,
        datetime.now(UTC),
        NO_PAUSES,
        prep="DELETE FROM jobs WHERE tenant <> 'big'",
    )
    print(f"fair pass over the big tenant alone: {solo_ms:.2f} ms, claimed {len(solo)}")
    print(f"plain pass over the big tenant alone claiming as many ({len(same)}): {same_ms:.2f} ms")
    print(
        f"fair pass / single-tenant pass: {fair_ms / solo_ms:.2f}x against the capped pass, "
        f"{fair_ms / same_ms:.2f}x against a pass claiming as many rows (aim < 2x)"
    )
    if show_plans:
        print(await explain(conn, Q["claim_due_jobs_fair"], *args))


async def sqs_ceiling(publisher: SqsPublisher, queue: str, n: int, body: str) -> float:
    msgs = [OutgoingMessage(str(i), body) for i in range(n)]
    started = time.perf_counter()
    failed = await publisher.publish(queue, msgs)
    assert not failed
    return n / (time.perf_counter() - started)


async def dispatch_throughput(url: str, n: int, in_flight: int) -> None:
    queue = f"bench-dispatch-{uuid.uuid4().hex[:6]}"
    uc = UseCaseConfig(queue=queue, capacity=100_000)
    conn = await asyncpg.connect(url)
    await load(conn, "acme", "dispatch", n)
    store = await PostgresJobStore.connect(url, min_size=2, max_size=4)
    publisher = await SqsPublisher.connect(
        region="us-east-1", endpoint_url=SQS_URL, in_flight=in_flight
    )
    await publisher.ensure_queues([QueueSpec(queue)])
    elector = Elector(store, name="dispatch", ttl_seconds=10.0)
    dispatcher = Dispatcher(
        store, publisher, {"dispatch": uc}, elector=elector, clock=store.clock, claim_batch=1000
    )
    assert await elector.run_once(store.clock.now())
    sample = await conn.fetchrow("SELECT * FROM jobs WHERE use_case = 'dispatch' LIMIT 1")
    from jobs_server.scheduler import embed_limit, message_body
    from jobs_server.store.postgres import _claimed

    fields = dict(sample) | {
        "payload": json.loads(sample["payload"]),
        "attempts": 1,
        "lease_token": uuid.uuid4(),
        "lease_expires_at": sample["run_at"],
        "missed": False,
    }
    body = message_body(_claimed(fields), limit=embed_limit(publisher.max_message_bytes))
    started = time.perf_counter()
    sent = 0
    while sent < n:
        sent += (await dispatcher.run_once(store.clock.now())).sent
    ours = n / (time.perf_counter() - started)
    await publisher.ensure_queues([QueueSpec(queue + "-ceiling")])
    ceiling = await sqs_ceiling(publisher, queue + "-ceiling", n, body)
    print(
        f"dispatch: {n:,} jobs pending -> in SQS at {ours:,.0f} jobs/s "
        f"(claim batch 1000, {in_flight} SendMessageBatch calls in flight)"
    )
    print(f"SQS endpoint ceiling, same messages, same client: {ceiling:,.0f} messages/s")
    print(f"dispatch / ceiling: {ours / ceiling:.2f} (aim >= 0.8)")
    for q in (queue, queue + "-ceiling"):
        qurl = await publisher.queue_url(q)
        await publisher._client.delete_queue(QueueUrl=qurl)
    await publisher.close()
    await store.close()
    await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dispatch-jobs", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE plans")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    async with bench_database("dispatch") as url:
        await dispatch_throughput(url, args.dispatch_jobs, args.in_flight)
        if not args.skip_scaling:
            await claim_scaling(url, args.plans)


if __name__ == "__main__":
    asyncio.run(main())
