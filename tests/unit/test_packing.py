"""Several jobs per SQS message, the scheduler's side: how claimed jobs are packed (count, bytes,
payloads left out), what a publish of packs records, and the wire format the worker reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from jobs_schema import (
    JobMessage,
    JobStatus,
    PackedMessage,
    UseCaseConfig,
    jobs_in_body,
    pack_bodies,
    packed_size,
)
from jobs_server.clock import ManualClock
from jobs_server.metrics import ServerMetrics
from jobs_server.publisher.base import InMemoryPublisher, OutgoingMessage
from jobs_server.publisher.sqs import batch_chunks
from jobs_server.scheduler import Dispatcher, Elector, PublishFailed, pack_messages
from jobs_server.service import JobIds
from jobs_server.store.base import ClaimedJob, JobFilter, NewJob
from jobs_server.store.memory import InMemoryJobStore
from tests.unit.test_scheduler_services import BACKOFF


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(clock: ManualClock) -> InMemoryJobStore:
    return InMemoryJobStore(clock)


async def enqueue(
    store: InMemoryJobStore, clock: ManualClock, payloads: list[dict[str, Any]], tenant: str
) -> list[NewJob]:
    now = clock.now()
    ids = JobIds(clock)
    jobs = [
        NewJob(
            id=ids.new(),
            use_case="uc",
            job_type="uc.run",
            payload=p,
            priority=0,
            run_at=now,
            deadline=now + timedelta(seconds=60),
            max_attempts=2,
            backoff=BACKOFF,
        )
        for p in payloads
    ]
    await store.enqueue_jobs(tenant, quota=None, jobs=jobs)
    return jobs


async def claimed(
    store: InMemoryJobStore, clock: ManualClock, payloads: list[dict[str, Any]]
) -> list[ClaimedJob]:
    await enqueue(store, clock, payloads, "acme")
    lead = Elector(store, name="main", ttl_seconds=9, holder="a")
    await lead.run_once(clock.now())
    assert lead.lease is not None
    return await store.claim_due_jobs(
        "uc",
        capacity=1000,
        limit=1000,
        lease_seconds=30,
        leader=lead.lease,
        per_tenant_cap=None,
    )


async def leading_dispatcher(
    store: InMemoryJobStore,
    clock: ManualClock,
    publisher: InMemoryPublisher,
    *,
    pack_max_jobs: int = 10,
    metrics: ServerMetrics | None = None,
) -> Dispatcher:
    lead = Elector(store, name="main", ttl_seconds=9, holder="a")
    await lead.run_once(clock.now())
    uc = UseCaseConfig(queue="q", capacity=100, lease_seconds=30, pack_max_jobs=pack_max_jobs)
    return Dispatcher(
        store, publisher, {"uc": uc}, elector=lead, clock=clock, claim_batch=100, metrics=metrics
    )


def sizes(bodies: list[str]) -> list[int]:
    return [len(b.encode()) for b in bodies]


# -- the wire format -------------------------------------------------------------------------


async def test_a_pack_body_is_the_packed_message_that_the_worker_reads(store, clock):
    jobs = await claimed(store, clock, [{"n": i, "text": "é"} for i in range(3)])
    (pack,) = pack_messages(jobs, max_jobs=10, max_bytes=256 * 1024)
    parsed = PackedMessage.model_validate_json(pack.body)
    assert [m.job_id for m in parsed.jobs] == [j.id for j in jobs]
    assert pack.body == parsed.model_dump_json()  # joined by hand, written as the model would
    singles = [m.model_dump_json() for m in parsed.jobs]
    assert pack_bodies(singles) == pack.body
    assert packed_size(sizes(singles)) == len(pack.body.encode())
    assert [m.job_id for m in jobs_in_body(pack.body)] == [j.id for j in jobs]


def test_jobs_in_body_reads_single_job_messages_of_older_schedulers_and_refuses_the_rest():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    single = JobMessage.model_validate(
        {
            "job_id": "00000000-0000-0000-0000-000000000001",
            "lease_token": "00000000-0000-0000-0000-000000000002",
            "attempt": 1,
            "tenant": "acme",
            "use_case": "uc",
            "job_type": "uc.run",
            "payload": {},
            "deadline": now,
            "lease_expires_at": now,
            "max_attempts": 3,
        }
    )
    assert jobs_in_body(single.model_dump_json()) == [single]
    for bad in ('{"v":2,"jobs":[]}', '{"v":3}', '{"v":2,"jobs":[{"v":1}]}'):
        with pytest.raises(ValidationError):
            jobs_in_body(bad)


@pytest.mark.parametrize("bad", [0, 101, 2.5, "10"])
def test_pack_max_jobs_is_refused_outside_1_to_100(bad):
    with pytest.raises(ValidationError, match="pack_max_jobs"):
        UseCaseConfig.model_validate({"queue": "q", "pack_max_jobs": bad})


# -- packing ---------------------------------------------------------------------------------


async def test_packs_hold_at_most_pack_max_jobs_in_claim_order(store, clock):
    jobs = await claimed(store, clock, [{"n": i} for i in range(25)])
    packs = pack_messages(jobs, max_jobs=10, max_bytes=256 * 1024)
    assert [len(p.jobs) for p in packs] == [10, 10, 5]
    assert [j for p in packs for j in p.jobs] == jobs
    assert [p.key for p in packs] == [str(p.jobs[0].id) for p in packs]
    assert [len(PackedMessage.model_validate_json(p.body).jobs) for p in packs] == [10, 10, 5]


async def test_one_job_per_message_is_todays_plain_job_message(store, clock):
    jobs = await claimed(store, clock, [{"n": i} for i in range(3)])
    packs = pack_messages(jobs, max_jobs=1, max_bytes=256 * 1024)
    assert [json.loads(p.body)["v"] for p in packs] == [1, 1, 1]
    assert [JobMessage.model_validate_json(p.body).job_id for p in packs] == [j.id for j in jobs]
    # and a pack that happens to hold one job is sent as a plain one too
    (last,) = pack_messages(jobs[:1], max_jobs=10, max_bytes=256 * 1024)
    assert json.loads(last.body)["v"] == 1


async def test_packs_stay_within_the_queues_message_size(store, clock):
    jobs = await claimed(store, clock, [{"text": "x" * 1500} for _ in range(9)])
    packs = pack_messages(jobs, max_jobs=10, max_bytes=8192)
    assert all(len(p.body.encode()) <= 8192 for p in packs)
    # each job's body is about 2 KB: four fit in 8 KB, not five
    assert [len(p.jobs) for p in packs] == [4, 4, 1]
    assert all(m.payload == {"text": "x" * 1500} for p in packs for m in jobs_in_body(p.body))


async def test_a_payload_too_large_for_a_message_of_its_own_is_left_out_in_a_pack(store, clock):
    jobs = await claimed(store, clock, [{"n": 1}, {"text": "x" * 5000}, {"n": 2}])
    (pack,) = pack_messages(jobs, max_jobs=10, max_bytes=8192)  # embeds up to 4096 bytes
    assert [m.payload for m in jobs_in_body(pack.body)] == [{"n": 1}, None, {"n": 2}]


async def test_trace_context_is_each_jobs_own(store, clock):
    jobs = await claimed(store, clock, [{"n": i} for i in range(2)])
    carriers = {jobs[0].id: {"traceparent": "00-aa-bb-01"}}
    (pack,) = pack_messages(jobs, carriers.get, max_jobs=10, max_bytes=256 * 1024)
    assert [m.trace_context for m in jobs_in_body(pack.body)] == [
        {"traceparent": "00-aa-bb-01"},
        {},
    ]


# -- the dispatcher --------------------------------------------------------------------------


async def test_jobs_of_several_tenants_in_one_use_case_share_a_message(store, clock):
    acme = await enqueue(store, clock, [{"n": 1}, {"n": 2}], "acme")
    globex = await enqueue(store, clock, [{"n": 3}], "globex")
    publisher = InMemoryPublisher()
    metrics = ServerMetrics(tenant_labels=["acme", "globex"])
    d = await leading_dispatcher(store, clock, publisher, metrics=metrics)
    assert (await d.run_once(clock.now())).sent == 3
    (body,) = publisher.sent["q"]
    packed = jobs_in_body(body)
    assert {m.job_id for m in packed} == {j.id for j in acme + globex}
    assert {m.tenant for m in packed} == {"acme", "globex"}
    assert d.stats.dispatched == 3
    counted = {
        s.labels["tenant"]: s.value
        for s in metrics.dispatched.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert counted == {"acme": 2.0, "globex": 1.0}  # observe_published counts jobs, per tenant


async def test_a_failed_publish_of_packs_gives_every_jobs_claim_back(store, clock):
    await enqueue(store, clock, [{"n": i} for i in range(12)], "acme")
    publisher = InMemoryPublisher(down=True)
    d = await leading_dispatcher(store, clock, publisher)
    with pytest.raises(PublishFailed):
        await d.run_once(clock.now())
    jobs = await store.list_jobs(JobFilter())
    assert {j.status for j in jobs} == {JobStatus.PENDING}
    assert (d.stats.publish_failures, d.stats.released) == (12, 12)
    publisher.down = False
    assert (await d.run_once(clock.now())).sent == 12
    assert [len(jobs_in_body(b)) for b in publisher.sent["q"]] == [10, 2]


def test_batches_of_packs_keep_to_the_size_sqs_allows_a_call():
    messages = [OutgoingMessage(str(i), "x" * 3000) for i in range(25)]
    chunks = batch_chunks(messages, max_bytes=10_000)
    assert [len(c) for c in chunks] == [3] * 8 + [1]
    small = [OutgoingMessage(str(i), "x") for i in range(25)]
    assert [len(c) for c in batch_chunks(small, max_bytes=10_000)] == [10, 10, 5]
    assert [m for c in chunks for m in c] == messages
