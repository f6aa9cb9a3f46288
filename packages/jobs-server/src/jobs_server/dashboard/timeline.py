"""A job's life as the detail page tells it: created, each dispatch and attempt (worker, start,
duration, error, traceback), and its final state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobs_schema import AttemptOutcome, AttemptRecord, Job, JobStatus
from jobs_server.dashboard.format import timestamp

__all__ = ["Event", "dispatch_slack", "timeline"]

_OUTCOME_TITLES = {
    AttemptOutcome.RUNNING: "running",
    AttemptOutcome.SUCCEEDED: "succeeded",
    AttemptOutcome.FAILED: "failed",
    AttemptOutcome.LEASE_EXPIRED: "lease expired",
    AttemptOutcome.CANCELLED: "cancelled",
    AttemptOutcome.RELEASED: "released",
}


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime | None
    kind: str  # css class: created, attempt-<outcome>, retried, scheduled, final-<status>
    title: str
    attempt: AttemptRecord | None = None
    slack: float | None = None  # deadline - dispatch, for attempts

    @property
    def duration(self) -> float | None:
        a = self.attempt
        if a is None or a.finished_at is None:
            return None
        return (a.finished_at - (a.started_at or a.dispatched_at)).total_seconds()


def dispatch_slack(job: Job, attempt: AttemptRecord) -> float:
    """How far ahead of (or behind) the deadline it ran under the attempt was dispatched."""
    return ((attempt.deadline or job.deadline) - attempt.dispatched_at).total_seconds()


def timeline(job: Job, now: datetime) -> list[Event]:
    events = [Event(job.created_at, "created", "Created")]
    history = job.history or []
    for i, a in enumerate(history):
        if i and history[i - 1].deadline not in (None, a.deadline):
            events.append(_retried(a.deadline or job.deadline, None))
        events.append(
            Event(
                a.dispatched_at,
                f"attempt-{a.outcome.value}",
                f"Attempt {a.attempt} of {job.max_attempts}: {_OUTCOME_TITLES[a.outcome]}",
                attempt=a,
                slack=dispatch_slack(job, a),
            )
        )
    if history and history[-1].deadline is not None:
        # retried after its last attempt; run_at is the retry's time until an attempt runs
        events.append(
            _retried(job.deadline, job.run_at if job.status is JobStatus.PENDING else None)
        )
    if job.status is JobStatus.PENDING:
        title = "Waiting to run" if job.run_at <= now else "Scheduled to run"
        events.append(Event(job.run_at, "scheduled", title))
    elif job.finished_at is not None:
        events.append(Event(job.finished_at, f"final-{job.status.value}", job.status.title()))
    return events


def _retried(deadline: datetime, at: datetime | None) -> Event:
    return Event(at, "retried", f"Retried, with a new deadline: {timestamp(deadline)}")
