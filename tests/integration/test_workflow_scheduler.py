"""A 1,000-job layered graph through the real dispatcher and outcome service on PostgreSQL:
enqueued in one request, every layer claimed and published only after the layer above it
succeeded. The publisher is the in-memory one (a thousand SQS round trips would only be
slower; SQS is in the path of test_workflows.py and bench/workflows.py)."""

from __future__ import annotations

from jobs_schema import (
    EnqueueRequest,
    JobMessage,
    JobsConfig,
    JobStatus,
    jobs_in_body,
)
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import SchedulerConfig
from jobs_server.service import JobService
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wiring import build_scheduler
from jobs_server.workflows import WorkflowService
from tests.integration.scheduler_support import complete, dispatch, lead, use_case

WIDTH, DEPTH = 100, 10


def node(n: int, parents: list[int]) -> EnqueueRequest:
    return EnqueueRequest(
        use_case="work",
        job_type="t",
        payload={"n": n},
        ref=f"n{n}",
        depends_on=[f"n{p}" for p in parents] or None,
    )


async def test_a_thousand_node_graph_runs_layer_by_layer(database_url):
    store = await PostgresJobStore.connect(database_url, min_size=1, max_size=4)
    try:
        use_cases = {"work": use_case("work-queue", capacity=1000)}
        config = JobsConfig(use_cases=use_cases)
        service = JobService(
            store, config, default_quota=None, max_payload_bytes=256 * 1024, clock=store.clock
        )
        workflows = WorkflowService(store, service, clock=store.clock)
        outcomes = OutcomeService(store, clock=store.clock)
        publisher = InMemoryPublisher()
        sched = build_scheduler(
            store,
            publisher,
            use_cases,
            outcomes=outcomes,
            clock=store.clock,
            config=SchedulerConfig(tick_seconds=0.2, leader_ttl_seconds=60.0, claim_batch=1000),
        )
        graph = [
            node(
                layer * WIDTH + i,
                []
                if layer == 0
                else [(layer - 1) * WIDTH + i, (layer - 1) * WIDTH + (i + 1) % WIDTH],
            )
            for layer in range(DEPTH)
            for i in range(WIDTH)
        ]
        made = await workflows.enqueue_batch("acme", graph)
        assert len(made.results) == 1000
        assert await lead(sched)
        for layer in range(DEPTH):
            sent = 0
            while sent < WIDTH:
                got = await dispatch(sched)
                assert got > 0, f"layer {layer}: only {sent} of {WIDTH} dispatched"
                sent += got
            messages: list[JobMessage] = [
                m for body in publisher.sent.pop("work-queue", []) for m in jobs_in_body(body)
            ]
            assert sorted(m.payload["n"] // WIDTH for m in messages if m.payload) == [layer] * WIDTH
            assert await complete(outcomes, messages) == WIDTH
        assert await dispatch(sched) == 0
        jobs = await store.get_jobs([r.job.id for r in made.results if r.job])
        assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
    finally:
        await store.close()
