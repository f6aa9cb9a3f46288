"""jobs_server.forecast: the pure math of feasibility, checked against brute force."""

from __future__ import annotations

import math

import pytest

from jobs_server.forecast import (
    Backlog,
    by_horizon,
    drain_rate,
    expected_wait,
    projected_misses,
    slots_needed,
)
from jobs_server.store.base import PendingBucket as B

NOW = 1_000_000.0


def test_work_ahead_follows_strict_priority_then_deadline() -> None:
    backlog = Backlog([B(0, 1010, 3), B(0, 1020, 4), B(5, 5000, 2), B(-1, 900, 7)])
    assert backlog.total == 16
    assert backlog.ahead(5, 1.0) == 0  # nothing of its class before it, no higher class
    assert backlog.ahead(5, 5000.5) == 2  # the same second counts as ahead
    assert backlog.ahead(3, 0) == 2  # a class of no jobs: every higher class is ahead
    assert backlog.ahead(0, 1009.9) == 2
    assert backlog.ahead(0, 1010.0) == 5
    assert backlog.ahead(0, 99999) == 9
    assert backlog.ahead(-1, 0) == 9  # the lowest class waits for all the others
    assert backlog.ahead(-2, 0) == 16


def test_expected_wait_and_drain_rate() -> None:
    assert expected_wait(3, free=4, rate=2.0) == 0.0
    assert expected_wait(4, free=4, rate=2.0) == 0.5  # one slot must free first
    assert expected_wait(13, free=4, rate=2.0) == 5.0
    assert drain_rate(10, throughput=3.0, mean_duration=2.0, default_duration=1.0) == 5.0
    assert drain_rate(10, throughput=3.0, mean_duration=None, default_duration=1.0) == 3.0
    assert drain_rate(10, throughput=0.0, mean_duration=None, default_duration=4.0) == 2.5


def _brute_misses(groups: list[B], *, free: int, rate: float) -> int:
    """Each job in claim order, with its own start, against its deadline second."""
    order = sorted(groups, key=lambda g: (-g.priority, g.bucket))
    k, missed = 0, 0
    for g in order:
        for _ in range(g.n):
            missed += NOW + expected_wait(k, free=free, rate=rate) > g.bucket
            k += 1
    return missed


@pytest.mark.parametrize(("free", "rate"), [(0, 1.0), (3, 1.0), (5, 2.5), (0, 0.3), (20, 10.0)])
def test_projected_misses_match_brute_force(free: int, rate: float) -> None:
    groups = [B(0, int(NOW) + s, n) for s, n in [(-3, 2), (1, 4), (2, 3), (10, 9), (40, 30)]]
    groups += [B(2, int(NOW) + 5, 6)]
    got = projected_misses(Backlog(groups), now=NOW, free=free, rate=rate)
    assert got == _brute_misses(groups, free=free, rate=rate)
    rows = by_horizon(Backlog(groups), now=NOW, free=free, rate=rate)
    assert sum(m for _, _, m in rows) == got
    assert dict((h, n) for h, n, _ in rows) == {
        "overdue": 2,
        "<10s": 13,
        "<1min": 39,
        "<10min": 0,
        "<1h": 0,
        "later": 0,
    }


def _fewest_slots(groups: list[B], *, running: int, d: float) -> int:
    """The fewest slots S with which, starting S jobs every d seconds (running ones first),
    every job starts by its deadline second."""
    order = [
        g.bucket for g in sorted(groups, key=lambda g: (-g.priority, g.bucket)) for _ in range(g.n)
    ]
    for s in range(1, 10_000):
        ok = (
            all(NOW + ((running + k) // s) * d <= bucket for k, bucket in enumerate(order))
            and s >= running
        )
        if ok:
            return s
    raise AssertionError("no slot count is enough")


@pytest.mark.parametrize("d", [0.5, 1.0, 3.0, 7.0])
@pytest.mark.parametrize("running", [0, 4])
def test_slots_needed_is_the_fewest_that_meet_every_deadline(d: float, running: int) -> None:
    groups = [B(0, int(NOW) + s, n) for s, n in [(0, 3), (2, 5), (9, 20), (30, 50), (400, 9)]]
    groups += [B(1, int(NOW) + 60, 4)]
    need = slots_needed(Backlog(groups), now=NOW, mean_duration=d, running=running)
    assert need == _fewest_slots(groups, running=running, d=d)


def test_slots_needed_far_from_deadlines_is_the_fluid_rate() -> None:
    # 1,000 jobs due in 100 s taking 2 s each: 1000 * 2 / 100 = 20 slots (the fluid formula)
    need = slots_needed(
        Backlog([B(0, int(NOW) + 100, 1000)]), now=NOW, mean_duration=2.0, running=0
    )
    assert need == math.ceil(1000 / (100 // 2 + 1)) == 20
    # overdue jobs ask for nothing: they are misses
    assert slots_needed(Backlog([B(0, int(NOW) - 5, 50)]), now=NOW, mean_duration=1, running=3) == 3


def test_a_lead_counts_slots_as_arriving_later() -> None:
    backlog = Backlog([B(0, int(NOW) + 20, 100)])
    # 100 jobs due in 20 s, 1 s each: 5 slots now (21 waves), one each if slots take 30 s
    assert slots_needed(backlog, now=NOW, mean_duration=1.0, running=0) == 5
    assert slots_needed(backlog, now=NOW, mean_duration=1.0, running=0, lead=10) == 10
    assert slots_needed(backlog, now=NOW, mean_duration=1.0, running=0, lead=30) == 100
