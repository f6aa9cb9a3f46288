"""The worker runtime in this process against a real jobs-server (PostgreSQL, scheduler) and
SQS (moto): results, retries with backoff, duplicates, long handlers, cancellation, bad input.
Process-level behaviour (SIGKILL, SIGTERM, the CLI) is in test_worker_process.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import BaseModel

from jobs_schema import AttemptOutcome, EnqueueRequest, JobStatus
from jobs_worker import (
    HttpWorkerApi,
    JobContext,
    PermanentFailure,
    Registry,
    Retry,
    TenantClients,
)
from tests.integration import test_worker_harness as harness
from tests.integration.proxy import TcpProxy
from tests.integration.sqs import sqs_probe
from tests.integration.test_worker_harness import EMAIL, PUSH, USE_CASE, MakeStack, Stack, finished

make_stack = harness.make_stack  # the fixture


class Email(BaseModel):
    to: str
    body: str = ""
    sleep: float = 0.0


class Push(BaseModel):
    device: str


def email_registry(calls: list[str] | None = None) -> Registry:
    registry = Registry()

    @registry.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> dict[str, object]:
        if calls is not None:
            calls.append(str(ctx.job_id))
        await asyncio.sleep(payload.sleep)
        return {"sent_to": payload.to, "chars": len(payload.body)}

    return registry


async def in_background(stack: Stack, registry: Registry, **options: object):
    worker = await stack.worker(registry, **options)
    return worker, asyncio.create_task(worker.run())


async def test_enqueued_job_runs_and_its_result_is_stored(make_stack: MakeStack):
    stack = await make_stack()
    job_id = await stack.enqueue({"to": "a@example.com", "body": "hello"})
    await stack.dispatched([job_id])
    worker = await stack.worker(email_registry())
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"sent_to": "a@example.com", "chars": 5}
    assert job.history is not None and len(job.history) == 1
    attempt = job.history[0]
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert attempt.worker_id == worker.worker_id
    assert attempt.started_at is not None and attempt.finished_at is not None
    assert stats.succeeded == 1
    async with sqs_probe(stack.sqs_endpoint) as probe:
        assert await probe.receive(stack.queue) == []  # the message was deleted


async def test_fails_twice_then_succeeds_after_backoff(make_stack: MakeStack):
    stack = await make_stack()
    registry = Registry()

    @registry.handler(EMAIL)
    async def flaky(payload: Email, ctx: JobContext) -> str:
        if ctx.attempt < 3:
            raise ValueError(f"flaky attempt {ctx.attempt}")
        return "third time lucky"

    worker, run = await in_background(stack, registry)
    job_id = await stack.enqueue({"to": "a@example.com"})
    [job] = await stack.wait_all([job_id])
    worker.stop()
    await run
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result == "third time lucky"
    history = job.history or []
    assert [a.outcome for a in history] == [
        AttemptOutcome.FAILED,
        AttemptOutcome.FAILED,
        AttemptOutcome.SUCCEEDED,
    ]
    for n, attempt in enumerate(history[:2], start=1):
        assert attempt.error_type == "ValueError"
        assert attempt.error_message == f"flaky attempt {n}"
        assert attempt.traceback and "raise ValueError" in attempt.traceback
    # constant backoff of 1 s, no jitter: each retry waits at least that long
    for failed, retry in itertools.pairwise(history):
        assert failed.finished_at is not None
        assert retry.dispatched_at - failed.finished_at >= timedelta(seconds=0.95)
        assert retry.dispatched_at - failed.dispatched_at >= timedelta(seconds=0.95)


async def test_always_failing_job_is_dead_after_max_attempts(make_stack: MakeStack):
    stack = await make_stack(max_attempts=2)
    registry = Registry()

    @registry.handler(EMAIL)
    async def broken(payload: Email, ctx: JobContext) -> None:
        raise RuntimeError("smtp is down")

    worker, run = await in_background(stack, registry)
    job_id = await stack.enqueue({"to": "a@example.com"})
    [job] = await stack.wait_all([job_id])
    worker.stop()
    await run
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.DEAD
    assert job.attempts == 2
    assert [a.outcome for a in job.history or []] == [AttemptOutcome.FAILED] * 2
    assert job.last_error == "RuntimeError: smtp is down"


async def test_retry_delay_and_permanent_failure(make_stack: MakeStack):
    stack = await make_stack()
    registry = Registry()

    @registry.handler(EMAIL)
    async def later(payload: Email, ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise Retry("rate limited", delay=2)
        return "sent"

    @registry.handler(PUSH)
    async def never(payload: Push, ctx: JobContext) -> None:
        raise PermanentFailure(f"device {payload.device} unregistered")

    worker, run = await in_background(stack, registry)
    later_id = await stack.enqueue({"to": "a@example.com"})
    never_id = await stack.enqueue({"device": "d1"}, job_type=PUSH)
    later_job, never_job = await stack.wait_all([later_id, never_id])
    worker.stop()
    await run
    first, second = (await stack.client.get(later_id)).history or []
    assert first.error_type == "Retry" and first.error_message == "rate limited"
    assert first.finished_at is not None
    assert second.dispatched_at - first.finished_at >= timedelta(seconds=1.95)
    assert later_job.status is JobStatus.SUCCEEDED
    assert never_job.status is JobStatus.DEAD and never_job.attempts == 1
    assert never_job.last_error == "jobs_worker.errors.PermanentFailure: device d1 unregistered"


async def test_same_message_twice_in_one_worker_runs_once(make_stack: MakeStack):
    stack = await make_stack()
    job_id = await stack.enqueue({"to": "a@example.com", "sleep": 0.3})
    await stack.dispatched([job_id])
    await duplicate_message(stack, copies=2)
    calls: list[str] = []
    worker = await stack.worker(email_registry(calls))
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert len(job.history or []) == 1
    assert calls == [str(job_id)]
    assert stats.skipped == 1
    async with sqs_probe(stack.sqs_endpoint) as probe:
        assert await probe.receive(stack.queue) == []


async def test_same_message_in_two_workers_records_one_outcome(make_stack: MakeStack):
    # the lease outlasts starting two workers on a loaded machine: this test is about the
    # duplicate delivery, and an expiry before either worker ran would add an attempt
    stack = await make_stack(lease_seconds=30)
    job_id = await stack.enqueue({"to": "a@example.com", "sleep": 0.5})
    await stack.dispatched([job_id])
    await duplicate_message(stack, copies=2)
    calls: list[str] = []
    # one slot each: a receive takes one message, so each worker gets a copy
    a = await stack.worker(email_registry(calls), concurrency=1)
    b = await stack.worker(email_registry(calls), concurrency=1)
    stats = await asyncio.wait_for(asyncio.gather(a.run(burst=True), b.run(burst=True)), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    history = job.history or []
    assert len(history) == 1 and history[0].outcome is AttemptOutcome.SUCCEEDED
    ran = len(calls)
    assert 1 <= ran <= 2  # at-least-once: both may run; one outcome counts
    assert sum(s.stale for s in stats) == ran - 1
    async with sqs_probe(stack.sqs_endpoint) as probe:
        assert await probe.receive(stack.queue) == []  # the stale copy was deleted too


async def duplicate_message(stack: Stack, *, copies: int) -> None:
    """Replace the job's message by `copies` identical ones, as an SQS redelivery would."""
    async with sqs_probe(stack.sqs_endpoint) as probe:
        [original] = await probe.receive(stack.queue, wait=5)
        url = await probe.url(stack.queue)
        for _ in range(copies):
            await probe.client.send_message(QueueUrl=url, MessageBody=original["Body"])
        await probe.client.delete_message(QueueUrl=url, ReceiptHandle=original["ReceiptHandle"])


