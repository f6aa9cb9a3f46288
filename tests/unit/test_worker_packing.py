"""Several jobs per SQS message, the worker's side, against the in-memory fakes (which fence
like the server and keep SQS's visibility rules): every job of a pack runs, the message is
deleted after its last outcome and kept invisible until then, a redelivered pack runs only
what is unfinished."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from pydantic import BaseModel

from jobs_schema import JobStatus, OutcomeAck, OutcomeKind, OutcomeReport, UseCaseConfig
from jobs_worker import InMemoryConsumer, JobContext, Registry, Worker
from jobs_worker.consumer.base import ReceivedMessage
from jobs_worker.errors import WorkerApiError
from jobs_worker.testing import InMemoryWorkerApi

QUEUE = "q"


class Item(BaseModel):
    n: int
    hold: bool = False


class WatchedConsumer(InMemoryConsumer):
    """The in-memory consumer, noting each visibility change and delete as it happens."""

    def __init__(self) -> None:
        super().__init__(visibility_seconds=30)
        self.events: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def extend(self, messages: Sequence[ReceivedMessage], *, seconds: float) -> set[str]:
        self.events += [("extend", m.message_id) for m in messages]
        self.changed.set()
        return await super().extend(messages, seconds=seconds)

    async def delete(self, messages: Sequence[ReceivedMessage]) -> set[str]:
        self.events += [("delete", m.message_id) for m in messages]
        return await super().delete(messages)


class Handlers:
    def __init__(self) -> None:
        self.registry = Registry()
        self.ran: list[int] = []
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.running = 0
        self.peak = 0

        @self.registry.handler("item")
        async def item(payload: Item, ctx: JobContext) -> int:
            self.ran.append(payload.n)
            self.running += 1
            self.peak = max(self.peak, self.running)
            if payload.hold:
                self.held.set()
                await self.release.wait()
            await asyncio.sleep(0.01)
            self.running -= 1
            return payload.n


def make_worker(
    handlers: Handlers, *, lease_seconds: float = 30, concurrency: int = 4
) -> tuple[Worker, InMemoryWorkerApi, WatchedConsumer]:
    consumer = WatchedConsumer()
    api = InMemoryWorkerApi(consumer)
    use_case = UseCaseConfig(queue=QUEUE, timeout_seconds=5, lease_seconds=lease_seconds)
    worker = Worker(
        handlers.registry,
        consumer=consumer,
        api=api,
        use_cases={"test": use_case},
        concurrency=concurrency,
        burst_idle_seconds=0.1,
        grace_seconds=5,
        poll_seconds=0.05,
    )
    return worker, api, consumer


def items(*numbers: int, hold: int | None = None) -> list[tuple[str, dict[str, object]]]:
    return [("item", {"n": n, "hold": n == hold}) for n in numbers]


async def test_every_job_of_a_pack_runs_and_the_message_is_deleted():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers)
    sent = api.dispatch_pack(QUEUE, items(*range(7)), tenant="acme")
    single = api.dispatch(QUEUE, "item", {"n": 99})  # an older scheduler's message, beside it
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert sorted(handlers.ran) == [*range(7), 99]
    for m in [*sent, single]:
        job = api.jobs[m.job_id]
        assert job.status is JobStatus.SUCCEEDED
        assert job.reports[0].result == m.payload["n"]  # type: ignore[index]
    assert (stats.received, stats.succeeded) == (8, 8)
    assert consumer.pending(QUEUE) == 0
    assert sorted(consumer.deleted) == ["m0", "m1"]  # one delete for the pack


async def test_a_pack_larger_than_the_free_slots_waits_for_them():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers, concurrency=3)
    api.dispatch_pack(QUEUE, items(*range(10)))
    api.dispatch_pack(QUEUE, items(*range(10, 20)))
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert handlers.peak == 3
    assert stats.succeeded == 20 and sorted(handlers.ran) == list(range(20))
    assert consumer.pending(QUEUE) == 0


async def test_the_message_stays_invisible_until_its_last_job_has_an_outcome():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers, lease_seconds=0.3)  # beats every 0.1 s
    sent = api.dispatch_pack(QUEUE, items(1, 2, 3, hold=3))
    run = asyncio.create_task(worker.run(burst=True))
    await asyncio.wait_for(handlers.held.wait(), 5)
    while not all(api.jobs[m.job_id].status is JobStatus.SUCCEEDED for m in sent[:2]):
        await asyncio.sleep(0.01)
    # jobs 1 and 2 are reported and acknowledged; job 3 still runs: the message stays ...
    assert consumer.pending(QUEUE) == 1 and ("delete", "m0") not in consumer.events
    # ... and its visibility keeps being extended
    consumer.changed.clear()
    await asyncio.wait_for(consumer.changed.wait(), 5)
    assert consumer.events[-1] == ("extend", "m0")
    handlers.release.set()
    await asyncio.wait_for(run, 10)
    assert api.jobs[sent[2].job_id].status is JobStatus.SUCCEEDED
    assert consumer.events[-1] == ("delete", "m0") and consumer.pending(QUEUE) == 0
    assert consumer.events.count(("delete", "m0")) == 1


async def test_a_redelivered_pack_runs_only_its_unfinished_jobs():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers)
    sent = api.dispatch_pack(QUEUE, items(1, 2, 3))
    # a first worker took the message, reported job 1 and died before the others ended
    (first,) = await consumer.receive(QUEUE, max_messages=10, wait_seconds=0)
    api.jobs[sent[0].job_id].status = JobStatus.SUCCEEDED
    await consumer.extend([first], seconds=0)  # its visibility runs out: SQS redelivers it
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert sorted(handlers.ran) == [2, 3]
    assert api.jobs[sent[0].job_id].reports == []  # nothing more for the finished one
    assert [len(api.jobs[m.job_id].reports) for m in sent[1:]] == [1, 1]
    assert (stats.succeeded, stats.skipped) == (2, 1)
    assert consumer.pending(QUEUE) == 0


async def test_a_redelivered_copy_whose_jobs_ran_here_runs_nothing_again():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers)
    sent = api.dispatch_pack(QUEUE, items(1, 2))
    body = consumer.queues[QUEUE][0].body
    run = asyncio.create_task(worker.run(burst=True))
    while not all(api.jobs[m.job_id].status is JobStatus.SUCCEEDED for m in sent):
        await asyncio.sleep(0.01)
    consumer.send(QUEUE, body)  # a late duplicate of the whole pack
    stats = await asyncio.wait_for(run, 10)
    assert sorted(handlers.ran) == [1, 2]
    assert stats.skipped == 2
    assert consumer.pending(QUEUE) == 0  # the copy is deleted too


async def test_an_unreadable_job_in_a_pack_fails_alone():
    handlers = Handlers()
    worker, api, consumer = make_worker(handlers)
    sent = api.dispatch_pack(QUEUE, items(1, 2))
    stored = consumer.queues[QUEUE][0]
    packed = json.loads(stored.body)
    packed["jobs"][1]["deadline"] = "not a time"
    stored.body = json.dumps(packed, separators=(",", ":"))
    stats = await asyncio.wait_for(worker.run(burst=True), 10)
    assert handlers.ran == [1]
    (report,) = api.jobs[sent[1].job_id].reports
    assert report.outcome is OutcomeKind.FAILED and report.failure is not None
    assert report.failure.type == "InvalidMessage" and not report.failure.retryable
    assert (stats.succeeded, stats.malformed) == (1, 1)
    assert consumer.pending(QUEUE) == 0


class RefusingApi(InMemoryWorkerApi):
    """Answers every report but those of `refused` jobs with an error (the server said no)."""

    refused: set[object] = set()

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]:
        if any(r.job_id in self.refused for r in reports):
            raise WorkerApiError("outcome refused: 400")
        return await super().report(reports)


async def test_a_job_whose_outcome_is_not_acknowledged_keeps_its_message():
    handlers = Handlers()
    consumer = WatchedConsumer()
    api = RefusingApi(consumer)
    use_case = UseCaseConfig(queue=QUEUE, timeout_seconds=5, lease_seconds=30)
    worker = Worker(
        handlers.registry,
        consumer=consumer,
        api=api,
        use_cases={"test": use_case},
        concurrency=4,
        burst_idle_seconds=0.1,
        poll_seconds=0.05,
        report_batch=1,  # each report alone: one refused does not take the other with it
    )
    sent = api.dispatch_pack(QUEUE, items(1, 2))
    api.refused = {sent[1].job_id}
    await asyncio.wait_for(worker.run(burst=True), 10)
    assert sorted(handlers.ran) == [1, 2]
    assert api.jobs[sent[0].job_id].status is JobStatus.SUCCEEDED
    assert api.jobs[sent[1].job_id].status is JobStatus.RUNNING  # its lease will expire
    # the message stays, to come back when its visibility lapses (job 1's copy is then dropped)
    assert consumer.pending(QUEUE) == 1 and consumer.deleted == []
