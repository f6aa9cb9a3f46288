"""How long a cancel takes to reach a running handler, with a 150 s lease (heartbeats 50 s
apart, the first 37.5 s in: only the worker's cancellation poll can tell it sooner).

    uv run python bench/cancel.py             # about 15 s
    uv run python bench/cancel.py --cancels 5 --poll-seconds 1

jobs-server (API and scheduler) in this process on a loopback port, over a fresh database of
JOBS_BENCH_DATABASE_URL, and a worker in this process (HttpWorkerApi, SqsConsumer) whose one
handler awaits `ctx.wait_cancelled()`. SQS: JOBS_BENCH_SQS_ENDPOINT_URL (LocalStack) when it
answers, else a moto server started for the run (five messages: its speed does not matter here).
Each cancel is timed from just before `POST /v1/jobs/{id}/cancel` to the moment the handler
sees it; then the cost of the poll itself: `POST /v1/worker/cancellations` for 10 and for
1,000 leases, and the plan of its statement.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import uvicorn
from pydantic import BaseModel

from _common import SQS_URL, bench_database, load_average
from jobs_schema import JobStatus, LeaseRef, UseCaseConfig
from jobs_sdk import JobsClient, WorkerApiClient
from jobs_server.app import create_app
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.settings import ServerSettings
from jobs_server.store.postgres import load_queries
from jobs_worker import HttpWorkerApi, JobContext, Registry, SqsConsumer, Worker

USE_CASE = "bench"
JOB_TYPE = "bench.wait"
WORKER_TOKEN = "tok-worker"
TENANT_TOKEN = "tok-bench"
LEASE_SECONDS = 150


class Empty(BaseModel):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def sqs_endpoint() -> AsyncIterator[tuple[str, str]]:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(SQS_URL)
        yield SQS_URL, "LocalStack"
        return
    except httpx.HTTPError:
        pass
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(300):
                try:
                    await http.get(url)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        yield url, "moto"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def stack_settings(
    db_url: str, sqs: str, use_case: UseCaseConfig, *, max_active_jobs: int, **extra: object
) -> ServerSettings:
    """A server with its scheduler for one use case `USE_CASE` on `use_case.queue` (created
    here, its visibility as the server would set it), one tenant "bench" (TENANT_TOKEN) and
    the worker token WORKER_TOKEN; `extra` are more settings."""
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=sqs)
    visibility = use_case.queue_visibility_seconds
    try:
        await publisher.ensure_queues(
            [QueueSpec(use_case.queue, visibility_timeout_seconds=visibility)]
        )
    finally:
        await publisher.close()
    return ServerSettings.model_validate(
        {
            "database_url": db_url,
            "use_cases": {USE_CASE: use_case.model_dump(mode="json")},
            "tenants": {"bench": {"max_active_jobs": max_active_jobs, "tokens": [TENANT_TOKEN]}},
            "admin_token": "tok-admin",
            "worker_token": WORKER_TOKEN,
            "run_scheduler": True,
            "sqs_endpoint_url": sqs,
            "scheduler_tick_seconds": 0.2,
            **extra,
        }
    )


@asynccontextmanager
async def live_server(settings: ServerSettings) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("jobs-server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def cancel_latencies(url: str, use_case: UseCaseConfig, sqs: str, args: argparse.Namespace):
    registry = Registry()
    started: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    seen: dict[uuid.UUID, float] = {}

    @registry.handler(JOB_TYPE)
    async def wait(payload: Empty, ctx: JobContext) -> str:
        started.put_nowait(ctx.job_id)
        await ctx.wait_cancelled()
        seen[ctx.job_id] = time.perf_counter()
        return "cancelled"

    consumer = await SqsConsumer.connect(region="us-east-1", endpoint_url=sqs)
    api = HttpWorkerApi(url, WORKER_TOKEN)
    worker = Worker(
        registry,
        consumer=consumer,
        api=api,
        use_cases={USE_CASE: use_case},
        concurrency=4,
        poll_seconds=1,
        cancel_poll_seconds=args.poll_seconds,
    )
    run = asyncio.create_task(worker.run())
    latencies: list[float] = []
    try:
        async with JobsClient(url, TENANT_TOKEN) as client:
            for _ in range(args.cancels):
                job = (await client.enqueue(USE_CASE, JOB_TYPE, {})).job
                job_id = await asyncio.wait_for(started.get(), 30)
                assert job_id == job.id
                # cancels spread over the poll's cycle (the polls come 1, 2, ... intervals
                # after the handler starts): 0.3 to 1.0 of an interval after the start
                share = 0.3 + 0.7 * len(latencies) / max(1, args.cancels - 1)
                await asyncio.sleep(share * args.poll_seconds)
                before = time.perf_counter()
                await client.cancel(job.id)
                while job.id not in seen:  # the handler's own loop stamps the moment
                    await asyncio.sleep(0.001)
                latencies.append(seen[job.id] - before)
                done = await client.wait(job.id, timeout=30, poll_interval=0.05)
                assert done.status is JobStatus.CANCELLED, done.status
    finally:
        worker.stop(now=True)
        await run
        await api.close()
        await consumer.close()
    return latencies


FILL = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, status, run_at, deadline, attempts,
                  max_attempts, backoff, lease_token, lease_expires_at, cancel_requested)
SELECT gen_random_uuid(), 'bench', 'filler', 'filler.x', '{}',
       (CASE WHEN g <= $2 THEN 'running' ELSE 'succeeded' END)::job_status, now(), now(), 1, 3,
       '{}', CASE WHEN g <= $2 THEN gen_random_uuid() END,
       CASE WHEN g <= $2 THEN now() + interval '1 hour' END, g % 100 = 0
FROM generate_series(1, $1) g
"""


