"""Autoscaling on `jobs_worker_slots_needed` against target tracking on backlog per worker.

    uv run python bench/autoscale.py            # pure Python, deterministic, a few seconds

A simulation, not a measurement of the system: one use case, one worker slot per worker, a
load trace of steady jobs with a long deadline and bursts of short-deadline jobs, the same for
every policy. Each step (0.5 s) the scheduler starts pending jobs earliest deadline first on
the free slots; every `--period` seconds the autoscaler sets a desired worker count, reached
after `--delay` seconds when it grows (at once when it shrinks), within 1..`--max-workers`:

  slots:    desired = worker_slots_needed, computed by jobs_server.forecast.slots_needed from
            the pending backlog (per deadline second), the running jobs and the mean duration
            observed so far (what the leader exports);
  backlog:  desired = ceil(pending / target_per_worker), CloudWatch target tracking on a
            backlog-per-worker metric, for a few targets.

Printed per policy: deadline misses (jobs started after their deadline), worker-hours paid
and the peak worker count, median / min / max over three seeds of the trace, and each
policy's misses as a ratio to those of slots_needed (with the scale-out delay as its lead).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs_server.forecast import Backlog, slots_needed
from jobs_server.store.base import PendingBucket

STEP = 0.5


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    deadline: float
    duration: float


def trace(seed: int, *, seconds: float) -> list[Arrival]:
    """Steady 20 jobs/s due within 120 s; every 150 s a burst of 800 jobs due within 20-40 s;
    every 300 s a batch of 10,000 jobs due within 30 min. Durations 1-3 s (mean 2 s)."""
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = 0.0
    while t < seconds:
        t += rng.expovariate(20.0)
        out.append(Arrival(t, t + 120, rng.uniform(1, 3)))
    for start in range(60, int(seconds) - 60, 150):
        for _ in range(800):
            at = start + rng.uniform(0, 5)
            out.append(Arrival(at, at + rng.uniform(20, 40), rng.uniform(1, 3)))
    for start in range(100, int(seconds) - 60, 300):
        out += [Arrival(start, start + 1800, rng.uniform(1, 3)) for _ in range(10_000)]
    return sorted(out, key=lambda a: a.at)


@dataclass
class World:
    workers: int = 2
    pending: list[tuple[float, int, Arrival]] = field(default_factory=list)  # EDF heap
    running: list[float] = field(default_factory=list)  # end times
    planned: list[tuple[float, int]] = field(default_factory=list)  # (ready at, workers)
    misses: int = 0
    worker_seconds: float = 0.0
    ended: int = 0
    busy: float = 0.0
    peak: int = 0


Policy = Callable[[World, float], int]


def slots_policy(lead: float) -> Policy:
    def desired(world: World, now: float) -> int:
        mean = world.busy / world.ended if world.ended else 2.0
        buckets = Counter(math.floor(d) for d, _, _ in world.pending)
        backlog = Backlog(PendingBucket(0, b, n) for b, n in buckets.items())
        running = len(world.running)
        return slots_needed(backlog, now=now, mean_duration=mean, running=running, lead=lead)

    return desired


def backlog_policy(target: int) -> Policy:
    def desired(world: World, now: float) -> int:
        return math.ceil(len(world.pending) / target)

    return desired


def combined(*policies: Policy) -> Policy:
    def desired(world: World, now: float) -> int:
        return max(p(world, now) for p in policies)

    return desired


def simulate(
    arrivals: list[Arrival], policy: Policy, *, period: float, delay: float, max_workers: int
) -> World:
    w = World()
    i, now, seq = 0, 0.0, 0
    last = arrivals[-1].at
    next_decision = 0.0
    while now <= last or w.pending or w.running:  # until every job has run
        while i < len(arrivals) and arrivals[i].at <= now:
            heapq.heappush(w.pending, (arrivals[i].deadline, seq, arrivals[i]))
            i, seq = i + 1, seq + 1
        for ends in [e for e in w.running if e <= now]:
            w.running.remove(ends)
        w.workers += sum(n for at, n in w.planned if at <= now)
        w.planned = [(at, n) for at, n in w.planned if at > now]
        if now >= next_decision:
            _decide(w, min(max_workers, max(1, policy(w, now))), now, delay)
            next_decision = now + period
        while w.pending and len(w.running) < w.workers:
            deadline, _, job = heapq.heappop(w.pending)
            w.misses += now > deadline
            w.running.append(now + job.duration)
            w.ended, w.busy = w.ended + 1, w.busy + job.duration
        w.worker_seconds += w.workers * STEP
        w.peak = max(w.peak, w.workers)
        now += STEP
    return w


def _decide(w: World, desired: int, now: float, delay: float) -> None:
    coming = w.workers + sum(n for _, n in w.planned)
    if desired > coming:
        w.planned.append((now + delay, desired - coming))
    elif desired < w.workers:  # scale in at once (a stopping worker finishes its job)
        w.workers, w.planned = desired, []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=900)
    ap.add_argument("--period", type=float, default=10, help="seconds between decisions")
    ap.add_argument("--delay", type=float, default=30, help="scale-out delay, seconds")
    ap.add_argument("--max-workers", type=int, default=400)
    args = ap.parse_args()
    policies: dict[str, Policy] = {
        "slots_needed": slots_policy(args.delay),
        "slots_needed lead=0": slots_policy(0.0),
    }
    for target in (5, 20, 50):
        policies[f"backlog/worker={target}"] = backlog_policy(target)
    for target in (20, 50):
        policies[f"max(slots, backlog/{target})"] = combined(
            slots_policy(args.delay), backlog_policy(target)
        )
    runs: dict[str, list[World]] = {name: [] for name in policies}
    jobs = 0
    for seed in (1, 2, 3):
        arrivals = trace(seed, seconds=args.seconds)
        jobs = len(arrivals)
        for name, policy in policies.items():
            runs[name].append(
                simulate(
                    arrivals,
                    policy,
                    period=args.period,
                    delay=args.delay,
                    max_workers=args.max_workers,
                )
            )
    print(
        f"trace: {args.seconds:.0f} s, ~{jobs:,} jobs (steady 20/s due in 120 s, bursts of 800 "
        f"due in 20-40 s every 150 s, batches of 10,000 due in 30 min every 300 s), 1-3 s "
        f"each, run until all ran; decisions every {args.period:.0f} s, "
        f"scale-out delay {args.delay:.0f} s, max {args.max_workers} workers; 3 seeds"
    )
    base = [w.misses for w in runs["slots_needed"]]
    for name, worlds in runs.items():
        misses = [float(w.misses) for w in worlds]
        cost = [w.worker_seconds / 3600 for w in worlds]
        peak = [float(w.peak) for w in worlds]
        ratio = [m / max(1, b) for m, b in zip(misses, base, strict=True)]
        print(
            f"{name:>22}: misses {_stat(misses, '.0f')}; worker-hours {_stat(cost, '.2f')}; "
            f"peak workers {_stat(peak, '.0f')}"
            + ("" if name == "slots_needed" else f"; misses / slots_needed's {_stat(ratio, '.1f')}")
        )


def _stat(values: list[float], fmt: str) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"median {med:{fmt}} (min {lo:{fmt}}, max {hi:{fmt}})"


if __name__ == "__main__":
    main()
