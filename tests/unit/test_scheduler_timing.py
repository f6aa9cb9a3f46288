"""The scheduler loop's waits: a failed pass's backoff and a standby's election period."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest

from jobs_server.clock import ManualClock
from jobs_server.scheduler import Elector, Scheduler, SchedulerConfig
from jobs_server.store.base import JobStore


def scheduler(**config: Any) -> Scheduler:
    # the waits are pure: no store call is made
    store = cast(JobStore, object())
    cfg = SchedulerConfig(**config)
    return Scheduler(
        Elector(store, name=cfg.name, ttl_seconds=cfg.leader_ttl_seconds),
        cast(Any, object()),
        listener=store,
        clock=ManualClock(),
        config=cfg,
        rng=random.Random(7),
    )


def test_backoff_doubles_in_its_upper_half_up_to_the_cap():
    sched = scheduler(backoff_base_seconds=0.5, max_backoff_seconds=5.0)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (100, 5.0)]:
        waits = [sched.backoff(failures) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (failures, min(waits), max(waits))
        assert max(waits) - min(waits) > ceiling / 10  # jittered, not one value


@pytest.mark.parametrize("ttl", [1.5, 10.0, 60.0])
def test_a_standby_tries_once_per_third_of_the_ttl_jittered(ttl):
    sched = scheduler(leader_ttl_seconds=ttl, tick_seconds=0.2)
    periods = [sched.election_period() for _ in range(200)]
    assert all(0.9 * ttl / 3 <= p <= ttl / 3 for p in periods)
    assert len(set(periods)) > 1
    assert not sched.is_leader
    assert sched._delay() >= 0.9 * ttl / 3  # a standby does not wait on the tick