async def poll_cost(url: str, db_url: str, *, rows: int, running: int) -> list[str]:
    """The poll against `rows` stored jobs, `running` of them running (1% marked)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(FILL, rows, running)
        await conn.execute("ANALYZE jobs")
        held = [
            LeaseRef(job_id=r["id"], attempt=1, lease_token=r["lease_token"])
            for r in await conn.fetch(
                "SELECT id, lease_token FROM jobs WHERE use_case = 'filler' AND status = 'running'"
            )
        ]
        ten = held[:10]
        plan = await conn.fetch(
            "EXPLAIN " + load_queries()["find_cancel_requested"],
            [x.job_id for x in ten],
            [1] * len(ten),
            [x.lease_token for x in ten],
        )
    finally:
        await conn.close()
    out = []
    async with WorkerApiClient(url, WORKER_TOKEN) as api:
        for leases in (ten, held):
            answered = await api.cancellations("bench", leases)  # warm
            times = []
            for _ in range(50):
                t = time.perf_counter()
                await api.cancellations("bench", leases)
                times.append((time.perf_counter() - t) * 1000)
            out.append(
                f"POST /v1/worker/cancellations, {len(leases)} leases ({len(answered)} "
                f"cancelled), {rows:,} jobs stored: median {statistics.median(times):.2f} ms, "
                f"min {min(times):.2f}, max {max(times):.2f} (50 calls, one at a time)"
            )
    steps = (re.sub(r"'\{[^}]*\}'", "'{...}'", r[0].strip()) for r in plan)
    out.append("plan (10 leases): " + " / ".join(steps))
    return out


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    async with sqs_endpoint() as (sqs, sqs_name), bench_database("cancel") as db_url:
        queue = f"bench-cancel-{uuid.uuid4().hex[:6]}"
        use_case = UseCaseConfig(
            queue=queue, capacity=10, timeout_seconds=120, lease_seconds=LEASE_SECONDS
        )
        settings = await stack_settings(db_url, sqs, use_case, max_active_jobs=1000)
        async with live_server(settings) as url:
            latencies = await cancel_latencies(url, use_case, sqs, args)
            costs = await poll_cost(url, db_url, rows=args.rows, running=1000)
    print(
        f"cancel → handler sees it, lease {LEASE_SECONDS} s (first heartbeat 37.5 s in), ",
        end="",
    )
    print(f"JOBS_CANCEL_POLL_SECONDS={args.poll_seconds}, SQS: {sqs_name}")
    print(
        f"  {len(latencies)} cancels, seconds: median {statistics.median(latencies):.3f}, "
        f"min {min(latencies):.3f}, max {max(latencies):.3f}"
    )
    print("  each: " + ", ".join(f"{x:.3f}" for x in latencies))
    for line in costs:
        print(f"  {line}")
    print(f"  {load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cancels", type=int, default=5)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=100_000, help="jobs stored for the poll's cost")
    asyncio.run(main(parser.parse_args()))
