"""The dependencies of `jobs_sdk.testing`'s fake jobs: the server's workflow rules
(docs/workflows.md) on dicts. A child waits until every parent has ended, then becomes
pending, or is cancelled (with its waiting descendants) when a parent did not succeed and
its policy is `cancel`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from jobs_schema import FINISHED_STATUSES, EnqueueRequest, ErrorCode, Job, JobStatus
from jobs_schema.graph import GraphRefused, OnParentFailure, check_graph, parent_id
from jobs_schema.workflows import ParentResult
from jobs_sdk.errors import ValidationFailed

__all__ = ["FakeGraph"]

_PARENT_FAILED = (
    "cancelled: a job it depends on ended without succeeding (on_parent_failure cancel)"
)


@dataclass
class _Wait:
    parents: dict[UUID, bool]  # parent -> ended (counted once)
    policy: OnParentFailure
    failed: int = 0


@dataclass
class FakeGraph:
    """Edges among the fake's jobs. `store(job, **changes)` writes a job back (FakeJobs')."""

    waits: dict[UUID, _Wait] = field(default_factory=dict)
    children: dict[UUID, set[UUID]] = field(default_factory=dict)

    def check_parents(self, requests: Sequence[EnqueueRequest], jobs: dict[UUID, Job]) -> None:
        """ValidationFailed (as the server's 400) for a cycle, a ref given twice or unknown, or
        a parent id that is no job of the fake."""
        try:
            check_graph(requests)
        except GraphRefused as exc:
            raise ValidationFailed(str(exc), code=ErrorCode.VALIDATION, status=400) from None
        missing = sorted(
            {
                str(p)
                for r in requests
                for entry in r.depends_on or ()
                if (p := parent_id(entry)) is not None and p not in jobs
            }
        )
        if missing:
            raise ValidationFailed(
                f"depends_on names jobs that are not yours or do not exist: {', '.join(missing)}",
                code=ErrorCode.VALIDATION,
                status=400,
            )

    def link(
        self,
        requests: Sequence[EnqueueRequest],
        created: list[Job],
        jobs: dict[UUID, Job],
        store: Callable[..., Job],
        now: datetime,
    ) -> list[Job]:
        """Link the jobs of one request; answers them as they are after linking."""
        refs = {r.ref: j.id for r, j in zip(requests, created, strict=True) if r.ref}
        for request, job in zip(requests, created, strict=True):
            if not request.depends_on:
                continue
            parents = [parent_id(p) or refs[p] for p in request.depends_on]
            ended = {p: jobs[p].status in FINISHED_STATUSES for p in parents}
            wait = _Wait(ended, request.on_parent_failure or OnParentFailure.CANCEL)
            wait.failed = sum(1 for p in parents if ended[p] and not _ok(jobs[p]))
            self.waits[job.id] = wait
            for p in parents:
                self.children.setdefault(p, set()).add(job.id)
        doomed = []
        for job in created:
            held = self.waits.get(job.id)
            if held is None:
                continue
            if _cancels(held):
                doomed.append(
                    store(
                        jobs[job.id],
                        status=JobStatus.CANCELLED,
                        finished_at=now,
                        last_error=_PARENT_FAILED,
                    )
                )
            elif not all(held.parents.values()):
                store(jobs[job.id], status=JobStatus.WAITING)
        for job in doomed:
            self.follow(job, jobs, store, now)
        return [jobs[j.id] for j in created]

    def follow(
        self, ended: Job, jobs: dict[UUID, Job], store: Callable[..., Job], now: datetime
    ) -> list[Job]:
        """After `ended` ended: the children it released (pending now)."""
        released = []
        queue = deque([ended])
        while queue:
            parent = queue.popleft()
            for child_id in sorted(self.children.get(parent.id, ())):
                wait = self.waits[child_id]
                if wait.parents.get(parent.id, True):
                    continue
                wait.parents[parent.id] = True
                wait.failed += 0 if _ok(parent) else 1
                child = jobs.get(child_id)
                if child is None or child.status is not JobStatus.WAITING:
                    continue
                if _cancels(wait):
                    queue.append(
                        store(
                            child,
                            status=JobStatus.CANCELLED,
                            finished_at=now,
                            last_error=_PARENT_FAILED,
                        )
                    )
                elif all(wait.parents.values()):
                    released.append(
                        store(child, status=JobStatus.PENDING, run_at=max(child.run_at, now))
                    )
        return released

    def parents(self, job_id: UUID, jobs: dict[UUID, Job]) -> list[ParentResult]:
        wait = self.waits.get(job_id)
        rows = [jobs[p] for p in sorted(wait.parents) if p in jobs] if wait else []
        return [
            ParentResult(
                id=j.id,
                job_type=j.job_type,
                status=j.status,
                result=j.result,
                last_error=j.last_error,
            )
            for j in rows
        ]


def _ok(job: Job) -> bool:
    return job.status is JobStatus.SUCCEEDED


def _cancels(wait: _Wait) -> bool:
    return wait.failed > 0 and wait.policy is OnParentFailure.CANCEL
