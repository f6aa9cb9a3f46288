"""Webhooks: what the event trigger (migration 0020) costs the claim and complete statements,
and deliveries per second through the real path.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/webhooks.py      # JOBS_BENCH_DATABASE_URL, JOBS_BENCH_SQS_ENDPOINT_URL

trigger: claim_due_jobs + complete_attempts of 100 jobs a call (4,000 jobs a run) against
         PostgreSQL directly, in four states: the trigger disabled (the baseline), no
         subscription at all, a subscription of another tenant only (the trigger's join runs,
         nothing is written), and a subscription of the jobs' tenant to `succeeded` (an outbox
         row per job). Runs alternate; median / min / max of `--runs` (5), the ratio to the
         baseline in the same round, and the time PostgreSQL counted inside the trigger
         function (track_functions) per job: exact where the rates drift with the machine's
         load.
deliveries: `jobs-server serve` with its scheduler and `jobs-worker run --webhooks` as
         processes of their own, LocalStack's SQS, a receiver on loopback in this process
         (uvicorn, answering 204). `--events` events are written to the outbox in one
         statement (webhook_emit), then the clock runs until the receiver has had every
         delivery: outbox -> fan-out -> delivery jobs -> dispatch -> SQS -> worker (fetches
         the target, resolves, signs, POSTs) -> receiver. Median / min / max of `--runs`.
sender:  (`--part sender` only) the worker's sender alone against the same receiver: what one
         event loop of it does, with nothing else in the path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import uvicorn

from _common import SQS_URL, bench_database, load_average, summary
from feasibility_triggers import claim_complete_rate
from jobs_schema import BackoffPolicy
from jobs_schema.webhooks import (
    WEBHOOK_JOB_TYPE,
    WEBHOOKS_USE_CASE,
    WebhookDeliveryPayload,
    WebhookTarget,
    parse_networks,
)
from jobs_server.clock import DatabaseClock
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.service import JobIds
from jobs_server.store.base import LeaderLease, NewJob
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.store.webhook_port import StoredWebhook
from jobs_worker.testing import make_context
from jobs_worker.webhooks import WebhookSender

JOBS = 4000
HERE = Path(__file__).resolve().parent
WORKER_TOKEN = "bench-webhooks-worker"
TENANT_TOKEN = "bench-webhooks-acme"


# -- the trigger's cost ---------------------------------------------------------------------


async def fill(store: PostgresJobStore, tenant: str) -> None:
    ids, now = JobIds(store.clock), store.clock.now()
    for _ in range(JOBS // 100):
        batch = [
            NewJob(
                id=ids.new(),
                use_case="bench",
                job_type="t",
                payload={"n": 1},
                priority=0,
                run_at=now,
                deadline=now + timedelta(seconds=600),
                max_attempts=3,
                backoff=BackoffPolicy(),
            )
            for _ in range(100)
        ]
        await store.enqueue_jobs(tenant, quota=None, jobs=batch)


async def trigger_cost(runs: int) -> None:
    async with bench_database("webhooks_trigger") as url:
        conn = await asyncpg.connect(url)
        # the time spent inside the trigger function, as PostgreSQL counts it (exact, however
        # loaded the machine is; the rates below are not)
        await conn.execute(f"ALTER DATABASE {urlsplit(url).path[1:]} SET track_functions = 'pl'")
        store = await PostgresJobStore.connect(url, max_size=2, clock=DatabaseClock())
        epoch = await store.acquire_leadership("main", "bench", ttl=3600)
        assert epoch is not None
        leader = LeaderLease("main", "bench", epoch)
        ids = JobIds(store.clock)

        async def subscribe(tenant: str) -> None:
            hook = StoredWebhook(
                ids.new(),
                tenant,
                "https://example.com/h",
                ["succeeded"],
                None,
                "",
                False,
                store.clock.now(),
            )
            await store.create_webhook(hook, secret="s", limit=25)

        async def state(name: str) -> None:
            await conn.execute("DELETE FROM webhook_subscriptions")
            await conn.execute("TRUNCATE webhook_events")
            enabled = "DISABLE" if name == "trigger disabled" else "ENABLE"
            await conn.execute(f"ALTER TABLE jobs {enabled} TRIGGER jobs_webhook_events_trg")
            if name == "another tenant subscribed":
                await subscribe("globex")
            elif name == "this tenant subscribed":
                await subscribe("acme")

        states = [
            "trigger disabled",
            "no subscription",
            "another tenant subscribed",
            "this tenant subscribed",
        ]
        rates: dict[str, list[float]] = {s: [] for s in states}
        inside: dict[str, list[float]] = {s: [] for s in states}  # trigger µs per job
        try:
            for _ in range(runs):
                for name in states:
                    await state(name)
                    await fill(store, "acme")
                    await asyncio.sleep(1.2)  # backends flush their counts at most once a second
                    before = await trigger_ms(conn)
                    rates[name].append(await claim_complete_rate(store, leader))
                    await asyncio.sleep(1.2)
                    inside[name].append((await trigger_ms(conn) - before) * 1000 / JOBS)
            events = await conn.fetchval("SELECT count(*) FROM webhook_events")
            base = rates["trigger disabled"]
            for name in states:
                ratios = [r / b for r, b in zip(rates[name], base, strict=True)]
                print(
                    f"claim_due_jobs + complete_attempts, 100 a call, {name}:\n"
                    f"    {summary(rates[name])} jobs/s; ratio to disabled {summary(ratios)};\n"
                    f"    inside the trigger {summary(inside[name])} µs per job "
                    f"(claim + complete) ({load_average()})",
                    flush=True,
                )
            print(f"    (outbox rows after the last subscribed run: {events})", flush=True)
        finally:
            await conn.close()
            await store.close()


async def trigger_ms(conn: asyncpg.Connection) -> float:
    """Milliseconds spent in jobs_webhook_events so far, in every session."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value = await conn.fetchval(
        "SELECT coalesce(sum(self_time), 0) FROM pg_stat_user_functions "
        "WHERE funcname = 'jobs_webhook_events'"
    )
    return float(value)


