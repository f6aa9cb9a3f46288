"""jobs_server.forecast: the pure math of feasibility, checked against brute force."""

from __future__ import annotations

import math

import pytest

from jobs_server.forecast import (
    ArrivalMeter,
    Arrivals,
    Backlog,
    by_horizon,
    drain_rate,
    expected_wait,
    expected_wait_with_arrivals,
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


# -- arrivals ahead of a job while it waits (fluid) -------------------------------------------


def _fluid_brute(need: float, rate: float, always: float, bins: list[tuple[float, float]]) -> float:
    """The first w (steps of 1 ms) with rate * w >= need + arrivals ahead by w."""
    w = 0.0
    while rate * w < need + always * w + sum(r * min(w, c) for r, c in bins) - 1e-9:
        w += 0.001
    return w


def test_wait_without_arrivals_is_the_plain_estimate() -> None:
    kw = {"free": 2, "rate": 4.0, "slack": 30.0, "priority": 0}
    assert expected_wait_with_arrivals(9, arrivals=None, **kw) == expected_wait(9, free=2, rate=4.0)
    empty = Arrivals({})
    assert expected_wait_with_arrivals(9, arrivals=empty, **kw) == 2.0
    assert expected_wait_with_arrivals(1, arrivals=Arrivals({5: ((100.0, 1.0),)}), **kw) == 0.0


def test_higher_classes_arriving_slow_the_drain() -> None:
    arrivals = Arrivals({1: ((1.0, 3.0), (1.0, 500.0))})  # 2/s of a higher class, any deadline
    wait = expected_wait_with_arrivals(
        9, free=1, rate=4.0, slack=30.0, arrivals=arrivals, priority=0
    )
    assert wait == pytest.approx(9 / (4.0 - 2.0))


def test_higher_classes_arriving_as_fast_as_the_drain_bound_the_wait_past_the_deadline() -> None:
    arrivals = Arrivals({1: ((5.0, 3.0),)})
    wait = expected_wait_with_arrivals(
        9, free=1, rate=4.0, slack=30.0, arrivals=arrivals, priority=0
    )
    assert wait == pytest.approx(30.0 + 9 / 4.0)  # at risk, and finite


@pytest.mark.parametrize("need", [3, 40, 200])
def test_own_class_arrivals_count_until_they_are_due_after_the_job(need: int) -> None:
    # Own class: 1/s due 5 s after arriving, 2/s due 20 s after; the job has 30 s left, so
    # they go ahead of it while they arrive within 25 s and 10 s. Lower classes never do;
    # arrivals with more time left than the job never do.
    arrivals = Arrivals({0: ((1.0, 5.0), (2.0, 20.0), (9.0, 45.0)), -1: ((50.0, 1.0),)})
    wait = expected_wait_with_arrivals(
        need, free=1, rate=4.0, slack=30.0, arrivals=arrivals, priority=0
    )
    assert wait == pytest.approx(_fluid_brute(need, 4.0, 0.0, [(1.0, 25.0), (2.0, 10.0)]), abs=0.01)


def test_own_and_higher_arrivals_together_match_the_brute_force() -> None:
    arrivals = Arrivals({2: ((1.5, 9.0),), 0: ((3.0, 2.0), (0.5, 12.0))})
    wait = expected_wait_with_arrivals(
        50, free=0, rate=4.0, slack=20.0, arrivals=arrivals, priority=0
    )
    brute = _fluid_brute(51, 4.0, 1.5, [(3.0, 18.0), (0.5, 8.0)])
    assert wait == pytest.approx(brute, abs=0.01)


def test_the_meter_measures_what_grew_by_time_left() -> None:
    meter = ArrivalMeter(seconds=10.0)
    assert meter.add(NOW, [B(0, int(NOW) + 30, 5)]) is None  # one read measures nothing
    measured = meter.add(
        NOW + 2, [B(0, int(NOW) + 30, 9), B(0, int(NOW) + 4, 6), B(3, int(NOW) + 500, 2)]
    )
    assert measured is not None
    # 4 more due in ~28 s, 6 new due in ~2 s (own class); 2 of class 3: over 2 s
    own = sorted(measured.rates[0], key=lambda x: x[1])
    assert own == [pytest.approx((3.0, 2.5)), pytest.approx((2.0, 28.5))]
    assert measured.rates[3] == (pytest.approx((1.0, 498.5)),)
    # a claim (a bucket that shrank) is not an arrival; old samples leave the window
    later = meter.add(NOW + 14, [B(0, int(NOW) + 30, 1)])
    assert later is not None and later.rates == {}