async def test_handler_longer_than_its_lease_completes_once(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=1.5, timeout_seconds=10)
    job_id = await stack.enqueue({"to": "a@example.com", "sleep": 4.5})
    await stack.dispatched([job_id])
    calls: list[str] = []
    worker = await stack.worker(email_registry(calls))
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1 and len(job.history or []) == 1
    assert calls == [str(job_id)]
    assert stats.stale == 0 and stats.skipped == 0


async def test_cancelled_running_job_ends_cancelled_whatever_it_reports(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=1.5)
    registry = Registry()
    started: dict[str, asyncio.Event] = {"ok": asyncio.Event(), "fail": asyncio.Event()}
    saw: list[str] = []

    @registry.handler(EMAIL)
    async def until_cancelled(payload: Email, ctx: JobContext) -> str:
        started[payload.to].set()
        await asyncio.wait_for(ctx.wait_cancelled(), 10)
        saw.append(payload.to)
        if payload.to == "fail":
            raise ValueError("stopped half-way")
        return "stopped cleanly"

    worker, run = await in_background(stack, registry)
    ok = await stack.enqueue({"to": "ok"})
    fail = await stack.enqueue({"to": "fail"})
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 15)
    for job_id in (ok, fail):
        marked = await stack.client.cancel(job_id)
        assert marked.status is JobStatus.RUNNING and marked.cancel_requested
    jobs = await stack.wait_all([ok, fail])
    worker.stop()
    await run
    assert sorted(saw) == ["fail", "ok"]
    for job in jobs:
        assert job.status is JobStatus.CANCELLED
        assert job.attempts == 1


