"""The Publisher contract, for SqsPublisher (against SQS over the network) and
InMemoryPublisher: what is published arrives, by queue name or URL; what cannot be sent is
reported by key."""

from __future__ import annotations

from jobs_server.publisher.base import OutgoingMessage, QueueSpec
from tests.contract.conftest import PublisherCase


def messages(n: int, *, prefix: str = "m") -> list[OutgoingMessage]:
    return [OutgoingMessage(f"{prefix}{i}", f'{{"n": {i}, "p": "{prefix}"}}') for i in range(n)]


async def test_published_messages_arrive(publisher_case: PublisherCase) -> None:
    case = publisher_case
    sent = messages(25)  # more than one SendMessageBatch holds
    assert await case.publisher.publish(case.queue, sent) == set()
    assert sorted(await case.bodies(case.queue)) == sorted(m.body for m in sent)
    assert await case.publisher.publish(case.queue, []) == set()
    assert await case.bodies(case.queue) == []


async def test_a_queue_is_named_by_name_or_url(publisher_case: PublisherCase) -> None:
    case = publisher_case
    urls = await case.publisher.ensure_queues([QueueSpec(case.queue)])
    again = await case.publisher.ensure_queues(
        [QueueSpec(case.queue, visibility_timeout_seconds=90)]
    )
    assert urls == again and list(urls) == [case.queue]
    assert urls[case.queue].endswith("/" + case.queue)
    assert await case.publisher.publish(urls[case.queue], messages(2, prefix="u")) == set()
    assert sorted(await case.bodies(case.queue)) == sorted(m.body for m in messages(2, prefix="u"))


async def test_a_queue_that_does_not_exist_fails_every_key(publisher_case: PublisherCase) -> None:
    case = publisher_case
    missing = case.queue + "-missing"
    assert await case.publisher.publish(missing, messages(3)) == {"m0", "m1", "m2"}
    assert await case.bodies(case.queue) == []


async def test_an_unreachable_queue_service_fails_every_key(
    publisher_case: PublisherCase,
) -> None:
    case = publisher_case
    url = f"http://127.0.0.1:1/000000000000/{case.queue}"
    assert await case.unreachable.publish(url, messages(12)) == {f"m{i}" for i in range(12)}
