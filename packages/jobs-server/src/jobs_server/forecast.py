"""The pure math of deadline feasibility: work ahead of a job in claim order, its expected
start, projected misses and the worker slots needed. No I/O and no clock: times are epoch
seconds passed in.

Claim order within a use case is strict priority classes (a higher `priority` is always
claimed first), earliest deadline first within a class. The backlog is pending jobs counted
per (priority, deadline second); a job in the same second as another counts it as ahead (ties
go by age, and the job asking is the newest).

Model. `free = capacity - running` slots take jobs at once. Past them, jobs start as slots
free up, at the drain rate `rate` (jobs per second): the job with `ahead` jobs before it starts
after `ahead - free + 1` slots have freed, at `now + (ahead - free + 1) / rate`. The rate is
`capacity / mean_duration` when a mean duration was observed (Little's law over the use case's
slots: it follows a capacity change at once), else the observed completions per second, else
`capacity / default_duration`.

Slots needed (for autoscaling): with S slots and every job taking `d` seconds, jobs start in
waves, one every `d` seconds, so by `D - now` seconds from now `S * (floor((D - now) / d) + 1)`
jobs have started. The job at position `w` in claim order (running jobs first: they hold their
slots for about one more wave) starts in time when `S * waves(D) >= w + 1`; the slots needed are
the most any future deadline asks for, and never fewer than the jobs running now. Far from the
deadline this is the fluid `ceil(work_ahead(D) * d / (D - now))`; close to it (less than one
duration away) it asks for a slot for each of those jobs at once, where the fluid formula would
divide by almost nothing. Overdue jobs ask for nothing: they are projected misses."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jobs_server.store.base import PendingBucket

__all__ = [
    "DISPLAY_HORIZONS",
    "Backlog",
    "Group",
    "by_horizon",
    "drain_rate",
    "expected_wait",
    "projected_misses",
    "slots_needed",
]

# The forecast's coarse buckets: seconds until the deadline, each up to (not including) its
# bound; overdue before them, "later" after.
DISPLAY_HORIZONS: tuple[tuple[str, float], ...] = (
    ("<10s", 10.0),
    ("<1min", 60.0),
    ("<10min", 600.0),
    ("<1h", 3600.0),
)


@dataclass(frozen=True, slots=True)
class Group:
    """Jobs of one priority and deadline second, with how many are claimed before them."""

    priority: int
    bucket: int
    n: int
    before: int


class Backlog:
    """A use case's pending jobs in claim order, with prefix sums: `ahead` is a bisection."""

    def __init__(self, buckets: Iterable[PendingBucket]) -> None:
        per_class: dict[int, dict[int, int]] = {}
        for b in buckets:
            if b.n > 0:
                cls = per_class.setdefault(b.priority, {})
                cls[b.bucket] = cls.get(b.bucket, 0) + b.n
        self._classes = sorted(per_class, reverse=True)  # highest priority first
        self._buckets: dict[int, list[int]] = {}
        self._cumulative: dict[int, list[int]] = {}  # jobs up to and including bucket i
        self._above: dict[int, int] = {}  # jobs of higher classes
        above = 0
        for p in self._classes:
            keys = sorted(per_class[p])
            sums, total = [], 0
            for k in keys:
                total += per_class[p][k]
                sums.append(total)
            self._buckets[p], self._cumulative[p], self._above[p] = keys, sums, above
            above += total
        self.total = above

    def ahead(self, priority: int, deadline: float) -> int:
        """Pending jobs claimed before a new job of `priority` due by `deadline` (epoch s)."""
        above = self._higher(priority)
        keys = self._buckets.get(priority)
        if not keys:
            return above
        i = bisect.bisect_right(keys, math.floor(deadline))
        return above + (self._cumulative[priority][i - 1] if i else 0)

    def _higher(self, priority: int) -> int:
        """Jobs in classes above `priority` (which may have no jobs of its own)."""
        for p in reversed(self._classes):  # lowest first
            if p > priority:
                return self._above[p] + self._cumulative[p][-1]
        return 0

    def groups(self) -> Iterator[Group]:
        """Every (priority, second) group in claim order."""
        for p in self._classes:
            before = self._above[p]
            for k, n in zip(self._buckets[p], _counts(self._cumulative[p]), strict=True):
                yield Group(p, k, n, before)
                before += n


def _counts(cumulative: list[int]) -> Iterator[int]:
    last = 0
    for c in cumulative:
        yield c - last
        last = c


def drain_rate(
    capacity: int,
    *,
    throughput: float | None,
    mean_duration: float | None,
    default_duration: float,
) -> float:
    """Jobs per second that leave the backlog while it lasts (see the module's docstring)."""
    if mean_duration is not None and mean_duration > 0:
        return capacity / mean_duration
    if throughput is not None and throughput > 0:
        return throughput
    return capacity / default_duration


def expected_wait(ahead: int, *, free: int, rate: float) -> float:
    """Seconds until a job with `ahead` jobs before it in claim order starts."""
    if ahead < free:
        return 0.0
    return (ahead - free + 1) / rate


def projected_misses(backlog: Backlog, *, now: float, free: int, rate: float) -> int:
    """Pending jobs that start after their deadline at `rate` (overdue ones included)."""
    return sum(_group_misses(g, now=now, free=free, rate=rate) for g in backlog.groups())


def _group_misses(g: Group, *, now: float, free: int, rate: float) -> int:
    """Positions k in [before, before + n) whose wait (k - free + 1) / rate (0 when k < free)
    passes the deadline: k > free - 1 + (deadline - now) * rate."""
    slack = g.bucket - now
    if slack < 0:
        return g.n
    last_in_time = math.floor(free - 1 + slack * rate)  # the last position that starts in time
    in_time = min(g.n, max(0, last_in_time - g.before + 1))
    return g.n - in_time


def slots_needed(
    backlog: Backlog, *, now: float, mean_duration: float, running: int, lead: float = 0.0
) -> int:
    """Slots for every pending job to start by its deadline (see the module's docstring).
    `lead`: seconds before slots asked for now can take jobs (an autoscaler's scale-out
    delay): the time they get is `deadline - now - lead`, and a job with less left than that
    (but not overdue) asks for a slot at once."""
    need = running
    for g in backlog.groups():
        slack = g.bucket - now
        if slack < 0:
            continue
        waves = math.floor(max(0.0, slack - lead) / mean_duration) + 1
        need = max(need, math.ceil((running + g.before + g.n) / waves))
    return need


def by_horizon(
    backlog: Backlog, *, now: float, free: int, rate: float
) -> list[tuple[str, int, int]]:
    """(label, pending, projected misses) per display bucket: overdue, the horizons, later."""
    labels = ["overdue", *(label for label, _ in DISPLAY_HORIZONS), "later"]
    bounds = [bound for _, bound in DISPLAY_HORIZONS]
    pending = dict.fromkeys(labels, 0)
    misses = dict.fromkeys(labels, 0)
    for g in backlog.groups():
        slack = g.bucket - now
        label = "overdue" if slack < 0 else labels[1 + bisect.bisect_right(bounds, slack)]
        pending[label] += g.n
        misses[label] += _group_misses(g, now=now, free=free, rate=rate)
    return [(label, pending[label], misses[label]) for label in labels]