# -- deliveries per second ------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.wanted = 0

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        self.count += 1
        if self.count >= self.wanted:
            self.done.set()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server not ready")


async def delivery_run(args: argparse.Namespace, receiver: Receiver, receiver_url: str) -> float:
    queue = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    use_cases = {
        "bench": {"queue": f"{queue}-bench", "capacity": 10},
        "jobs.webhooks": {
            "queue": queue,
            "capacity": args.capacity,
            "job_types": ["jobs.webhooks.deliver"],
            "timeout_seconds": 15,
        },
    }
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=SQS_URL)
    await publisher.ensure_queues(
        [QueueSpec(uc["queue"], visibility_timeout_seconds=90) for uc in use_cases.values()]
    )
    await publisher.close()
    async with bench_database("webhooks_e2e") as db:
        port = free_port()
        server_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")} | {
            "JOBS_DATABASE_URL": db,
            "JOBS_USE_CASES": json.dumps(use_cases),
            "JOBS_TENANTS": json.dumps({"acme": {"tokens": [TENANT_TOKEN]}}),
            "JOBS_WORKER_TOKEN": WORKER_TOKEN,
            "JOBS_SQS_ENDPOINT_URL": SQS_URL,
            "JOBS_AWS_REGION": "us-east-1",
            "JOBS_SERVER_URL": server_url,
            "JOBS_WEBHOOKS": "true",
            "JOBS_WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.0/8",
            "JOBS_RUN_SCHEDULER": "true",
            "JOBS_LOG_FORMAT": "text",
            "JOBS_CONCURRENCY": str(args.concurrency),
            "PYTHONPATH": str(HERE),
        }
        logs = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
        server_log, worker_log = logs / "server.log", logs / "worker.log"
        server = subprocess.Popen(
            [sys.executable, "-m", "jobs_server", "serve", "--port", str(port)],
            env=env,
            stdout=server_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = None
        try:
            await wait_ready(server_url, server, server_log)
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jobs_worker",
                    "run",
                    "e2e_handlers:registry",
                    "-u",
                    "jobs.webhooks",
                    "--webhooks",
                ],
                env=env,
                stdout=worker_log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            headers = {"Authorization": f"Bearer {TENANT_TOKEN}"}
            async with httpx.AsyncClient(base_url=server_url, headers=headers) as http:
                made = await http.post(
                    "/v1/webhooks", json={"url": receiver_url, "event_types": ["succeeded"]}
                )
                made.raise_for_status()
            # a warm-up delivery: the worker is up and has its connections
            receiver.count, receiver.wanted = 0, 1
            receiver.done.clear()
            conn = await asyncpg.connect(db)
            emit = (
                "SELECT count(*) FROM generate_series(1, $1) n "
                "WHERE webhook_emit('acme', 'succeeded', 'bench', "
                "jsonb_build_object('n', n), now())"
            )
            await conn.fetchval(emit, 1)
            await asyncio.wait_for(receiver.done.wait(), 120)
            receiver.count, receiver.wanted = 0, args.events
            receiver.done.clear()
            started = time.perf_counter()
            await conn.fetchval(emit, args.events)
            await asyncio.wait_for(receiver.done.wait(), 600)
            took = time.perf_counter() - started
            await conn.close()
            return args.events / took
        finally:
            for proc in (worker, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=60)


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[int]:
    """The receiver served on loopback for the block; its port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def deliveries(args: argparse.Namespace) -> None:
    receiver = Receiver()
    async with serving(receiver) as port:
        rates = []
        for _ in range(args.runs):
            rates.append(await delivery_run(args, receiver, f"http://127.0.0.1:{port}/hook"))
            print(f"    run: {rates[-1]:.0f} deliveries/s ({load_average()})", flush=True)
        print(
            f"webhook deliveries, {args.events} events, capacity {args.capacity}, worker "
            f"concurrency {args.concurrency}:\n    {summary(rates)} deliveries/s "
            f"(median {statistics.median(rates):.0f}; {load_average()})",
            flush=True,
        )


async def sender_alone(args: argparse.Namespace) -> None:
    """The worker's sender on its own: `--events` deliveries, `--concurrency` at once, to the
    receiver in this process, no server, queue or scheduler (the target read is a function)."""
    receiver = Receiver()
    async with serving(receiver) as port:
        await _sender_alone(args, port)


async def _sender_alone(args: argparse.Namespace, port: int) -> None:
    target = WebhookTarget(
        id=uuid.uuid4(), url=f"http://127.0.0.1:{port}/hook", secret="s", paused=False
    )

    async def targets(_: uuid.UUID) -> WebhookTarget:
        return target

    sender = WebhookSender(targets, networks=parse_networks("127.0.0.0/8"))
    event = {
        "id": str(uuid.uuid4()),
        "type": "dead",
        "occurred_at": "2026-01-01T00:00:00Z",
        "tenant": "acme",
    }
    payload = WebhookDeliveryPayload.model_validate(
        {"subscription_id": str(target.id), "event": event}
    )
    ctx = make_context(WEBHOOK_JOB_TYPE, use_case=WEBHOOKS_USE_CASE)
    slots = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        async with slots:
            await sender.deliver(payload, ctx)

    try:
        rates = []
        for _ in range(args.runs):
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(args.events)))
            rates.append(args.events / (time.perf_counter() - started))
        print(
            f"the sender alone, {args.events} deliveries, {args.concurrency} at once:\n"
            f"    {summary(rates)} deliveries/s ({load_average()})",
            flush=True,
        )
    finally:
        await sender.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=["trigger", "deliveries", "sender", "both"], default="both"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each figure (at least 3)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--capacity", type=int, default=50, help="the use case's capacity")
    parser.add_argument("--concurrency", type=int, default=50, help="JOBS_CONCURRENCY")
    args = parser.parse_args()
    if args.part in ("trigger", "both"):
        await trigger_cost(args.runs)
    if args.part in ("deliveries", "both"):
        await deliveries(args)
    if args.part == "sender":
        await sender_alone(args)


if __name__ == "__main__":
    asyncio.run(main())
