"""Workflows: the enqueue of a 1,000-node graph in one request, and the latency from a parent's
success to its child's start with SQS (LocalStack) in the path.

    infra/localstack/start.sh               # SQS on 127.0.0.1:4566
    uv run python bench/workflows.py        # JOBS_BENCH_DATABASE_URL, JOBS_BENCH_SQS_ENDPOINT_URL

A fresh database and queue per run; `jobs-server serve`, `jobs-server scheduler` and
`jobs-worker run e2e_handlers:registry` as processes of their own (bench/e2e.py's set-up).

  enqueue:  a 1,000-node chain (the worst case for linking: 999 edges, 999 waiting jobs) in
            one POST /v1/jobs/batch, its head due in a day so that nothing runs; the time of
            the call, and jobs/s;
  latency:  `--pairs` two-job chains (parent -> child), one every 1/`--rate` s; latency = the
            child's handler start (its first line's clock, its result) - the parent's
            finished_at (the commit of its success, which releases the child); p50, p99.

  overhead: what the end-of-job trigger (jobs_follow_ends) costs jobs with no children and no
            batch: `--overhead-jobs` jobs claimed and completed in batches of 100 through
            PostgresJobStore, with the trigger on and off (DISABLE TRIGGER), alternating, on a
            database of its own (`--overhead-only` runs just this).

`--runs` runs of each (default 3); the median, min and max over the runs are printed, with the
load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from _common import SQS_URL, bench_database, load_average
from e2e import JOB_TYPE, TOKEN, USE_CASE, Processes, free_port, start_ours
from e2e import build_parser as e2e_parser
from jobs_schema import BackoffPolicy, EnqueueRequest
from jobs_sdk import JobsClient
from jobs_sdk.workflows import Workflow
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.service import JobIds
from jobs_server.store.base import LeaderLease, NewJob, SucceededAttempt
from jobs_server.store.postgres import PostgresJobStore

NODES = 1000
AIM_P50_MS = 50.0


def request(n: int, **fields: Any) -> EnqueueRequest:
    return EnqueueRequest(use_case=USE_CASE, job_type=JOB_TYPE, payload={"n": n}, **fields)


async def enqueue_graph(client: JobsClient) -> float:
    """Seconds for one 1,000-node chain in one request (its head due in a day)."""
    later = datetime.now(UTC) + timedelta(days=1)
    wf = Workflow()
    wf.chain(request(0, run_at=later), *(request(i) for i in range(1, NODES)))
    started = time.perf_counter()
    jobs = await client.enqueue_workflow(wf)
    took = time.perf_counter() - started
    assert len(jobs) == NODES
    return took


async def pair_latencies(client: JobsClient, db: str, pairs: int, rate: float) -> list[float]:
    """Milliseconds from each parent's success to its child's handler start."""
    children = []
    start = time.monotonic()
    for i in range(pairs):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        parent, child = await client.chain(request(2 * i), request(2 * i + 1))
        children.append((parent.id, child.id))
    conn = await asyncpg.connect(db)
    try:
        for _ in range(600):
            done = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY ($1::uuid[]) AND status = 'succeeded'",
                [c for _, c in children],
            )
            if done == pairs:
                break
            await asyncio.sleep(0.1)
        rows = await conn.fetch(
            "SELECT p.finished_at, (c.result->>'started')::float8 AS started "
            "FROM unnest($1::uuid[], $2::uuid[]) AS x(parent, child) "
            "JOIN jobs p ON p.id = x.parent JOIN jobs c ON c.id = x.child "
            "WHERE c.status = 'succeeded'",
            [p for p, _ in children],
            [c for _, c in children],
        )
    finally:
        await conn.close()
    if len(rows) < pairs:
        raise RuntimeError(f"only {len(rows)} of {pairs} children ran")
    return [(r["started"] - r["finished_at"].timestamp()) * 1000 for r in rows]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_run(args: argparse.Namespace, e2e_args: argparse.Namespace) -> dict[str, float]:
    queue = f"bench-wf-{uuid.uuid4().hex[:6]}"
    port = free_port()
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=SQS_URL)
    log_dir = Path(tempfile.mkdtemp(prefix="jobs-wf-"))
    procs = Processes(log_dir, python=sys.executable)
    try:
        await publisher.ensure_queues([QueueSpec(queue, visibility_timeout_seconds=60)])
        async with bench_database("wf") as db:
            server = await start_ours(e2e_args, db, queue, port, procs)
            try:
                async with JobsClient(server, TOKEN, timeout=60) as client:
                    await enqueue_graph(client)  # warm-up: connections, plans
                    graph = statistics.median([await enqueue_graph(client) for _ in range(3)])
                    await pair_latencies(client, db, 5, args.rate)  # warm-up
                    latencies = await pair_latencies(client, db, args.pairs, args.rate)
            finally:
                procs.stop()
    finally:
        procs.stop()
        for q in (queue, queue + "-dlq"):
            with contextlib.suppress(Exception):  # best effort: the queue may not exist
                await publisher._client.delete_queue(QueueUrl=await publisher.queue_url(q))
        await publisher.close()
        for path in log_dir.iterdir():
            path.unlink()
        log_dir.rmdir()
    return {
        "graph_ms": graph * 1000,
        "graph_jobs_s": NODES / graph,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
    }


def line(name: str, unit: str, values: list[float]) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{name:<38} median {med:9.1f} {unit}  (min {lo:.1f}, max {hi:.1f})"


async def completion_seconds(store: PostgresJobStore, db: str, n: int, *, trigger: bool) -> float:
    """Seconds to complete `n` claimed jobs, 100 a call, the trigger on or off."""
    ids = JobIds(store.clock)
    now = store.clock.now()
    backoff = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)
    jobs = [
        NewJob(
            ids.new(), USE_CASE, JOB_TYPE, {"n": i}, 0, now, now + timedelta(hours=1), 3, backoff
        )
        for i in range(n)
    ]
    for start in range(0, n, 1000):
        await store.enqueue_jobs("acme", quota=None, jobs=jobs[start : start + 1000])
    epoch = await store.acquire_leadership("bench", "bench", ttl=3600)
    assert epoch is not None
    leader = LeaderLease("bench", "bench", epoch)
    claimed = []
    while len(claimed) < n:
        claimed += await store.claim_due_jobs(
            USE_CASE,
            capacity=10 * n,
            limit=1000,
            lease_seconds=600,
            leader=leader,
            per_tenant_cap=None,
        )
    conn = await asyncpg.connect(db)
    try:
        state = "ENABLE" if trigger else "DISABLE"
        await conn.execute(f"ALTER TABLE jobs {state} TRIGGER jobs_follow_ends_trg")
    finally:
        await conn.close()
    started = time.perf_counter()
    for start in range(0, n, 100):
        await store.complete_attempts(
            [
                SucceededAttempt(c.id, c.attempt, c.lease_token, result=None)
                for c in claimed[start : start + 100]
            ]
        )
    return time.perf_counter() - started


async def trigger_times(db: str, runs: int) -> dict[str, list[float]]:
    """Each jobs trigger's own time (EXPLAIN ANALYZE) in statements that end 100 running jobs:
    the end-of-job trigger beside the two that were there before it, in the same statements."""
    conn = await asyncpg.connect(db)
    times: dict[str, list[float]] = {}
    try:
        await conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_follow_ends_trg")
        for _ in range(max(runs, 5)):
            await conn.execute(
                "UPDATE jobs SET status = 'running', finished_at = NULL WHERE id = ANY (ARRAY("
                "SELECT id FROM jobs WHERE status = 'succeeded' LIMIT 100))"
            )
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE) UPDATE jobs SET status = 'succeeded', updated_at = now() "
                "WHERE id = ANY (ARRAY(SELECT id FROM jobs WHERE status = 'running' LIMIT 100))"
            )
            for row in plan:
                found = re.match(r"Trigger (\w+): time=([\d.]+)", row[0])
                if found:
                    times.setdefault(found[1], []).append(float(found[2]))
    finally:
        await conn.close()
    return times


async def overhead(n: int, runs: int) -> None:
    on, off = [], []
    async with bench_database("wfo") as db:
        store = await PostgresJobStore.connect(db, min_size=1, max_size=2)
        try:
            await completion_seconds(store, db, 200, trigger=True)  # warm-up
            for _ in range(runs):
                on.append(await completion_seconds(store, db, n, trigger=True) / n * 1e6)
                off.append(await completion_seconds(store, db, n, trigger=False) / n * 1e6)
            triggers = await trigger_times(db, runs)
        finally:
            await store.close()
    for name, times in sorted(triggers.items()):
        print(line(f"  {name}, per 100-job statement", "ms", times))
    print(line("complete, trigger on", "us/job", on))
    print(line("complete, trigger off", "us/job", off))
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(line("on / off (same run)", "x", ratios) + f"; {load_average()}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=100, help="parent/child pairs per run")
    parser.add_argument("--rate", type=float, default=10.0, help="pairs a second (low load)")
    parser.add_argument("--overhead-jobs", type=int, default=5000)
    parser.add_argument("--overhead-only", action="store_true")
    args = parser.parse_args()
    if args.overhead_only:
        print(f"bench/workflows.py --overhead-only: {load_average()}")
        await overhead(args.overhead_jobs, args.runs)
        return
    e2e_args = e2e_parser().parse_args(["--concurrency", "20"])
    print(f"bench/workflows.py: {args.runs} runs; {load_average()}")
    runs = []
    for n in range(args.runs):
        result = await one_run(args, e2e_args)
        runs.append(result)
        print(
            f"  run {n + 1}: graph {result['graph_ms']:.1f} ms ({result['graph_jobs_s']:,.0f} "
            f"jobs/s), parent -> child p50 {result['p50']:.1f} ms p99 {result['p99']:.1f} ms; "
            f"{load_average()}"
        )
    print(line("enqueue of a 1,000-node chain", "ms", [r["graph_ms"] for r in runs]))
    print(line("  as jobs per second", "jobs/s", [r["graph_jobs_s"] for r in runs]))
    p50s = [r["p50"] for r in runs]
    print(line(f"parent success -> child start, p50 ({args.pairs} pairs)", "ms", p50s))
    print(line("parent success -> child start, p99", "ms", [r["p99"] for r in runs]))
    verdict = "met" if statistics.median(p50s) < AIM_P50_MS else "NOT met"
    print(f"aim p50 < {AIM_P50_MS:.0f} ms: {verdict}; {load_average()}")
    await overhead(args.overhead_jobs, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
