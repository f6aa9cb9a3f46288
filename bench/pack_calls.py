"""SQS calls per job with one job per message and with several (a use case's pack_max_jobs).

    infra/localstack/start.sh
    uv run python bench/pack_calls.py --jobs 2000 --pack 1 --pack 10

jobs-server (API and scheduler) in this process on a loopback port over a fresh database of
JOBS_BENCH_DATABASE_URL, SQS at JOBS_BENCH_SQS_ENDPOINT_URL (LocalStack), and a worker in this
process (HttpWorkerApi, SqsConsumer). Every aiobotocore call of the process (the scheduler's
publisher and the worker's consumer) is counted by operation, from the first enqueue until
every job has succeeded. Receives that came back empty are counted apart: how many there are
depends on how long the worker waited, not on the jobs. The no-op handler makes the run
short; the counts do not depend on the handler.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
from aiobotocore.client import AioBaseClient
from pydantic import BaseModel

from _common import SQS_URL, bench_database, load_average
from cancel import TENANT_TOKEN, USE_CASE, WORKER_TOKEN, live_server, stack_settings
from jobs_schema import EnqueueRequest, UseCaseConfig
from jobs_sdk import JobsClient
from jobs_server.publisher.sqs import SqsPublisher
from jobs_worker import HttpWorkerApi, JobContext, Registry, SqsConsumer, Worker

JOB_TYPE = "bench.noop"

CALLS: Counter[str] = Counter()
_original = AioBaseClient._make_api_call


async def _counted(self: AioBaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
    result = await _original(self, operation_name, api_params)
    if operation_name == "ReceiveMessage" and not result.get("Messages"):
        operation_name = "ReceiveMessage (empty)"
    CALLS[operation_name] += 1
    return result


AioBaseClient._make_api_call = _counted  # type: ignore[method-assign]


class Empty(BaseModel):
    n: int = 0


async def one_run(args: argparse.Namespace, pack: int) -> tuple[Counter[str], float]:
    async with bench_database("pack") as db_url:
        queue = f"bench-pack-{uuid.uuid4().hex[:6]}"
        use_case = UseCaseConfig(
            queue=queue,
            capacity=args.capacity,
            timeout_seconds=30,
            default_delay_tolerance_seconds=3600,
            pack_max_jobs=pack,
        )
        settings = await stack_settings(
            db_url, SQS_URL, use_case, max_active_jobs=10_000_000, claim_batch=500
        )
        registry = Registry()

        @registry.handler(JOB_TYPE)
        async def noop(payload: Empty, ctx: JobContext) -> None:
            return None

        try:
            async with live_server(settings) as url:
                consumer = await SqsConsumer.connect(region="us-east-1", endpoint_url=SQS_URL)
                api = HttpWorkerApi(url, WORKER_TOKEN)
                worker = Worker(
                    registry,
                    consumer=consumer,
                    api=api,
                    use_cases={USE_CASE: use_case},
                    concurrency=args.concurrency,
                    poll_seconds=1,
                )
                run = asyncio.create_task(worker.run())
                await asyncio.sleep(1.5)  # queue checks, first empty polls
                CALLS.clear()
                started = time.perf_counter()
                async with JobsClient(url, TENANT_TOKEN) as client:
                    request = EnqueueRequest(use_case=USE_CASE, job_type=JOB_TYPE, payload={})
                    for start in range(0, args.jobs, 500):
                        await client.enqueue_batch([request] * min(500, args.jobs - start))
                await all_succeeded(db_url, args.jobs)
                seconds = time.perf_counter() - started
                counted = Counter(CALLS)
                worker.stop(now=True)
                await run
                await api.close()
                await consumer.close()
        finally:
            publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=SQS_URL)
            qurl = await publisher.queue_url(queue)
            await publisher._client.delete_queue(QueueUrl=qurl)
            await publisher.close()
        return counted, seconds


async def all_succeeded(db_url: str, n: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        while await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") < n:
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    print(f"{args.jobs} jobs, worker concurrency {args.concurrency}, capacity {args.capacity}")
    for pack in args.pack:
        calls, seconds = await one_run(args, pack)
        work = {k: v for k, v in calls.items() if k != "ReceiveMessage (empty)"}
        per_job = sum(work.values()) / args.jobs
        detail = ", ".join(f"{k} {v / args.jobs:.3f}" for k, v in sorted(calls.items()))
        print(
            f"pack_max_jobs {pack:>3}: {per_job:.3f} SQS calls per job (empty receives apart); "
            f"{detail}; {args.jobs / seconds:,.0f} jobs/s in this one process"
        )
    print(load_average())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pack", type=int, action="append", help="pack_max_jobs (repeatable)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--capacity", type=int, default=1000)
    parsed = parser.parse_args()
    parsed.pack = parsed.pack or [1, 10]
    asyncio.run(main(parsed))
