"""Shared pieces of the scheduler tests: a store, a publisher and queues of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jobs_schema import (
    EnqueueRequest,
    FailureInfo,
    JobMessage,
    JobsConfig,
    OutcomeKind,
    OutcomeReport,
    UseCaseConfig,
)
from jobs_server.clock import Clock
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import Publisher, QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.scheduler import Pruner, Reaper, Scheduler, SchedulerConfig
from jobs_server.service import JobService
from jobs_server.store.base import JobStore
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wiring import build_scheduler
from tests.integration.sqs import SqsProbe


def use_case(queue: str, **overrides: Any) -> UseCaseConfig:
    values: dict[str, Any] = {
        "queue": queue,
        "capacity": 100,
        "default_delay_tolerance_seconds": 60,
        "max_attempts": 3,
        "timeout_seconds": 5,
        "lease_seconds": 30,
        "backoff": {"kind": "constant", "base_seconds": 1, "cap_seconds": 1, "jitter": 0},
    }
    values.update(overrides)
    return UseCaseConfig.model_validate(values)


@dataclass
class Rig:
    store: PostgresJobStore
    publisher: SqsPublisher
    probe: SqsProbe
    use_cases: dict[str, UseCaseConfig]
    service: JobService
    outcomes: OutcomeService

    def scheduler(
        self, *, store: JobStore | None = None, publisher: Publisher | None = None, **config: Any
    ) -> Scheduler:
        cfg = SchedulerConfig(**({"tick_seconds": 0.2, "leader_ttl_seconds": 60.0} | config))
        # a store of its own gets an outcome service of its own: the reaper goes through it
        outcomes = self.outcomes if store is None else OutcomeService(store, clock=store.clock)
        return build_scheduler(
            store or self.store,
            publisher or self.publisher,
            self.use_cases,
            outcomes=outcomes,
            clock=self.store.clock,
            config=cfg,
        )

    async def enqueue(self, tenant: str, use_case: str, n: int = 1, **fields: Any) -> list[str]:
        reqs = [
            EnqueueRequest.model_validate(
                {"use_case": use_case, "job_type": "t", "payload": {"i": i}} | fields
            )
            for i in range(n)
        ]
        ids: list[str] = []
        for start in range(0, n, 1000):
            resp = await self.service.enqueue_batch(tenant, reqs[start : start + 1000])
            ids += [str(r.job.id) for r in resp.results if r.job]
        return ids

    async def fail(self, messages: list[JobMessage]) -> int:
        """Report a retryable failure for each message; returns how many applied."""
        failure = FailureInfo(type="Boom", message="it broke")
        return await _report(self.outcomes, messages, OutcomeKind.FAILED, failure=failure)

    async def complete(self, messages: list[JobMessage]) -> int:
        """Report success for each message, as a worker would; returns how many applied."""
        return await complete(self.outcomes, messages)


async def complete(outcomes: OutcomeService, messages: list[JobMessage]) -> int:
    """Report success for each message (result `{"ok": true}`); how many applied."""
    return await _report(outcomes, messages, OutcomeKind.SUCCEEDED, result={"ok": True})


async def _report(
    outcomes: OutcomeService, messages: list[JobMessage], kind: OutcomeKind, **fields: Any
) -> int:
    if not messages:
        return 0
    acks = await outcomes.report(
        [
            OutcomeReport(
                job_id=m.job_id,
                attempt=m.attempt,
                lease_token=m.lease_token,
                outcome=kind,
                worker_id="test-worker",
                **fields,
            )
            for m in messages
        ]
    )
    return sum(a.applied for a in acks)


async def lead(sched: Scheduler) -> bool:
    """One turn of the elector: whether it holds the lease now."""
    return await sched.elector.run_once(sched.clock.now()) is not None


async def dispatch(sched: Scheduler) -> int:
    """One dispatch pass; how many jobs were published."""
    return (await sched.dispatcher.run_once(sched.clock.now())).sent


async def reap(sched: Scheduler) -> int:
    return (await sched.service(Reaper).run_once(sched.clock.now())).count


async def prune(sched: Scheduler) -> int:
    return (await sched.service(Pruner).run_once(sched.clock.now())).jobs


async def make_rig(
    database_url: str,
    sqs_url: str,
    probe: SqsProbe,
    use_cases: dict[str, UseCaseConfig],
    *,
    clock: Clock | None = None,
) -> AsyncIterator[Rig]:
    """`clock`: the store's and the services' (default: the database's)."""
    store = await PostgresJobStore.connect(database_url, min_size=1, max_size=6, clock=clock)
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=sqs_url)
    await publisher.ensure_queues([QueueSpec(uc.queue) for uc in use_cases.values()])
    service = JobService(
        store,
        JobsConfig(use_cases=use_cases),
        default_quota=None,
        max_payload_bytes=256 * 1024,
        clock=store.clock,
    )
    try:
        yield Rig(
            store, publisher, probe, use_cases, service, OutcomeService(store, clock=store.clock)
        )
    finally:
        await publisher.close()
        await store.close()
