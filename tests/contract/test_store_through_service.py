"""JobService's enqueue rules over each store: what the service builds on the store's
outcomes (a replay, a mismatch, a retried duplicate) comes out the same."""

from __future__ import annotations

import pytest

from jobs_schema import EnqueueRequest, JobsConfig, TenantConfig, UseCaseConfig
from jobs_server.errors import IdempotencyMismatch
from jobs_server.service import JobService
from tests.contract.conftest import StoreAndClock

CONFIG = JobsConfig(
    use_cases={"uc": UseCaseConfig(queue="uc")},
    tenants={"tiny": TenantConfig(max_active_jobs=1)},
)


@pytest.fixture
def service(store: StoreAndClock) -> JobService:
    impl, clock = store
    return JobService(impl, CONFIG, default_quota=None, max_payload_bytes=65_536, clock=clock)


def request(**overrides: object) -> EnqueueRequest:
    return EnqueueRequest.model_validate({"use_case": "uc", "job_type": "uc.run", **overrides})


async def test_an_idempotency_key_replays_its_first_answer(service: JobService) -> None:
    first = await service.enqueue("acme", request(), idempotency=("key-1", "hash-1"))
    again = await service.enqueue("acme", request(), idempotency=("key-1", "hash-1"))
    assert again.job.id == first.job.id and not again.deduplicated
    with pytest.raises(IdempotencyMismatch):
        await service.enqueue("acme", request(priority=5), idempotency=("key-1", "hash-2"))


async def test_a_duplicate_of_a_job_over_the_quota_ends_over_the_quota(
    service: JobService,
) -> None:
    """The store says RETRY for the duplicate; enqueued again alone, it is over the quota."""
    out = await service.enqueue_batch(
        "tiny", [request(), request(dedup_key="k"), request(dedup_key="k")]
    )
    assert out.results[0].job is not None
    assert [r.error.code.value if r.error else None for r in out.results] == [
        None,
        "quota_exceeded",
        "quota_exceeded",
    ]


async def test_a_duplicate_names_the_active_job(service: JobService) -> None:
    first = await service.enqueue("acme", request(dedup_key="k"))
    dup = await service.enqueue("acme", request(dedup_key="k", priority=9))
    assert dup.deduplicated and dup.job.id == first.job.id and dup.job.priority == 0
