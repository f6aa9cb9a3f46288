"""The contract suites: each port's real adapter and its fake, one suite run against both, so
the fake cannot drift from what production does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from jobs_schema import BackoffPolicy
from jobs_server.clock import ManualClock
from jobs_server.publisher.base import InMemoryPublisher, Publisher, QueueSpec
from jobs_server.publisher.sqs import SqsPublisher, sqs_client
from jobs_server.service import JobIds
from jobs_server.store.base import JobStore, LeaderLease, NewJob
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.store.postgres import PostgresJobStore
from jobs_worker.consumer import Consumer, InMemoryConsumer, SqsConsumer
from tests.conftest import free_port

StoreAndClock = tuple[JobStore, ManualClock]
MakeJob = Callable[..., NewJob]

BACKOFF = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)


@pytest.fixture(params=["memory", "postgres"])
def store_backend(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory store, else the URL of a database of this test's own."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("database_url")
    return url


@pytest.fixture
async def store(store_backend: str | None) -> AsyncIterator[StoreAndClock]:
    clock = ManualClock(datetime.now(UTC))
    impl: JobStore
    if store_backend is None:
        impl = InMemoryJobStore(clock)
    else:
        impl = await PostgresJobStore.connect(store_backend, min_size=1, max_size=4, clock=clock)
    yield impl, clock
    await impl.close()


@pytest.fixture
def make_job(store: StoreAndClock) -> MakeJob:
    """Factory: a NewJob due now by the store's clock, a minute's tolerance, overrides applied."""
    _, clock = store
    job_ids = JobIds(clock)

    def make(**overrides: Any) -> NewJob:
        now = clock.now()
        values: dict[str, Any] = {
            "id": job_ids.new(),
            "use_case": "uc",
            "job_type": "uc.run",
            "payload": {"n": 1},
            "priority": 0,
            "run_at": now,
            "deadline": now + timedelta(seconds=60),
            "max_attempts": 3,
            "backoff": BACKOFF,
        }
        values.update(overrides)
        return NewJob(**values)

    return make


@pytest.fixture
async def leader(store: StoreAndClock) -> LeaderLease:
    """This test's scheduler holding the leader lease for an hour of its clock."""
    impl, _ = store
    epoch = await impl.acquire_leadership("main", "scheduler-1", ttl=3600)
    assert epoch is not None
    return LeaderLease("main", "scheduler-1", epoch)


def ids(items: list[Any]) -> list[UUID]:
    return [i.id for i in items]


# -- queues -------------------------------------------------------------------------------


@dataclass
class PublisherCase:
    """A Publisher with a queue of this test's own, and a way to read what reached a queue."""

    publisher: Publisher
    queue: str
    bodies: Callable[[str], Awaitable[list[str]]]  # take every message now on the queue
    unreachable: Publisher  # one whose queue service is down


@dataclass
class ConsumerCase:
    """A Consumer of a queue of this test's own (visibility 30 s), and a way to send to it."""

    consumer: Consumer
    queue: str
    send: Callable[[str], Awaitable[str]]  # body -> message id
    real: bool


@pytest.fixture(params=["memory", "sqs"])
def queue_backend(request: pytest.FixtureRequest) -> str | None:
    """None for the fakes, else the endpoint of an SQS (a moto server on loopback)."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("sqs_endpoint")
    return url


@pytest.fixture
async def publisher_case(
    queue_backend: str | None, queue_prefix: str
) -> AsyncIterator[PublisherCase]:
    queue = f"{queue_prefix}-pub"
    if queue_backend is None:
        fake = InMemoryPublisher(queues=set())
        await fake.ensure_queues([QueueSpec(queue)])

        async def taken(name: str) -> list[str]:
            return fake.sent.pop(name, [])

        yield PublisherCase(fake, queue, taken, InMemoryPublisher(down=True))
        return
    real = await SqsPublisher.connect(region="us-east-1", endpoint_url=queue_backend)
    down = await SqsPublisher.connect(
        region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    await real.ensure_queues([QueueSpec(queue)])
    async with sqs_client(region="us-east-1", endpoint_url=queue_backend) as client:

        async def drained(name: str) -> list[str]:
            url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
            out: list[str] = []
            while msgs := (
                await client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300
                )
            ).get("Messages", []):
                out += [m["Body"] for m in msgs]
                await client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(msgs)
                    ],
                )
            return out

        yield PublisherCase(real, queue, drained, down)
    await real.close()
    await down.close()


@pytest.fixture
async def consumer_case(
    queue_backend: str | None, queue_prefix: str
) -> AsyncIterator[ConsumerCase]:
    queue = f"{queue_prefix}-jobs"
    if queue_backend is None:
        fake = InMemoryConsumer(visibility_seconds=30)
        fake.create_queue(queue)

        async def put(body: str) -> str:
            return fake.send(queue, body)

        yield ConsumerCase(fake, queue, put, real=False)
        return
    consumer = await SqsConsumer.connect(region="us-east-1", endpoint_url=queue_backend)
    async with sqs_client(region="us-east-1", endpoint_url=queue_backend) as client:
        url = (await client.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "30"}))[
            "QueueUrl"
        ]

        async def sent(body: str) -> str:
            return str((await client.send_message(QueueUrl=url, MessageBody=body))["MessageId"])

        yield ConsumerCase(consumer, queue, sent, real=True)
    await consumer.close()
