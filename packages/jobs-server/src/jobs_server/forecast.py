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
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jobs_server.store.base import PendingBucket

__all__ = [
    "DISPLAY_HORIZONS",
    "ArrivalMeter",
    "Arrivals",
    "Backlog",
    "Group",
    "by_horizon",
    "drain_rate",
    "expected_wait",
    "expected_wait_with_arrivals",
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


# Bins of time left to the deadline at arrival (seconds, each up to its bound) for measuring
# the rate of arrivals that will be claimed before a given job.
ARRIVAL_HORIZONS: tuple[float, ...] = (
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    math.inf,
)


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Measured arrival rates of one use case: per priority, per bin of ARRIVAL_HORIZONS,
    (jobs per second, mean seconds from arrival to deadline), over the last `horizon`
    seconds. They are taken to hold for as long again, no longer: a one-off batch is not
    extrapolated over a long wait."""

    rates: dict[int, tuple[tuple[float, float], ...]]
    horizon: float = math.inf

    def ahead(self, priority: int, slack: float) -> list[tuple[float, float]]:
        """For a job of `priority` with `slack` seconds to its deadline: (rate, c) for each
        stream of arrivals claimed before it while they arrive within the next `c` seconds:
        higher classes whatever their deadline, its own class while due before it
        (`slack - time to their deadline`), both for at most `horizon` seconds."""
        out: list[tuple[float, float]] = []
        for p, bins in self.rates.items():
            if p > priority:
                out += [(rate, self.horizon) for rate, _ in bins if rate > 0]
            elif p == priority:
                out += [
                    (rate, min(slack - h, self.horizon))
                    for rate, h in bins
                    if rate > 0 and slack > h
                ]
        return out


class ArrivalMeter:
    """Measures Arrivals from successive backlogs of one use case: what grew in a (priority,
    deadline second) between two reads arrived meanwhile (claims in the same second net some
    of it out: an undercount), binned by its time to the deadline, over the last `seconds`."""

    def __init__(self, seconds: float = 60.0) -> None:
        self._seconds = seconds
        self._last: dict[tuple[int, int], int] | None = None
        self._samples: deque[tuple[float, dict[tuple[int, int], tuple[int, float]]]] = deque()
        self._start: float | None = None

    def add(self, now: float, buckets: Iterable[PendingBucket]) -> Arrivals | None:
        """Take a new read at `now` (epoch s); the rates so far (None before two reads)."""
        counts = {(b.priority, b.bucket): b.n for b in buckets}
        last, self._last = self._last, counts
        if last is None:
            self._start = now
            return None
        grown: dict[tuple[int, int], tuple[int, float]] = {}
        for key, n in counts.items():
            more = n - last.get(key, 0)
            if more > 0:
                p, bucket = key
                left = max(0.0, bucket + 0.5 - now)
                k = (p, bisect.bisect_left(ARRIVAL_HORIZONS, left))
                c, h = grown.get(k, (0, 0.0))
                grown[k] = (c + more, h + more * left)
        self._samples.append((now, grown))
        while self._samples and self._samples[0][0] <= now - self._seconds:
            self._start = self._samples.popleft()[0]
        assert self._start is not None
        span = now - self._start
        if span <= 0:
            return None
        totals: dict[tuple[int, int], tuple[int, float]] = {}
        for _, sample in self._samples:
            for k, (c, h) in sample.items():
                c0, h0 = totals.get(k, (0, 0.0))
                totals[k] = (c0 + c, h0 + h)
        rates: dict[int, list[tuple[float, float]]] = {}
        for (p, _), (c, h) in sorted(totals.items()):
            rates.setdefault(p, []).append((c / span, h / c))
        return Arrivals({p: tuple(v) for p, v in rates.items()}, horizon=span)


def expected_wait_with_arrivals(
    ahead: int,
    *,
    free: int,
    rate: float,
    slack: float,
    arrivals: Arrivals | None,
    priority: int,
) -> float:
    """Seconds until a job starts, counting the jobs that arrive while it waits and go ahead
    of it (fluid): it starts at the first `w` with `rate * w = ahead - free + 1 + A(w)`, where
    `A(w) = sum(rate_i * min(w, c_i))` is the arrivals ahead of it by then (see
    Arrivals.ahead). `rate * w - A(w)` is piecewise linear, its slope `rate - sum(rate_i)`
    over the streams still arriving ahead: a few breakpoints to walk. When arrivals ahead
    outrun the drain for the whole of an unbounded horizon, the job waits until its deadline
    and as long again as without them (at risk: a bound, not a prediction)."""
    if ahead < free:
        return 0.0
    need = ahead - free + 1
    streams = [] if arrivals is None else arrivals.ahead(priority, slack)
    if not streams:
        return need / rate
    streams.sort(key=lambda x: x[1])
    slope = rate - sum(r for r, _ in streams)
    w, g = 0.0, 0.0
    for r_i, c_i in streams:
        if math.isinf(c_i):
            break
        if slope > 0 and g + slope * (c_i - w) >= need:
            return w + (need - g) / slope
        g += slope * (c_i - w)
        w = c_i
        slope += r_i
    if slope > 0:
        return w + (need - g) / slope
    return max(slack, w) + need / rate


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
