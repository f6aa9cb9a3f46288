"""A batch's callback is stored exactly once across a scheduler failover: the leader dies
while the batch's last job runs, the standby takes over, its reaper ends that job (lease
expired, no attempt left) and, in the same transaction, stores the callback, which it then
dispatches. Real scheduler processes, PostgreSQL and SQS (moto)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest

from jobs_schema import EnqueueRequest, JobMessage
from jobs_schema.workflows import BatchCreateRequest
from jobs_server.workflows import WorkflowService
from tests.integration.scheduler_support import Rig, make_rig, use_case
from tests.integration.sqs import sqs_probe
from tests.integration.test_scheduler_processes import (
    _listeners,
    _new_leader,
    eventually,
    kill,
    leader,
    start_scheduler,
)

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {"work": use_case(f"{queue_prefix}-work", lease_seconds=2, max_attempts=1)}
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


def work(job_type: str, n: int) -> EnqueueRequest:
    return EnqueueRequest(use_case="work", job_type=job_type, payload={"n": n})


async def test_batch_callback_fires_once_across_a_failover(rig, db, database_url, sqs_endpoint):
    workflows = WorkflowService(rig.store, rig.service, clock=rig.store.clock)
    queue = rig.use_cases["work"].queue
    a = start_scheduler(rig, database_url, sqs_endpoint)
    b = None
    try:
        pid_a, _ = await eventually(lambda: leader(db))
        b = start_scheduler(rig, database_url, sqs_endpoint)
        await eventually(lambda: _listeners(db, 2), timeout=60)
        body = BatchCreateRequest(
            jobs=[work("part", n) for n in range(3)], callback=work("report", 0)
        )
        batch = await workflows.create_batch("acme", body)
        messages: list[JobMessage] = []

        async def taken(n: int) -> bool:
            messages.extend(await rig.probe.drain(queue))
            return len(messages) >= n

        await eventually(lambda: taken(3))
        assert await rig.complete(messages[:2]) == 2  # the third stays running
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        await eventually(lambda: _new_leader(db, pid_a), timeout=30)

        async def reported() -> bool:
            got = await rig.probe.drain(queue)
            messages.extend(got)
            return any(m.job_type == "report" for m in got)

        await eventually(reported, timeout=30)
        [callback] = [m for m in messages if m.job_type == "report"]
        finished = await rig.store.get_batch(batch.id, tenant="acme")
        assert finished is not None and callback.job_id == finished.callback_job_id
        assert callback.payload is not None and callback.payload["batch"]["counts"] == {
            "succeeded": 2,
            "dead": 1,
            "cancelled": 0,
            "expired": 0,
        }
        assert callback.payload["batch"]["failed_job_ids"] == [str(messages[2].job_id)]
        # the dead leader's stale report of the last job changes nothing, and stores nothing
        assert await rig.complete(messages[2:3]) == 0
        assert await rig.complete([callback]) == 1
        n = await db.fetchval("SELECT count(*) FROM jobs WHERE job_type = 'report'")
        assert n == 1
        assert [m for m in await rig.probe.drain(queue) if m.job_type == "report"] == []
    finally:
        kill(a)
        if b is not None:
            kill(b)
