"""How well `expected_start_at` and `at_risk` predict, under a load that varies.

    uv run python bench/feasibility_accuracy.py

A run in virtual time of the real code path: JobService (its enqueue answers), Feasibility
(the API's cached reads), FeasibilityFolder (the leader's fold and rates, every second) over the
InMemoryJobStore and a ManualClock, with a dispatcher claiming within capacity every 0.1 s and
workers finishing each job after its duration. One use case of capacity 20, jobs of 0.5-1.5 s
(so about 20 jobs/s at most), deadlines 5, 15 or 60 s after enqueue, and arrivals per second
changing every 60 s: 10, 30, 15, 40, 5 (twice over capacity, then below).

Printed: the median absolute error of the expected start, in seconds and as % of the actual
wait (jobs that waited at least 1 s), and precision / recall of `at_risk` against the jobs that
actually started after their deadline; median / min / max over three seeds. `at_risk` is
then scored again for other values of the risk margin (JOBS_FEASIBILITY_RISK_MARGIN: flagged
when the expected start plus the margin times the expected wait falls after the deadline), from
the same answers, to show the trade between precision and recall.

    uv run python bench/feasibility_accuracy.py --margins 0 0.1 0.25 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from _common import load_average
from jobs_schema import EnqueueRequest, JobsConfig
from jobs_server.clock import ManualClock
from jobs_server.feasibility import Feasibility, FeasibilityFolder
from jobs_server.service import JobService
from jobs_server.settings import ServerSettings
from jobs_server.store.base import LeaderLease, SucceededAttempt
from jobs_server.store.memory import InMemoryJobStore

CONFIG = JobsConfig.model_validate({"use_cases": {"uc": {"queue": "q", "capacity": 20}}})
PHASES = (10, 30, 15, 40, 5)  # arrivals per second, 60 s each
STEP = 0.1
MARGIN = ServerSettings.model_fields["feasibility_risk_margin"].default


@dataclass
class Seen:
    enqueued: datetime
    deadline: datetime
    expected: datetime
    at_risk: bool
    started: datetime | None = None

    def flagged(self, margin: float) -> bool:
        """at_risk as the API answers it with this risk margin."""
        return self.expected + margin * (self.expected - self.enqueued) > self.deadline


async def run(seed: int) -> list[Seen]:
    rng = random.Random(seed)
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    t0 = clock.now()
    store = InMemoryJobStore(clock)

    def virtual() -> float:
        return (clock.now() - t0).total_seconds()

    feasibility = Feasibility(
        store, CONFIG, default_duration=1.0, monotonic=virtual, risk_margin=MARGIN
    )
    service = JobService(
        store,
        CONFIG,
        default_quota=None,
        max_payload_bytes=65536,
        clock=clock,
        feasibility=feasibility,
    )
    folder = FeasibilityFolder(store, CONFIG.use_cases, default_duration=1.0)
    epoch = await store.acquire_leadership("main", "bench", ttl=10**6)
    assert epoch is not None
    leader = LeaderLease("main", "bench", epoch)
    seen: dict[UUID, Seen] = {}
    ends: list[tuple[float, int, SucceededAttempt]] = []
    seq, next_fold, next_arrival = 0, 0.0, 0.0
    horizon = 60.0 * len(PHASES)
    while virtual() < horizon + 120:
        now_s = virtual()
        reqs = []
        while now_s < horizon and next_arrival <= now_s:
            rate = PHASES[int(next_arrival // 60)]
            next_arrival += rng.expovariate(rate)
            tolerance = rng.choice((5.0, 15.0, 60.0))
            reqs.append(
                EnqueueRequest(
                    use_case="uc", job_type="t", payload={}, delay_tolerance_seconds=tolerance
                )
            )
        if reqs:
            answer = await service.enqueue_batch("acme", reqs)
            for r in answer.results:
                assert r.job is not None and r.expected_start_at is not None
                seen[r.job.id] = Seen(clock.now(), r.job.deadline, r.expected_start_at, r.at_risk)
        done = []
        while ends and ends[0][0] <= now_s:
            done.append(heapq.heappop(ends)[2])
        if done:
            await store.complete_attempts(done)
        claimed = await store.claim_due_jobs(
            "uc", capacity=20, limit=1000, lease_seconds=600, leader=leader, per_tenant_cap=None
        )
        for c in claimed:
            seen[c.id].started = clock.now()
            seq += 1
            lease = SucceededAttempt(c.id, c.attempt, c.lease_token, None)
            heapq.heappush(ends, (now_s + rng.uniform(0.5, 1.5), seq, lease))
        if now_s >= next_fold:
            await folder.run_once(clock.now())
            await store.prune_finished_jobs("uc", older_than_seconds=0, limit=100_000)
            next_fold = now_s + 1.0
        clock.advance(STEP)
    jobs = list(seen.values())
    assert all(j.at_risk == j.flagged(MARGIN) for j in jobs), "the answers' margin differs"
    return jobs


def _score(jobs: list[Seen], margin: float) -> dict[str, float]:
    started = [j for j in jobs if j.started is not None]
    errors = [abs((j.expected - j.started).total_seconds()) for j in started if j.started]
    waited = [
        (abs((j.expected - j.started).total_seconds()), (j.started - j.enqueued).total_seconds())
        for j in started
        if j.started and j.started - j.enqueued >= timedelta(seconds=1)
    ]
    missed = {id(j) for j in jobs if j.started is None or j.started > j.deadline}
    flagged = {id(j) for j in jobs if j.flagged(margin)}
    hits = len(missed & flagged)
    return {
        "jobs": len(jobs),
        "waited": len(waited),
        "missed": len(missed),
        "mae_s": statistics.median(errors),
        "mae_pct": 100 * statistics.median(e / w for e, w in waited) if waited else 0.0,
        "precision": hits / len(flagged) if flagged else 1.0,
        "recall": hits / len(missed) if missed else 1.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5])
    args = parser.parse_args()
    runs = [await run(seed) for seed in (1, 2, 3)]
    scores = [_score(jobs, MARGIN) for jobs in runs]

    def stat(key: str, fmt: str) -> str:
        vals = [s[key] for s in scores]
        return (
            f"median {statistics.median(vals):{fmt}} (min {min(vals):{fmt}}, max {max(vals):{fmt}})"
        )

    print(
        f"capacity 20, jobs 0.5-1.5 s, arrivals {'/'.join(map(str, PHASES))} per s for 60 s "
        f"each; jobs {stat('jobs', '.0f')}, waited >= 1 s {stat('waited', '.0f')}, "
        f"started late {stat('missed', '.0f')}"
    )
    print(f"expected start, median absolute error: {stat('mae_s', '.2f')} s")
    print(f"  as % of the actual wait (waits >= 1 s): {stat('mae_pct', '.0f')}%")
    print(
        f"at_risk (risk margin {MARGIN}, the default) precision {stat('precision', '.2f')}, "
        f"recall {stat('recall', '.2f')}"
    )
    for margin in args.margins:
        scores = [_score(jobs, margin) for jobs in runs]
        print(
            f"  risk margin {margin:4}: precision {stat('precision', '.2f')}, "
            f"recall {stat('recall', '.2f')}"
        )
    print(f"({load_average()}; virtual time: the figures do not depend on the machine)")


if __name__ == "__main__":
    asyncio.run(main())
