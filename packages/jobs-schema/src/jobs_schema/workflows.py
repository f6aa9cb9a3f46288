"""Workflows and batches as the API takes and returns them (docs/workflows.md)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from jobs_schema.jobs import MAX_BATCH_SIZE, EnqueueRequest, Job, JobStatus, StoredTime
from jobs_schema.limits import MAX_BATCH_FAILED_IDS, MAX_BATCH_JOBS

__all__ = [
    "BATCH_KEY",
    "MAX_BATCH_FAILED_IDS",
    "MAX_BATCH_JOBS",
    "Batch",
    "BatchAddRequest",
    "BatchCounts",
    "BatchCreateRequest",
    "JobGraph",
    "JobLink",
    "ParentResult",
    "ParentsResponse",
    "batch_refusal",
]

BATCH_KEY = "batch"  # the key of the callback payload that carries the batch's outcome


class ParentResult(BaseModel):
    """A parent as its child's handler reads it (ctx.parent_results())."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    job_type: str
    status: JobStatus
    result: JsonValue = None
    last_error: str | None = None


class ParentsResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: UUID
    parents: list[ParentResult]


class JobLink(BaseModel):
    """An edge of a workflow: `child` waits for `parent`."""

    model_config = ConfigDict(frozen=True)

    parent: UUID
    child: UUID


class JobGraph(BaseModel):
    """The workflow a job belongs to: every job reachable from it over dependencies (either
    way), at most `limit` of them, and the edges among them."""

    model_config = ConfigDict(frozen=True)

    jobs: list[Job]
    links: list[JobLink]
    truncated: bool = Field(default=False, description="more jobs are linked than listed")


def batch_refusal(items: list[EnqueueRequest], callback: EnqueueRequest | None) -> str | None:
    """Why a batch's jobs or callback break its rules (a 400's message); None: they do not."""
    for i, item in enumerate(items):
        if item.dedup_key is not None or item.unique is not None:
            return (
                f"jobs[{i}]: a batch's jobs take no dedup_key or unique (a batch counts the "
                "jobs it created)"
            )
    if callback is None:
        return None
    given = [
        name
        for name in ("run_at", "deadline", "dedup_key", "unique", "ref", "depends_on")
        if getattr(callback, name) is not None
    ]
    if given:
        return f"callback takes no {', '.join(given)}: drop them"
    if BATCH_KEY in callback.payload:
        return f"callback.payload must not hold {BATCH_KEY!r}: the batch's outcome goes there"
    return None


class BatchAddRequest(BaseModel):
    """Jobs to add to an unfinished batch, in one transaction; refs and depends_on as in a
    batch enqueue (refs are local to this request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


class BatchCreateRequest(BatchAddRequest):
    """A batch: its first jobs, and a callback job enqueued once, when every job of the batch
    has ended (succeeded, dead, cancelled or expired). The callback's payload is its own plus
    `batch`: `{"id", "counts": {"succeeded", "dead", "cancelled", "expired"}, "failed_job_ids"
    (the first 1,000 jobs that did not succeed), "failed_truncated"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callback: EnqueueRequest | None = Field(
        default=None,
        description="the job to enqueue once every job of the batch has ended; no run_at, "
        "deadline, dedup_key, unique, ref or depends_on (its deadline is its tolerance from "
        "the batch's end), and no payload key 'batch'",
    )


class BatchCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int = Field(description="jobs in the batch")
    unfinished: int = Field(description="jobs not ended yet")
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0
    expired: int = 0


class Batch(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    tenant: str
    counts: BatchCounts
    failed_job_ids: Annotated[
        list[UUID], Field(description="the first 1,000 jobs that ended other than succeeded")
    ]
    callback_job_id: UUID | None = Field(
        default=None, description="the callback job's id, stored once the batch finished"
    )
    has_callback: bool = False
    created_at: StoredTime
    finished_at: StoredTime | None = Field(
        default=None, description="when its last job ended; None: unfinished"
    )
    jobs: list[Job] | None = Field(
        default=None, description="the jobs created by the request (create and add only)"
    )
