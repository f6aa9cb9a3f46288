"""The cancellation poll (jobs_worker.cancellations) against the in-memory worker API: one
request for every running attempt, nothing asked when nothing runs, a failing server survived,
and the signal reaching a handler on its own event loop long before any heartbeat."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
from pydantic import BaseModel

from jobs_schema import JobStatus, LeaseRef, LeaseState, UseCaseConfig
from jobs_worker import InMemoryConsumer, JobContext, Registry, Worker
from jobs_worker.cancellations import CancelPoller
from jobs_worker.consumer.base import ReceivedMessage
from jobs_worker.context import CancelSignal
from jobs_worker.errors import ConfigError, JobsWorkerError, WorkerApiError
from jobs_worker.heartbeats import HeldLease
from jobs_worker.settings import load_settings
from jobs_worker.testing import InMemoryWorkerApi

QUEUE = "q"


class Item(BaseModel):
    n: int


def held(api: InMemoryWorkerApi) -> HeldLease:
    message = api.dispatch(QUEUE, "t", {"n": 0})
    ref = LeaseRef(job_id=message.job_id, attempt=1, lease_token=message.lease_token)
    received = ReceivedMessage(queue=QUEUE, message_id="m", receipt="r", body="{}")
    return HeldLease(ref=ref, message=received, seconds=150)


class Down(InMemoryWorkerApi):
    """The server unreachable until `up` is set."""

    def __init__(self, consumer: InMemoryConsumer) -> None:
        super().__init__(consumer)
        self.up = False

    async def cancellations(self, worker_id: str, leases: list[LeaseRef]) -> list[LeaseRef]:
        if not self.up:
            self.cancellation_polls += 1
            raise WorkerApiError("connection refused")
        return await super().cancellations(worker_id, leases)


async def test_one_poll_asks_for_every_lease_and_sets_the_cancelled_ones():
    api = InMemoryWorkerApi(InMemoryConsumer())
    poller = CancelPoller(api, worker_id="w")
    leases = [held(api) for _ in range(3)]
    for lease in leases:
        poller.track(lease)
    api.cancel(leases[1].ref.job_id)
    assert await poller.poll() == 1
    assert api.cancellation_polls == 1
    assert [x.cancel.is_set() for x in leases] == [False, True, False]
    assert leases[1].state is LeaseState.CANCELLED
    # a cancelled, finishing or untracked lease is not asked about again
    leases[0].finishing = True
    poller.untrack(leases[2])
    assert await poller.poll() == 0
    assert api.cancellation_polls == 1


async def test_a_lease_of_another_attempt_learns_nothing():
    api = InMemoryWorkerApi(InMemoryConsumer())
    poller = CancelPoller(api, worker_id="w")
    lease = held(api)
    api.cancel(lease.ref.job_id)
    stale = HeldLease(
        ref=LeaseRef(job_id=lease.ref.job_id, attempt=1, lease_token=uuid.uuid4()),
        message=lease.message,
        seconds=150,
    )
    poller.track(stale)
    assert await poller.poll() == 0
    assert not stale.cancel.is_set()


async def test_nothing_is_asked_while_nothing_runs():
    api = InMemoryWorkerApi(InMemoryConsumer())
    poller = CancelPoller(api, worker_id="w", interval=0.01)
    run = asyncio.create_task(poller.run())
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert api.cancellation_polls == 0
    lease = held(api)
    api.cancel(lease.ref.job_id)
    poller.track(lease)
    await asyncio.wait_for(lease.cancel.wait(), 5)
    run.cancel()
    assert api.cancellation_polls >= 1


async def test_a_failing_server_is_logged_once_and_polled_again(caplog):
    api = Down(InMemoryConsumer())
    poller = CancelPoller(api, worker_id="w", interval=0.01)
    lease = held(api)
    api.cancel(lease.ref.job_id)
    poller.track(lease)
    run = asyncio.create_task(poller.run())
    with caplog.at_level(logging.INFO, logger="jobs_worker.cancellations"):
        while api.cancellation_polls < 5:
            await asyncio.sleep(0.01)
        api.up = True
        await asyncio.wait_for(lease.cancel.wait(), 5)
    assert not run.done()  # the failures did not end the loop
    run.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("cancellation poll failed; retrying") == 1
    assert "cancellation poll answered again" in messages


async def test_the_signal_wakes_a_waiter_on_another_event_loop():
    signal = CancelSignal()
    woke = threading.Event()
    ready = threading.Event()

    def other_loop() -> None:
        async def waiter() -> None:
            ready.set()
            await signal.wait()
            woke.set()

        # no timer on this loop: only a wake-up from the setting thread can end the wait
        asyncio.run(waiter())

    thread = threading.Thread(target=other_loop, daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 5)
    signal.set()
    await asyncio.to_thread(woke.wait, 10)
    assert woke.is_set(), "a waiter on another loop was never woken"
    await signal.wait()  # already set: returns at once


async def test_a_running_handler_sees_its_cancellation_with_no_heartbeat():
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("wait")
    async def wait(payload: Item, ctx: JobContext) -> str:
        started.set()
        await ctx.wait_cancelled()
        return "saw it"

    consumer = InMemoryConsumer(visibility_seconds=300)
    api = InMemoryWorkerApi(consumer)
    use_case = UseCaseConfig(queue=QUEUE, timeout_seconds=60, lease_seconds=150)
    worker = Worker(
        registry,
        consumer=consumer,
        api=api,
        use_cases={"test": use_case},
        poll_seconds=0.05,
        burst_idle_seconds=0.1,
        cancel_poll_seconds=0.05,
    )
    message = api.dispatch(QUEUE, "wait", {"n": 0})
    run = asyncio.create_task(worker.run(burst=True))
    await asyncio.wait_for(started.wait(), 5)
    api.cancel(message.job_id)
    await asyncio.wait_for(run, 10)
    job = api.jobs[message.job_id]
    assert job.status is JobStatus.CANCELLED
    assert job.reports[0].result == "saw it"
    assert api.heartbeats == 0  # the first would have come 37.5 s in


def test_the_interval_has_a_documented_range():
    consumer = InMemoryConsumer()
    api = InMemoryWorkerApi(consumer)
    use_cases = {"test": UseCaseConfig(queue=QUEUE, timeout_seconds=5)}
    for bad in (0, -1, 61):
        with pytest.raises(
            JobsWorkerError, match="cancel_poll_seconds must be over 0 and at most 60"
        ):
            Worker(
                Registry(), consumer=consumer, api=api, use_cases=use_cases, cancel_poll_seconds=bad
            )


@pytest.mark.parametrize("value", ["0", "-1", "61", "soon"])
def test_a_bad_poll_interval_setting_is_refused_naming_it(monkeypatch, value):
    monkeypatch.setenv("JOBS_CANCEL_POLL_SECONDS", value)
    with pytest.raises(ConfigError, match="JOBS_CANCEL_POLL_SECONDS"):
        load_settings()
    monkeypatch.setenv("JOBS_CANCEL_POLL_SECONDS", "0.5")
    assert load_settings().cancel_poll_seconds == 0.5
