"""The store contract of pruning flow-control state: rate_buckets rows whose starts no claim
counts any more, swept in bounded steps, and pause history past its retention."""

from __future__ import annotations

from datetime import timedelta

from jobs_schema import RateLimit
from jobs_server.store.base import LeaderLease, RateBucketSweep
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, store_jobs

LIMIT = RateLimit(starts=5, per_seconds=10)


async def test_rate_buckets_go_once_their_newest_start_leaves_the_window(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    t0 = clock.now()
    await store_jobs(impl, [make_job(rate_key=k) for k in ("a", "b", "c")])
    await store_jobs(impl, [make_job(use_case="other", rate_key="x")])
    await claim(impl, leader, rate_limit=LIMIT)
    await claim(impl, leader, use_case="other", rate_limit=LIMIT)
    clock.advance(5)
    await store_jobs(impl, [make_job(rate_key="b")])
    await claim(impl, leader, rate_limit=LIMIT)  # b starts again at t0 + 5
    clock.advance(5)  # t0 + 10: a's and c's starts are a window old; b's newest is not

    async def sweep(after: tuple[str, str] | None) -> RateBucketSweep:
        return await impl.prune_rate_buckets(
            {"uc": 10.0}, default_window_seconds=60, after=after, limit=2
        )

    # in key order, two rows a step: (other, x) is kept for the default window, a minute
    assert await sweep(None) == RateBucketSweep(1, ("uc", "a"))
    assert await sweep(("uc", "a")) == RateBucketSweep(1, ("uc", "c"))
    assert await sweep(("uc", "c")) == RateBucketSweep(0, None)  # the end
    buckets = await impl.list_rate_buckets("uc", per_seconds=10, limit=10)
    assert [(b.rate_key, b.starts) for b in buckets] == [("b", ((t0 + timedelta(seconds=5), 1),))]
    assert [b.rate_key for b in await impl.list_rate_buckets("other", per_seconds=60, limit=10)]
    clock.advance(50)  # t0 + 60
    assert await sweep(None) == RateBucketSweep(2, ("uc", "b"))  # a full step: maybe more
    assert await impl.list_rate_buckets("other", per_seconds=86_400, limit=10) == []
    assert await impl.list_rate_buckets("uc", per_seconds=86_400, limit=10) == []
    # a pruned key starts over: its next claim writes a new row
    await store_jobs(impl, [make_job(rate_key="a")])
    assert len(await claim(impl, leader, rate_limit=LIMIT)) == 1
    [bucket] = await impl.list_rate_buckets("uc", per_seconds=10, limit=10)
    assert (bucket.rate_key, bucket.starts) == ("a", ((clock.now(), 1),))


async def test_pause_history_goes_past_its_retention_the_oldest_first(
    store: StoreAndClock,
) -> None:
    impl, clock = store
    await impl.pause_queue("uc", "", principal="admin", reason="one")
    clock.advance(10)
    await impl.resume_queue("uc", "", principal="admin", reason="two")
    clock.advance(10)
    await impl.pause_queue("uc", "", principal="admin", reason="three")
    clock.advance(10)
    assert await impl.prune_pause_history(older_than_seconds=100, limit=10) == 0
    # older than 15 s: the first two; one a batch
    assert await impl.prune_pause_history(older_than_seconds=15, limit=1) == 1
    assert await impl.prune_pause_history(older_than_seconds=15, limit=10) == 1
    assert [p.reason for p in await impl.list_pause_history(limit=10)] == ["three"]
    clock.advance(3600)
    assert await impl.prune_pause_history(older_than_seconds=60, limit=10) == 1
    assert await impl.list_pause_history(limit=10) == []
    # the scope's state is not history: it stays paused
    assert [(p.use_case, p.paused, p.reason) for p in await impl.list_pauses()] == [
        ("uc", True, "three")
    ]