async def test_a_cancel_reaches_a_handler_within_2_s_with_a_150_s_lease(make_stack: MakeStack, db):
    """Heartbeats come a third of the lease apart (the first 37.5 s in): only the worker's
    cancellation poll (every second) can tell the handler within this test's bound, and the
    lease, unchanged when the handler sees the cancel, shows that no heartbeat did."""
    stack = await make_stack(lease_seconds=150, timeout_seconds=60)
    registry = Registry()
    started, seen = asyncio.Event(), asyncio.Event()

    @registry.handler(EMAIL)
    async def until_cancelled(payload: Email, ctx: JobContext) -> str:
        started.set()
        await ctx.wait_cancelled()
        seen.set()
        return "saw it"

    worker, run = await in_background(stack, registry)
    job_id = await stack.enqueue({"to": "a@example.com"})
    await asyncio.wait_for(started.wait(), 15)
    lease = "SELECT lease_expires_at FROM jobs WHERE id = $1"
    leased_until = await db.fetchval(lease, job_id)
    cancelled_at = time.monotonic()
    marked = await stack.client.cancel(job_id)
    assert marked.status is JobStatus.RUNNING and marked.cancel_requested
    # well inside the 37.5 s before the first heartbeat: a failure here is a poll that never came
    await asyncio.wait_for(seen.wait(), 20)
    latency = time.monotonic() - cancelled_at
    assert await db.fetchval(lease, job_id) == leased_until, (
        f"the handler saw the cancel after {latency:.3f} s, but a heartbeat had extended the lease"
    )
    [job] = await stack.wait_all([job_id])
    worker.stop()
    await run
    assert job.status is JobStatus.CANCELLED, f"seen after {latency:.3f} s, then {job.status}"
    assert job.result == "saw it" and job.attempts == 1, f"seen after {latency:.3f} s"


async def test_bad_payload_and_unknown_job_type_are_dead_at_once(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=30)  # no reaping however slow the machine
    registry = Registry()

    class Strict(BaseModel):
        to: str
        count: int

    @registry.handler(EMAIL)
    async def strict(payload: Strict, ctx: JobContext) -> None: ...

    bad = await stack.enqueue({"count": "many"})
    unknown = await stack.enqueue({"device": "d"}, job_type=PUSH)  # no handler for it here
    await stack.dispatched([bad, unknown])
    worker = await stack.worker(registry)
    await asyncio.wait_for(worker.run(burst=True), 30)
    bad_job = await stack.client.get(bad)
    assert bad_job.status is JobStatus.DEAD and bad_job.attempts == 1
    [attempt] = bad_job.history or []
    assert attempt.error_type == "InvalidPayload"
    assert attempt.error_message is not None
    assert "to: Field required" in attempt.error_message
    assert "count: Input should be a valid integer" in attempt.error_message
    unknown_job = await stack.client.get(unknown)
    assert unknown_job.status is JobStatus.DEAD and unknown_job.attempts == 1
    assert unknown_job.last_error == (
        "UnknownJobType: no handler for job type 'notifications.send_push' in this worker "
        "(it handles: 'notifications.send_email')"
    )


async def test_jobs_enqueued_together_travel_in_one_message_and_all_run(make_stack: MakeStack):
    stack = await make_stack(pack_max_jobs=10)
    requests = [
        EnqueueRequest(use_case=USE_CASE, job_type=EMAIL, payload={"to": f"{i}@example.com"})
        for i in range(5)
    ]
    ids = [r.job.id for r in (await stack.client.enqueue_batch(requests)).results if r.job]
    await stack.dispatched(ids)
    async with sqs_probe(stack.sqs_endpoint) as probe:
        [message] = await probe.receive(stack.queue, wait=5)
        packed = json.loads(message["Body"])
        assert packed["v"] == 2 and sorted(j["job_id"] for j in packed["jobs"]) == sorted(
            map(str, ids)
        )
        await probe.client.change_message_visibility(
            QueueUrl=await probe.url(stack.queue),
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )
    stats = await asyncio.wait_for(stack_worker_burst(stack), 30)
    assert stats.succeeded == 5
    jobs = [await stack.client.get(i) for i in ids]
    assert [j.result for j in jobs] == [
        {"sent_to": f"{i}@example.com", "chars": 0} for i in range(5)
    ]
    async with sqs_probe(stack.sqs_endpoint) as probe:
        assert await probe.receive(stack.queue) == []  # deleted after the last outcome


