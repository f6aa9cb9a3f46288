"""The Consumer contract, for SqsConsumer (against SQS over the network) and InMemoryConsumer:
receipt, invisibility while received, redelivery once visible again (at once, or when the
visibility runs out), deletes."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobs_worker.consumer import ReceivedMessage
from jobs_worker.errors import JobsWorkerError
from tests.contract.conftest import ConsumerCase


async def receive_all(case: ConsumerCase, *, wait: float = 0) -> list[ReceivedMessage]:
    out: list[ReceivedMessage] = []
    while got := await case.consumer.receive(case.queue, max_messages=10, wait_seconds=wait):
        out += got
        wait = 0
    return out


async def test_received_messages_are_invisible_until_deleted(consumer_case: ConsumerCase) -> None:
    case = consumer_case
    ids = {await case.send(f"body-{i}"): f"body-{i}" for i in range(3)}
    got = await receive_all(case, wait=1)
    assert {m.message_id: m.body for m in got} == ids
    assert {(m.queue, m.receive_count) for m in got} == {(case.queue, 1)}
    assert len({m.receipt for m in got}) == 3
    assert await case.consumer.receive(case.queue, max_messages=10, wait_seconds=0) == []

    assert await case.consumer.delete(got) == set()
    assert await case.consumer.extend(got, seconds=0) == {m.receipt for m in got}  # gone
    assert await receive_all(case) == []
    assert await case.consumer.delete(got) == set()  # deleting again is no error


async def test_a_queue_is_checked_before_consuming(consumer_case: ConsumerCase) -> None:
    case = consumer_case
    await case.consumer.check_queue(case.queue)
    with pytest.raises(JobsWorkerError, match="no-such-queue"):
        await case.consumer.check_queue(f"{case.queue}-no-such-queue")


async def test_one_receive_returns_at_most_ten(consumer_case: ConsumerCase) -> None:
    case = consumer_case
    for i in range(12):
        await case.send(f"b{i}")
    got = await case.consumer.receive(case.queue, max_messages=50, wait_seconds=1)
    assert 1 <= len(got) <= 10
    assert len(got) + len(await receive_all(case)) == 12


async def test_visible_again_at_once_redelivers_with_a_new_receipt(
    consumer_case: ConsumerCase,
) -> None:
    case = consumer_case
    message_id = await case.send("again")
    [first] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    assert await case.consumer.extend([first], seconds=0) == set()
    [second] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    assert (second.message_id, second.body, second.receive_count) == (message_id, "again", 2)
    assert second.receipt != first.receipt
    assert await case.consumer.delete([second]) == set()
    assert await receive_all(case) == []


async def test_an_extension_keeps_it_invisible_and_its_end_redelivers(
    consumer_case: ConsumerCase,
) -> None:
    case = consumer_case
    await case.send("slow")
    [first] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    assert await case.consumer.extend([first], seconds=1.2) == set()  # whole seconds: 2
    await asyncio.sleep(1.2)
    assert await case.consumer.receive(case.queue, max_messages=1, wait_seconds=0) == []
    await asyncio.sleep(1.0)
    [second] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=2)
    assert second.message_id == first.message_id and second.receive_count == 2


async def test_a_long_poll_returns_when_a_message_arrives(consumer_case: ConsumerCase) -> None:
    case = consumer_case
    started = time.monotonic()
    assert await case.consumer.receive(case.queue, max_messages=1, wait_seconds=0) == []

    async def later() -> None:
        await asyncio.sleep(0.3)
        await case.send("late")

    sender = asyncio.create_task(later())
    got = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=5)
    await sender
    assert [m.body for m in got] == ["late"]
    assert time.monotonic() - started < 4.5


async def test_a_receipt_never_handed_out_fails(consumer_case: ConsumerCase) -> None:
    case = consumer_case
    message_id = await case.send("x")
    bogus = ReceivedMessage(case.queue, message_id, "not-a-receipt", "x")
    assert await case.consumer.delete([bogus]) == {"not-a-receipt"}
    assert await case.consumer.extend([bogus], seconds=5) == {"not-a-receipt"}
    assert [m.body for m in await receive_all(case, wait=1)] == ["x"]


async def test_a_delete_with_an_older_receipt_leaves_the_message(
    consumer_case: ConsumerCase, request: pytest.FixtureRequest
) -> None:
    """AWS: a delete must give the latest receipt; "otherwise, the request succeeds, but the
    message will not be deleted". The worker of a stale delivery must not delete the copy
    another worker now runs."""
    case = consumer_case
    if case.real:
        request.applymarker(
            pytest.mark.xfail(
                strict=True, reason="moto deletes a message by any of its receipts, unlike AWS"
            )
        )
    await case.send("twice")
    [stale] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    await case.consumer.extend([stale], seconds=0)
    [latest] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    assert await case.consumer.delete([stale]) == set()
    assert await case.consumer.extend([latest], seconds=0) == set()
    [still] = await case.consumer.receive(case.queue, max_messages=1, wait_seconds=1)
    assert still.message_id == latest.message_id and still.receive_count == 3
