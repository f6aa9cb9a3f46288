"""Autoscaling on `jobs_worker_slots_needed` against target tracking on backlog per worker,
at matched cost.

    uv run python bench/autoscale.py            # pure Python, deterministic, about a minute

A simulation, not a measurement of the system: one use case, one worker slot per task, the
same load trace for every policy, a step of one second. The scheduler starts pending jobs
earliest deadline first on the idle tasks. The autoscaler behaves like ECS service target
tracking (Application Auto Scaling):

- every `--period` seconds (10) it computes a desired count from the policy's metric;
- scale-out: to the desired count at once, then no further scale-out for `--out-cooldown`
  seconds (60); a new task takes jobs `--start-min`..`--start-max` seconds after launch
  (30-60, uniform: image pull, boot, first poll);
- scale-in: only once the desired count has stayed below the running count for
  `--in-cooldown` seconds (300), then to the highest desired count of that window but by at
  most `--in-fraction` (25%) of the tasks, then no scale-in for another `--in-cooldown`
  seconds; idle tasks stop first, a busy one finishes its job first;
- at least 1 task, at most `--max-workers`; every task is billed for every second from
  launch to stop, busy or idle (Fargate).

Policies (desired count):

  slots:      jobs_server.forecast.slots_needed (what the leader exports as
              jobs_worker_slots_needed) from the pending backlog per deadline second, the
              running jobs and the mean duration observed so far, with the scale-out delay as
              its lead (JOBS_FEASIBILITY_SCALE_OUT_SECONDS); swept over a headroom factor
              (desired = ceil(h * slots));
  backlog/T:  ceil(pending / T), target tracking on backlog per task, swept over T;
  max(slots, backlog/T): both, the larger, swept over T (and the same with slots x1.25).

A headroom h is what target tracking on the metric slots_needed / tasks does with a target
value of 1 / h (0.8 for h = 1.25).

The trace makes urgency and backlog size disagree: a steady trickle (2 jobs/s due in 10 min),
every 30 min a batch of 20,000 jobs due in 2 h (a big backlog that needs few extra tasks), and
about every 10 min (exponential gaps) a burst of 1,500 jobs over 10 s due in 2-3 min (a small
backlog that needs many tasks at once). Jobs take 1-3 s. Three seeds; printed per policy:
deadline misses (jobs started after their deadline) and task-hours, medians over the seeds,
then the frontier: for each policy family, the fewest misses reached within a task-hours
budget.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs_server.forecast import Backlog, slots_needed
from jobs_server.store.base import PendingBucket

STEP = 1.0


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    deadline: float
    duration: float


def trace(seed: int, *, seconds: float) -> list[Arrival]:
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = 0.0
    while t < seconds:
        t += rng.expovariate(2.0)
        out.append(Arrival(t, t + 600, rng.uniform(1, 3)))
    for start in range(300, int(seconds), 1800):
        out += [Arrival(start, start + 7200, rng.uniform(1, 3)) for _ in range(20_000)]
    t = rng.expovariate(1 / 600)
    while t < seconds:
        slack = rng.uniform(120, 180)
        for _ in range(1500):
            at = t + rng.uniform(0, 10)
            out.append(Arrival(at, at + slack, rng.uniform(1, 3)))
        t += rng.expovariate(1 / 600)
    return sorted(out, key=lambda a: a.at)


@dataclass
class Scaler:
    out_cooldown: float
    in_cooldown: float
    in_fraction: float
    start_min: float
    start_max: float
    max_workers: int
    rng: random.Random
    last_out: float = -1e9
    last_in: float = -1e9
    low_since: float | None = None
    window: deque[tuple[float, int]] = field(default_factory=deque)


@dataclass
class World:
    workers: int = 1  # tasks taking jobs
    launching: list[float] = field(default_factory=list)  # ready-at times (heap)
    pending: list[tuple[float, int, Arrival]] = field(default_factory=list)  # EDF heap
    running: list[float] = field(default_factory=list)  # end times (heap)
    misses: int = 0
    task_seconds: float = 0.0
    ended: int = 0
    busy: float = 0.0
    peak: int = 1

    @property
    def tasks(self) -> int:
        """Tasks billed: taking jobs, launching, or stopping after their job."""
        return max(self.workers, len(self.running)) + len(self.launching)


Policy = Callable[[World, float], float]


def slots_policy(lead: float, headroom: float = 1.0) -> Policy:
    def desired(world: World, now: float) -> float:
        mean = world.busy / world.ended if world.ended else 2.0
        buckets = Counter(math.floor(d) for d, _, _ in world.pending)
        backlog = Backlog(PendingBucket(0, b, n) for b, n in buckets.items())
        need = slots_needed(
            backlog, now=now, mean_duration=mean, running=len(world.running), lead=lead
        )
        return headroom * need

    return desired


def backlog_policy(target: float) -> Policy:
    def desired(world: World, now: float) -> float:
        return len(world.pending) / target

    return desired


def combined(*policies: Policy) -> Policy:
    def desired(world: World, now: float) -> float:
        return max(p(world, now) for p in policies)

    return desired


def simulate(arrivals: list[Arrival], policy: Policy, scaler: Scaler, *, period: float) -> World:
    w = World()
    i, now, seq = 0, 0.0, 0
    last = arrivals[-1].at
    next_decision = 0.0
    while now <= last or w.pending or w.running:  # until every job has run
        while i < len(arrivals) and arrivals[i].at <= now:
            heapq.heappush(w.pending, (arrivals[i].deadline, seq, arrivals[i]))
            i, seq = i + 1, seq + 1
        while w.running and w.running[0] <= now:
            heapq.heappop(w.running)
        while w.launching and w.launching[0] <= now:
            heapq.heappop(w.launching)
            w.workers += 1
        if now >= next_decision:
            want = min(scaler.max_workers, max(1, math.ceil(policy(w, now) - 1e-9)))
            _decide(w, scaler, want, now)
            next_decision = now + period
        while w.pending and len(w.running) < w.workers:
            deadline, _, job = heapq.heappop(w.pending)
            w.misses += now > deadline
            heapq.heappush(w.running, now + job.duration)
            w.ended, w.busy = w.ended + 1, w.busy + job.duration
        w.task_seconds += w.tasks * STEP
        w.peak = max(w.peak, w.tasks)
        now += STEP
    return w


def _decide(w: World, s: Scaler, desired: int, now: float) -> None:
    current = w.workers + len(w.launching)
    s.window.append((now, desired))
    while s.window and s.window[0][0] < now - s.in_cooldown:
        s.window.popleft()
    if desired > current:
        s.low_since = None
        if now - s.last_out >= s.out_cooldown:
            for _ in range(desired - current):
                heapq.heappush(w.launching, now + s.rng.uniform(s.start_min, s.start_max))
            s.last_out = now
        return
    if desired == current:
        s.low_since = None
        return
    if s.low_since is None:
        s.low_since = now
    if now - s.low_since < s.in_cooldown or now - s.last_in < s.in_cooldown:
        return
    floor = max(d for _, d in s.window)
    target = max(1, floor, current - math.ceil(s.in_fraction * current))
    if target >= current:
        return
    drop = current - target
    while drop and w.launching:  # cancel launches first (billed only while they lasted)
        heapq.heappop(w.launching)
        drop -= 1
    w.workers -= drop  # idle ones stop now; busy ones finish their job first (World.tasks)
    s.last_in = now


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--period", type=float, default=10, help="seconds between decisions")
    ap.add_argument("--out-cooldown", type=float, default=60)
    ap.add_argument("--in-cooldown", type=float, default=300)
    ap.add_argument("--in-fraction", type=float, default=0.25)
    ap.add_argument("--start-min", type=float, default=30)
    ap.add_argument("--start-max", type=float, default=60)
    ap.add_argument("--max-workers", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    lead = args.start_max
    families: dict[str, dict[str, Policy]] = {"slots": {}, "backlog": {}, "max": {}, "max1.25": {}}
    for h in (1.0, 1.1, 1.25, 1.5, 2.0):
        families["slots"][f"slots x{h:g}"] = slots_policy(lead, h)
    for target in (25, 100, 250, 500, 1000, 2000, 5000):
        families["backlog"][f"backlog/{target}"] = backlog_policy(target)
        families["max"][f"max(slots, backlog/{target})"] = combined(
            slots_policy(lead), backlog_policy(target)
        )
        families["max1.25"][f"max(slots x1.25, backlog/{target})"] = combined(
            slots_policy(lead, 1.25), backlog_policy(target)
        )
    results: dict[str, tuple[float, float, float]] = {}
    jobs = 0
    for family in families.values():
        for name, policy in family.items():
            misses, hours, peaks = [], [], []
            for seed in range(1, args.seeds + 1):
                arrivals = trace(seed, seconds=args.seconds)
                jobs = len(arrivals)
                scaler = Scaler(
                    args.out_cooldown,
                    args.in_cooldown,
                    args.in_fraction,
                    args.start_min,
                    args.start_max,
                    args.max_workers,
                    random.Random(seed),
                )
                w = simulate(arrivals, policy, scaler, period=args.period)
                misses.append(float(w.misses))
                hours.append(w.task_seconds / 3600)
                peaks.append(float(w.peak))
            results[name] = (
                statistics.median(misses),
                statistics.median(hours),
                statistics.median(peaks),
            )
            m, h, p = results[name]
            print(f"{name:>28}: misses {m:7,.0f}  task-hours {h:7.2f}  peak tasks {p:4.0f}")
    print(
        f"trace: {args.seconds:.0f} s, ~{jobs:,} jobs (2/s due in 10 min; 20,000 due in 2 h "
        f"every 30 min; bursts of 1,500 due in 2-3 min about every 10 min), 1-3 s each; "
        f"decisions every {args.period:.0f} s, scale-out cooldown {args.out_cooldown:.0f} s, "
        f"start {args.start_min:.0f}-{args.start_max:.0f} s, scale-in after "
        f"{args.in_cooldown:.0f} s low by at most {args.in_fraction:.0%}, lead {lead:.0f} s, "
        f"1-{args.max_workers} tasks; medians of {args.seeds} seeds"
    )
    print("frontier (no other point of the family is both cheaper and misses fewer):")
    for fam, members in families.items():
        points = sorted((results[n][1], results[n][0], n) for n in members)
        best, row = math.inf, []
        for hours, misses, name in points:
            if misses < best:
                best = misses
                row.append(f"{hours:.1f} h: {misses:,.0f} ({name})")
        print(f"{fam:>8}: " + "; ".join(row))


if __name__ == "__main__":
    main()
