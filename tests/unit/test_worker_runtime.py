"""The Worker loop against in-memory fakes: concurrency, duplicates, cancellation, leases,
shutdown. The same behaviours against PostgreSQL and SQS are in tests/integration."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from jobs_schema import JobStatus, UseCaseConfig
from jobs_worker import InMemoryConsumer, JobContext, Registry, Worker, runtime
from jobs_worker.consumer.base import ReceivedMessage
from jobs_worker.health import metrics_text
from jobs_worker.testing import InMemoryWorkerApi

QUEUE = "q"


class Item(BaseModel):
    n: int
    sleep: float = 0.0


def make_worker(
    registry: Registry, consumer: InMemoryConsumer | None = None, **overrides: object
) -> tuple[Worker, InMemoryWorkerApi]:
    consumer = consumer or InMemoryConsumer(visibility_seconds=30)
    api = InMemoryWorkerApi(consumer, embed_payloads=bool(overrides.pop("embed_payloads", True)))
    lease = overrides.pop("lease_seconds", 30)
    use_case = UseCaseConfig(queue=QUEUE, timeout_seconds=5, lease_seconds=lease)
    options: dict[str, object] = {
        "concurrency": 4,
        "burst_idle_seconds": 0.1,
        "grace_seconds": 5,
        "poll_seconds": 0.05,
    }
    options.update(overrides)
    worker = Worker(registry, consumer=consumer, api=api, use_cases={"test": use_case}, **options)  # type: ignore[arg-type]
    return worker, api


@pytest.fixture
def registry() -> Registry:
    registry = Registry()

    @registry.handler("double")
    async def double(payload: Item, ctx: JobContext) -> int:
        await asyncio.sleep(payload.sleep)
        return payload.n * 2

    return registry


async def test_burst_runs_every_job_and_reports_results(registry):
    worker, api = make_worker(registry)
    sent = [api.dispatch(QUEUE, "double", {"n": i}) for i in range(25)]
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert stats.succeeded == 25
    for m in sent:
        job = api.jobs[m.job_id]
        assert job.status is JobStatus.SUCCEEDED
        assert job.reports[0].result == m.payload["n"] * 2  # type: ignore[index,operator]
        assert job.reports[0].worker_id == worker.worker_id
    assert api.consumer.pending(QUEUE) == 0


async def test_concurrency_is_never_exceeded(registry):
    running = 0
    peak = 0

    @registry.handler("count")
    async def count(payload: Item, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    worker, api = make_worker(registry, concurrency=3)
    for i in range(20):
        api.dispatch(QUEUE, "count", {"n": i})
    await asyncio.wait_for(worker.run(burst=True), 10)
    assert peak == 3


async def test_duplicate_delivery_runs_once(registry):
    worker, api = make_worker(registry)
    message = api.dispatch(QUEUE, "double", {"n": 1, "sleep": 0.1})
    api.consumer.send(QUEUE, message.model_dump_json())
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert stats.succeeded == 1 and stats.skipped == 1
    assert len(api.jobs[message.job_id].reports) == 1
    assert api.consumer.pending(QUEUE) == 0


async def test_payload_left_out_of_the_message_is_fetched(registry):
    worker, api = make_worker(registry, embed_payloads=False)
    message = api.dispatch(QUEUE, "double", {"n": 21})
    await asyncio.wait_for(worker.run(burst=True), 10)
    assert api.jobs[message.job_id].reports[0].result == 42


async def test_cancellation_reaches_the_handler(registry):
    started = asyncio.Event()

    @registry.handler("wait")
    async def wait(payload: Item, ctx: JobContext) -> str:
        started.set()
        await asyncio.wait_for(ctx.wait_cancelled(), 5)
        return "saw it"

    worker, api = make_worker(registry, lease_seconds=0.3)
    message = api.dispatch(QUEUE, "wait", {"n": 0})
    run = asyncio.create_task(worker.run(burst=True))
    await started.wait()
    api.cancel(message.job_id)
    await asyncio.wait_for(run, 10)
    job = api.jobs[message.job_id]
    assert job.status is JobStatus.CANCELLED
    assert job.reports[0].result == "saw it"


async def test_lost_lease_stops_the_handler_and_reports_nothing(registry):
    started = asyncio.Event()

    @registry.handler("long")
    async def long(payload: Item, ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(10)

    worker, api = make_worker(registry, lease_seconds=0.3)
    message = api.dispatch(QUEUE, "long", {"n": 0})
    run = asyncio.create_task(worker.run(burst=True))
    await started.wait()
    api.jobs[message.job_id].status = JobStatus.PENDING  # e.g. the reaper took it back
    await asyncio.wait_for(run, 5)
    assert api.jobs[message.job_id].reports == []
    assert api.consumer.pending(QUEUE) == 0


# 1.0: the delete of the quick job's message waits for company past the end of the grace; it
# must still be sent, not cancelled with the attempt that submitted it
@pytest.mark.parametrize("delete_linger", [0.2, 1.0])
async def test_stop_waits_for_handlers_within_grace_then_releases(registry, delete_linger):
    worker, api = make_worker(registry, grace_seconds=0.3, delete_linger=delete_linger)
    quick = api.dispatch(QUEUE, "double", {"n": 1, "sleep": 0.05})
    slow = api.dispatch(QUEUE, "double", {"n": 2, "sleep": 10})
    run = asyncio.create_task(worker.run())
    while worker.stats.started < 2:
        await asyncio.sleep(0.01)
    worker.stop()
    stats = await asyncio.wait_for(run, 5)
    assert api.jobs[quick.job_id].status is JobStatus.SUCCEEDED
    assert api.jobs[slow.job_id].status is JobStatus.PENDING
    assert [r.job_id for r in api.released] == [slow.job_id]
    assert stats.succeeded == 1 and stats.released == 1
    assert sorted(api.consumer.deleted) == ["m0", "m1"]  # quick's, and slow's once released
    assert api.consumer.pending(QUEUE) == 0


async def test_redelivered_cancelled_job_is_released_unrun(registry):
    calls = 0

    @registry.handler("never")
    async def never(payload: Item, ctx: JobContext) -> None:
        nonlocal calls
        calls += 1

    worker, api = make_worker(registry)
    message = api.dispatch(QUEUE, "never", {"n": 0})
    # an earlier receiver died with it: this delivery is a redelivery, checked before it runs
    for stored in api.consumer.queues[QUEUE]:
        stored.receive_count = 1
    api.cancel(message.job_id)
    await asyncio.wait_for(worker.run(burst=True), 5)
    assert calls == 0
    assert api.jobs[message.job_id].status is JobStatus.CANCELLED


async def test_first_delivery_of_a_cancelled_job_learns_it_at_its_first_beat(registry):
    saw = []

    @registry.handler("waits")
    async def waits(payload: Item, ctx: JobContext) -> None:
        await asyncio.wait_for(ctx.wait_cancelled(), 3)
        saw.append(ctx.cancelled)

    worker, api = make_worker(registry, lease_seconds=0.9)  # first beat 0.3 s in
    message = api.dispatch(QUEUE, "waits", {"n": 0})
    api.cancel(message.job_id)
    await asyncio.wait_for(worker.run(burst=True), 5)
    assert saw == [True]
    assert api.jobs[message.job_id].status is JobStatus.CANCELLED


async def test_malformed_message_is_left_alone(registry):
    worker, api = make_worker(registry)
    api.consumer.send(QUEUE, "not json")
    stats = await asyncio.wait_for(worker.run(burst=True), 5)
    assert stats.malformed == 1
    assert api.consumer.pending(QUEUE) == 1


async def test_unparseable_message_naming_its_lease_fails_that_attempt_for_good(registry):
    worker, api = make_worker(registry)
    message = api.dispatch(QUEUE, "double", {"n": 1})
    [real] = api.consumer.queues[QUEUE]
    api.consumer.queues[QUEUE].clear()  # in its place, a body no worker can read
    header = real.body[: real.body.index(',"tenant"')]  # the fields naming the lease
    api.consumer.send(QUEUE, header + ',"payload":' + "[" * 300)
    stats = await asyncio.wait_for(worker.run(burst=True), 5)
    assert stats.malformed == 1
    job = api.jobs[message.job_id]
    assert job.status is JobStatus.DEAD
    [report] = job.reports
    assert report.failure is not None and report.failure.type == "InvalidMessage"
    assert report.failure.retryable is False
    assert "could not be read" in report.failure.message
    assert api.consumer.pending(QUEUE) == 0  # deleted once reported


async def test_health_reports_running_stopping_and_a_hung_receive(registry, monkeypatch):
    worker, _ = make_worker(registry)
    assert worker.health().problems == ["not running"]
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    assert worker.health().ok
    worker.stop()
    await run
    assert "stopping" in worker.health().problems

    class Stuck(InMemoryConsumer):
        async def receive(self, queue: str, *, max_messages: int, wait_seconds: float) -> list:
            await asyncio.sleep(3600)
            return []

    monkeypatch.setattr(runtime, "_RECEIVE_HUNG_AFTER", 0.05)
    stuck = Worker(
        registry,
        consumer=Stuck(),
        api=InMemoryWorkerApi(Stuck()),
        use_cases={"test": UseCaseConfig(queue=QUEUE)},
        poll_seconds=0,
    )
    run = asyncio.create_task(stuck.run())
    await asyncio.sleep(0.2)
    assert stuck.health().problems == ["receive on test hung"]
    stuck.stop()
    await run


async def test_metrics_text(registry):
    worker, api = make_worker(registry)
    api.dispatch(QUEUE, "double", {"n": 1})
    await asyncio.wait_for(worker.run(burst=True), 10)
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics_text(worker))
        for s in family.samples
    }
    assert samples["jobs_worker_succeeded_total"] == 1
    assert samples["jobs_worker_free_slots"] == 4


async def test_received_jobs_go_to_their_handlers_before_the_next_receive(registry):
    """The receive loop lets the attempts it admitted reach their handler loop before it
    builds its next receive (botocore builds an SQS request without yielding, a good part of
    a millisecond of CPU): a job's start does not wait for the next receive."""
    at_receive: list[tuple[int, int]] = []  # (jobs started, jobs received) at each receive

    class Recording(InMemoryConsumer):
        async def receive(
            self, queue: str, *, max_messages: int, wait_seconds: float
        ) -> list[ReceivedMessage]:
            at_receive.append((worker.stats.started, worker.stats.received))
            return await super().receive(
                queue, max_messages=max_messages, wait_seconds=wait_seconds
            )

    worker, api = make_worker(registry, Recording(visibility_seconds=30))
    for n in range(3):
        api.dispatch(QUEUE, "double", {"n": n})
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert stats.succeeded == 3
    # every receive after the first finds all the jobs received before it started
    later = [(s, r) for s, r in at_receive if r > 0]
    assert later and all(s == r for s, r in later), at_receive