async def stack_worker_burst(stack: Stack):
    worker = await stack.worker(email_registry())
    return await worker.run(burst=True)


async def test_payload_too_large_for_the_message_is_fetched(make_stack: MakeStack):
    stack = await make_stack(server={"max_payload_bytes": 600_000})
    body = "x" * 300_000
    job_id = await stack.enqueue({"to": "a@example.com", "body": body})
    await stack.dispatched([job_id])
    async with sqs_probe(stack.sqs_endpoint) as probe:
        [message] = await probe.receive(stack.queue, wait=5)
        assert json.loads(message["Body"])["payload"] is None
        await probe.client.change_message_visibility(
            QueueUrl=await probe.url(stack.queue),
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )
    worker = await stack.worker(email_registry())
    await asyncio.wait_for(worker.run(burst=True), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"sent_to": "a@example.com", "chars": 300_000}


async def test_sync_handler_runs_on_the_workers_threads_and_enqueues_follow_ups(
    make_stack: MakeStack,
):
    stack = await make_stack()
    registry = Registry()
    threads: list[str] = []

    @registry.handler(EMAIL)
    def send_email(payload: Email, ctx: JobContext) -> str:
        threads.append(threading.current_thread().name)
        follow_up = ctx.run_async(ctx.jobs.enqueue(USE_CASE, PUSH, {"device": payload.to}))
        return str(follow_up.job.id)

    @registry.handler(PUSH)
    async def send_push(payload: Push, ctx: JobContext) -> str:
        return f"pushed to {payload.device}"

    clients = TenantClients(stack.server.url, {"acme": stack.server.tenant_token("acme")})
    stack.exits.push_async_callback(clients.aclose)
    worker, run = await in_background(stack, registry, clients=clients)
    [email] = await stack.wait_all([await stack.enqueue({"to": "phone-1"})])
    assert email.status is JobStatus.SUCCEEDED and isinstance(email.result, str)
    [push] = await stack.wait_all([email.result])  # type: ignore[list-item]
    worker.stop()
    await run
    assert push.tenant == "acme" and push.result == "pushed to phone-1"
    assert threads and threads[0].startswith("jobs-handler")


async def test_burst_with_many_jobs_and_bounded_concurrency(make_stack: MakeStack):
    stack = await make_stack(capacity=50)
    running = 0
    peak = 0
    registry = Registry()

    @registry.handler(EMAIL)
    async def count(payload: Email, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    ids = [await stack.enqueue({"to": f"u{i}@example.com"}) for i in range(30)]
    await stack.dispatched(ids)
    worker = await stack.worker(registry, concurrency=5)
    stats = await asyncio.wait_for(worker.run(burst=True), 60)
    jobs = [await stack.client.get(i) for i in ids]
    assert all(finished(j) and j.status is JobStatus.SUCCEEDED for j in jobs)
    assert stats.succeeded == 30
    assert peak == 5


async def test_outcome_is_kept_until_the_server_is_back(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=20)
    proxy = TcpProxy("127.0.0.1", urlsplit(stack.server.url).port or 80)
    await proxy.start()
    registry = Registry()
    started, finish = asyncio.Event(), asyncio.Event()

    @registry.handler(EMAIL)
    async def waits(payload: Email, ctx: JobContext) -> str:
        started.set()
        await finish.wait()
        return "done"

    # one try per call: an outage surfaces at once and the worker's own retrying shows
    api = HttpWorkerApi(f"http://127.0.0.1:{proxy.port}", stack.server.worker_token, attempts=1)
    worker, run = await in_background(stack, registry, api=api)
    job_id = await stack.enqueue({"to": "a@example.com"})
    await asyncio.wait_for(started.wait(), 15)
    await proxy.stop()
    finish.set()
    await asyncio.sleep(1.5)  # the handler is done; its report keeps failing
    assert (await stack.client.get(job_id)).status is JobStatus.RUNNING
    await proxy.start()
    [job] = await stack.wait_all([job_id])
    worker.stop()
    await run
    await proxy.stop()
    assert job.status is JobStatus.SUCCEEDED and job.result == "done"
