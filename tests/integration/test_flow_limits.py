"""Flow limits through the scheduler on PostgreSQL and SQS, on a ManualClock: a rate limit that
holds in every interval while leadership moves between two schedulers, and a concurrency key
whose backlog does not hold up another key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from jobs_server.clock import ManualClock
from jobs_server.store.postgres import PostgresJobStore
from tests.integration.scheduler_support import Rig, dispatch, lead, make_rig, use_case
from tests.integration.sqs import sqs_probe

TTL = 3.0
STEP = 0.23  # seconds of the clock between passes: does not divide a second


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix, clock) -> AsyncIterator[Rig]:
    use_cases = {
        "rated": use_case(
            f"{queue_prefix}-rated",
            capacity=5000,
            rate_limit={"starts": 10, "per_seconds": 1},
        ),
        "keyed": use_case(f"{queue_prefix}-keyed", capacity=100, concurrency_limit_per_key=2),
    }
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases, clock=clock):
            yield r


async def test_a_rate_limit_holds_in_every_second_across_two_schedulers(
    rig: Rig, clock: ManualClock, database_url: str
) -> None:
    await rig.enqueue("acme", "rated", 1000, rate_key="account-1")
    other_store = await PostgresJobStore.connect(database_url, min_size=1, max_size=2, clock=clock)
    schedulers = [
        rig.scheduler(leader_ttl_seconds=TTL, claim_batch=4),
        rig.scheduler(store=other_store, leader_ttl_seconds=TTL, claim_batch=4),
    ]
    starts: list[tuple[datetime, int]] = []
    by_scheduler = [0, 0]
    down: int | None = None  # a scheduler that has stopped without resigning
    down_until = clock.now()
    try:
        for step in range(1, 1600):
            clock.advance(STEP)
            if down is not None and clock.now() >= down_until:
                down = None
            for i, sched in enumerate(schedulers):
                if i == down:
                    continue
                await lead(sched)
                sent = await dispatch(sched)
                if sent:
                    starts.append((clock.now(), sent))
                    by_scheduler[i] += sent
            if step % 45 == 0:  # every ~10 s, the leader goes: by turns resigning or stopping
                leading = next(i for i, s in enumerate(schedulers) if s.elector.lease)
                if step % 90 == 0:
                    await schedulers[leading].elector.resign()
                else:
                    down, down_until = leading, clock.now() + timedelta(seconds=TTL + 1)
            if sum(by_scheduler) == 1000:
                break
    finally:
        await other_store.close()
    assert sum(by_scheduler) == 1000
    assert min(by_scheduler) > 0, "leadership never moved"
    second = timedelta(seconds=1)
    windows = [sum(n for t, n in starts if start <= t < start + second) for start, _ in starts]
    assert max(windows) == 10
    # 1,000 starts at 10 a second, with the takeovers' gaps
    assert starts[-1][0] - starts[0][0] >= timedelta(seconds=99)
    assert len(await rig.probe.drain(rig.use_cases["rated"].queue)) == 1000


async def test_a_concurrency_key_runs_at_most_k_and_does_not_delay_another_key(
    rig: Rig, clock: ManualClock
) -> None:
    # the hot key's jobs all come first in deadline order
    hot = set(await rig.enqueue("acme", "keyed", 100, concurrency_key="hot"))
    clock.advance(1)
    cold = set(await rig.enqueue("acme", "keyed", 6, concurrency_key="cold"))
    plain = set(await rig.enqueue("acme", "keyed", 3))
    sched = rig.scheduler(claim_batch=5)
    assert await lead(sched)
    queue = rig.use_cases["keyed"].queue
    running: dict[str, list[object]] = {"hot": [], "cold": []}
    finished_at: dict[str, int] = {}
    for step in range(200):
        await dispatch(sched)
        got = await rig.probe.drain(queue)
        for m in got:
            key = "hot" if str(m.job_id) in hot else "cold" if str(m.job_id) in cold else None
            if key is None:
                assert str(m.job_id) in plain
                finished_at.setdefault("plain", step)
                await rig.complete([m])
            else:
                running[key].append(m)
        assert len(running["hot"]) <= 2 and len(running["cold"]) <= 2
        if step == 0:  # the first pass already starts the other key's jobs and the keyless
            assert len(running["hot"]) == 2 and len(running["cold"]) == 2
            assert finished_at.get("plain") == 0
        for key in ("hot", "cold"):  # a worker ends one attempt of each key per step
            if running[key]:
                await rig.complete([running[key].pop(0)])  # type: ignore[list-item]
            elif key not in finished_at:
                finished_at[key] = step
        clock.advance(STEP)
        if len(finished_at) == 3:
            break
    # cold's six jobs ran beside hot's backlog, one ending a step: done by step 6, not 100
    assert finished_at["cold"] == 6
    assert finished_at["hot"] == 100
