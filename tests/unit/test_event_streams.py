"""The event source and the hub over the in-memory store (the same port the PostgreSQL store
passes): payload chunks, coalescing, fan-out, a lagging stream, the LISTEN reconnect and the
frames of a job's stream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from jobs_schema import EnqueueRequest, EventKind, EventQuery, JobHead, JobsConfig
from jobs_server.auth import Principal, Role
from jobs_server.clock import ManualClock
from jobs_server.errors import StreamsFull, TooManyStreams
from jobs_server.events import CHANNEL, MAX_PAYLOAD_BYTES, EventSender, chunks, parse_ids
from jobs_server.service import JobService
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.streams import EventHub, JobStreams, Subscriber

ACME = Principal(Role.TENANT, "acme")
GLOBEX = Principal(Role.TENANT, "globex")
CONFIG = JobsConfig.model_validate({"use_cases": {"uc": {"queue": "uc"}, "uc2": {"queue": "uc2"}}})
GUARD = 10.0  # seconds a test waits for what must come, at most: a hang, not a measure


def request(use_case: str = "uc") -> EnqueueRequest:
    return EnqueueRequest(use_case=use_case, job_type="t", payload={})


class Rig:
    def __init__(self, *, queue_size: int = 64, recheck: float = 1.0) -> None:
        self.clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
        self.store = InMemoryJobStore(self.clock)
        self.sender = EventSender(self.store)
        self.jobs = JobService(
            self.store,
            CONFIG,
            default_quota=None,
            max_payload_bytes=65536,
            clock=self.clock,
            on_changed=self.sender.changed,
        )
        self.hub = EventHub(
            self.store,
            queue_size=queue_size,
            max_streams=100,
            max_per_tenant=10,
            recheck_seconds=recheck,
        )
        self.streams = JobStreams(self.hub, self.jobs, heartbeat_seconds=GUARD)

    async def enqueue(self, tenant: str = "acme", use_case: str = "uc") -> uuid.UUID:
        return (await self.jobs.enqueue(tenant, request(use_case))).job.id


async def next_item(sub: Subscriber) -> JobHead | EventKind:
    item = await sub.next(GUARD)
    assert item is not None, "nothing arrived"
    return item


def test_ids_go_out_in_payloads_under_the_notify_limit() -> None:
    ids = [uuid.uuid4() for _ in range(1000)]
    payloads = list(chunks(ids))
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert [i for p in payloads for i in parse_ids(p)] == ids
    assert list(chunks([])) == []
    # a stranger's NOTIFY on the channel is skipped, not an error
    assert parse_ids("not-an-id,," + ids[0].hex + ",\x00") == [ids[0]]


async def test_changes_of_one_moment_coalesce_into_one_notify() -> None:
    rig = Rig()
    heard: list[str] = []
    await rig.store.listen(CHANNEL, heard.append)
    a, b = uuid.uuid4(), uuid.uuid4()
    rig.sender.changed([a])
    rig.sender.changed([b, a])
    rig.sender.changed([])
    await rig.sender.close()
    await asyncio.sleep(0)  # the in-memory NOTIFY is delivered on the next turn, as PG's is
    assert rig.sender.sent == 1
    assert [parse_ids(p) for p in heard] == [[a, b]]


async def test_disabled_sender_sends_nothing() -> None:
    store = InMemoryJobStore(ManualClock())
    sender = EventSender(store, enabled=False)
    sender.changed([uuid.uuid4()])
    await sender.close()
    assert sender.sent == 0


async def test_a_lagging_stream_ends_and_the_others_go_on() -> None:
    rig = Rig(queue_size=2)
    slow = await rig.hub.subscribe(ACME, query=EventQuery())
    fast = await rig.hub.subscribe(ACME, query=EventQuery())
    ids = []
    for _ in range(4):
        ids.append(await rig.enqueue())
        item = await next_item(fast)
        assert isinstance(item, JobHead) and item.id == ids[-1]
    # the slow one read nothing: past two queued events it was ended, its queue dropped
    assert await next_item(slow) is EventKind.LAGGED
    assert slow.ended and rig.hub.open_streams == 1
    ids.append(await rig.enqueue())
    item = await next_item(fast)
    assert isinstance(item, JobHead) and item.id == ids[-1]


async def test_streams_see_only_their_tenant_and_filters() -> None:
    rig = Rig()
    acme = await rig.hub.subscribe(ACME, query=EventQuery(use_case="uc2"))
    globex = await rig.hub.subscribe(GLOBEX, query=EventQuery())
    admin = await rig.hub.subscribe(Principal(Role.ADMIN), query=EventQuery(tenant="globex"))
    await rig.enqueue("acme", "uc")
    theirs = await rig.enqueue("globex", "uc2")
    mine = await rig.enqueue("acme", "uc2")
    assert [(await next_item(acme)).id] == [mine]  # type: ignore[union-attr]
    assert [(await next_item(globex)).id] == [theirs]  # type: ignore[union-attr]
    assert [(await next_item(admin)).id] == [theirs]  # type: ignore[union-attr]
    assert acme.queue.empty() and globex.queue.empty() and admin.queue.empty()


async def test_a_lost_listen_connection_is_opened_again_and_streams_told() -> None:
    rig = Rig(recheck=0.01)
    wide = await rig.hub.subscribe(ACME, query=EventQuery())
    job_id = await rig.enqueue()
    assert (await next_item(wide)).id == job_id  # type: ignore[union-attr]
    one = await rig.hub.subscribe(ACME, job_id=job_id)
    await rig.store._listeners[CHANNEL][0].close()  # the connection went away
    assert await next_item(wide) is EventKind.RECONNECTED
    assert await next_item(one) is EventKind.RECONNECTED
    resent = await next_item(one)  # a job's stream gets its job's state again
    assert isinstance(resent, JobHead) and resent.id == job_id
    # the re-read reaches every stream it matches (a stream's frames drop what it sent already)
    assert (await next_item(wide)).id == job_id  # type: ignore[union-attr]
    later = await rig.enqueue()
    assert (await next_item(wide)).id == later  # type: ignore[union-attr]
    await rig.hub.close()


async def test_a_jobs_stream_opens_with_its_state_and_ends_after_the_last() -> None:
    rig = Rig()
    job_id = await rig.enqueue()
    frames = await rig.streams.job_events(ACME, job_id)
    first = await anext(frames)
    assert first.startswith(b"event: job\n") and b'"status":"pending"' in first
    rig.clock.advance(1)
    await rig.jobs.cancel(ACME, job_id)
    last = await anext(frames)
    assert b'"status":"cancelled"' in last
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
    assert rig.hub.open_streams == 0


async def test_an_older_state_than_the_one_sent_is_not_sent() -> None:
    rig = Rig()
    job_id = await rig.enqueue()
    frames = await rig.streams.job_events(ACME, job_id)
    await anext(frames)
    [sub] = rig.hub._by_job[job_id]
    [head] = await rig.store.get_job_heads([job_id])
    stale = head.model_copy(update={"updated_at": datetime(2029, 1, 1, tzinfo=UTC)})
    sub.offer(stale)  # a read that raced the stream's first read
    sub.offer(head)  # the same state again
    rig.clock.advance(1)
    await rig.jobs.cancel(ACME, job_id)
    assert b'"status":"cancelled"' in await anext(frames)


async def test_shutdown_ends_every_stream_and_refuses_new_ones() -> None:
    rig = Rig()
    job_id = await rig.enqueue()
    frames = await rig.streams.job_events(ACME, job_id)
    await anext(frames)
    wide = await rig.streams.tenant_events(ACME, EventQuery())
    rig.hub.end_all()
    assert (await anext(frames)).startswith(b"event: shutdown\n")
    assert (await anext(wide)).startswith(b"event: shutdown\n")
    with pytest.raises(StopAsyncIteration):
        await anext(wide)
    with pytest.raises(StreamsFull):
        await rig.hub.subscribe(ACME, query=EventQuery())


async def test_limits_per_tenant_and_per_process() -> None:
    store = InMemoryJobStore(ManualClock())
    hub = EventHub(store, queue_size=4, max_streams=3, max_per_tenant=2)
    a = await hub.subscribe(ACME)
    await hub.subscribe(ACME)
    with pytest.raises(TooManyStreams):
        await hub.subscribe(ACME)
    await hub.subscribe(GLOBEX)
    with pytest.raises(StreamsFull):
        await hub.subscribe(GLOBEX)
    a.close()
    await hub.subscribe(ACME)  # a closed stream frees its place
    assert hub.open_streams == 3
    await hub.close()
