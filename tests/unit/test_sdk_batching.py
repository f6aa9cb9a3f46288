"""The batcher with an in-memory sender: batching, bounds, and whose outcome is whose."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobs_sdk import QuotaExceeded, Unavailable
from jobs_sdk.batching import Batcher


class FakeSender:
    """Doubles numbers; refuses negative ones; raises `fail` for the whole batch if set."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> Sequence[int | Exception]:
        self.batches.append(items)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [QuotaExceeded(f"no {i}") if i < 0 else 2 * i for i in items]


async def test_concurrent_submissions_share_one_batch():
    sender = FakeSender()
    coalescer = Batcher(sender, linger=0.01, max_batch=100)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(50))) == [
        2 * i for i in range(50)
    ]
    assert sender.batches == [list(range(50))]
    await coalescer.aclose()


async def test_a_full_batch_leaves_at_once_and_the_rest_after_the_linger():
    sender = FakeSender()
    coalescer = Batcher(sender, linger=0.01, max_batch=4)
    await asyncio.gather(*(coalescer.submit(i) for i in range(10)))
    assert sender.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    await coalescer.aclose()


async def test_each_caller_gets_its_own_outcome():
    coalescer = Batcher(FakeSender(), linger=0.001, max_batch=100)
    outcomes = await asyncio.gather(
        *(coalescer.submit(i) for i in (1, -2, 3)), return_exceptions=True
    )
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], QuotaExceeded) and outcomes[1].message == "no -2"
    await coalescer.aclose()


async def test_a_whole_batch_failure_reaches_every_caller_as_its_own_copy():
    down = Unavailable("server down", status=503)
    coalescer = Batcher(FakeSender(fail=down), linger=0.001, max_batch=100)
    outcomes = await asyncio.gather(
        *(coalescer.submit(i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, Unavailable) and o.status == 503 for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3
    await coalescer.aclose()


async def test_a_caller_that_gave_up_is_not_sent():
    sender = FakeSender()
    coalescer = Batcher(sender, linger=0.05, max_batch=100)
    quitter = asyncio.create_task(coalescer.submit(1))
    stayer = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    quitter.cancel()
    assert await stayer == 4
    assert sender.batches == [[2]]
    await coalescer.aclose()


async def test_close_sends_what_waits_and_refuses_more():
    sender = FakeSender()
    coalescer = Batcher(sender, linger=60, max_batch=100)
    waiting = asyncio.create_task(coalescer.submit(5))
    await asyncio.sleep(0)
    await coalescer.aclose()
    assert await waiting == 10
    with pytest.raises(RuntimeError):
        await coalescer.submit(1)


async def test_a_sender_that_miscounts_fails_its_callers_instead_of_hanging_them():
    async def short(items: list[int]) -> Sequence[int | Exception]:
        return items[1:]

    coalescer = Batcher(short, linger=0.001, max_batch=100)
    outcomes = await asyncio.gather(
        *(coalescer.submit(i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    await coalescer.aclose()


async def test_close_waits_for_batches_in_flight():
    release = asyncio.Event()
    sent: list[list[int]] = []

    async def slow(items: list[int]) -> list[int]:
        sent.append(items)
        await release.wait()
        return items

    batcher = Batcher(slow, linger=0, max_batch=2)
    submissions = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0.01)
    assert not closing.done()
    release.set()
    await closing
    assert [await s for s in submissions] == [0, 1, 2]
    assert sent == [[0, 1], [2]]


async def test_an_idle_submission_goes_at_once_not_after_the_linger():
    sender = FakeSender()
    coalescer = Batcher(sender, linger=3600, max_batch=100)
    # with nothing in flight it does not wait for company (an hour here)
    assert await asyncio.wait_for(coalescer.submit(3), timeout=30) == 6
    assert sender.batches == [[3]]
    await coalescer.aclose()


async def test_submissions_during_a_call_wait_for_it_then_go_together():
    gate = asyncio.Event()
    sent: list[list[int]] = []

    async def gated(items: list[int]) -> list[int]:
        sent.append(items)
        if len(sent) == 1:
            await gate.wait()
        return items

    coalescer = Batcher(gated, linger=3600, max_batch=100)
    first = asyncio.create_task(coalescer.submit(0))
    while not sent:
        await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2, 3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent == [[0]]  # the others wait for the call in flight, not for the linger
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), timeout=30) == [0, 1, 2, 3]
    assert sent == [[0], [1, 2, 3]]
    await coalescer.aclose()


async def test_a_lazy_batcher_waits_for_company_even_when_idle():
    """eager=False (the worker's deletes): an idle submission waits out the linger, or a full
    batch, so that calls nobody waits on go ten at a time at low load."""
    sender = FakeSender()
    lazy = Batcher(sender, linger=3600, max_batch=3, eager=False)
    first = asyncio.create_task(lazy.submit(1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and sender.batches == []  # idle, yet it waits
    rest = [asyncio.create_task(lazy.submit(i)) for i in (2, 3)]
    assert await asyncio.wait_for(asyncio.gather(first, *rest), timeout=30) == [2, 4, 6]
    assert sender.batches == [[1, 2, 3]]  # the full batch went without the hour's linger
    lone = asyncio.create_task(lazy.submit(4))
    await asyncio.sleep(0)
    await lazy.aclose()  # closing sends what waits
    assert await lone == 8
    assert sender.batches == [[1, 2, 3], [4]]


async def test_a_paced_batcher_sends_the_first_at_once_then_one_batch_a_linger():
    """paced=True (the worker's reports): with no batch in the last linger an item goes at once;
    after one, the next waits for its linger even with nothing in flight (where an eager
    batcher would send it alone at once), unless a full batch goes first."""
    sender = FakeSender()
    paced = Batcher(sender, linger=3600, max_batch=3, paced=True)
    assert await asyncio.wait_for(paced.submit(1), timeout=30) == 2  # idle: not the hour
    later = asyncio.create_task(paced.submit(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not later.done() and sender.batches == [[1]]  # nothing in flight, yet it waits
    rest = [asyncio.create_task(paced.submit(i)) for i in (3, 4)]
    assert await asyncio.wait_for(asyncio.gather(later, *rest), timeout=30) == [4, 6, 8]
    assert sender.batches == [[1], [2, 3, 4]]  # full: it went without the hour
    await paced.aclose()


async def test_a_paced_batcher_sends_at_once_again_after_a_quiet_linger():
    sender = FakeSender()
    paced = Batcher(sender, linger=0.05, max_batch=100, paced=True)
    assert await paced.submit(1) == 2
    await asyncio.sleep(0.1)  # a sleep is never shorter than asked: the linger has passed
    second = asyncio.create_task(paced.submit(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert second.done() and await second == 4
    assert sender.batches == [[1], [2]]
    await paced.aclose()
