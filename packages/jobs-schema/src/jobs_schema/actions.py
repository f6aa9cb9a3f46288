"""Bodies of the operator actions: retry, and cancel or retry every job matching a filter."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from jobs_schema.jobs import JobFilter
from jobs_schema.limits import JsonInt

__all__ = [
    "MAX_BULK_JOBS",
    "BulkAction",
    "BulkResult",
    "JobCount",
    "JobCountQuery",
    "JobSelection",
]

MAX_BULK_JOBS = 100_000


class BulkAction(StrEnum):
    """What a bulk request does; each touches only the jobs it can act on."""

    CANCEL = "cancel"  # pending (cancelled at once) and running (marked) jobs
    RETRY = "retry"  # dead and cancelled jobs


class JobCountQuery(JobFilter):
    """The query of `GET /v1/jobs/count`. Unknown query parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: BulkAction | None = Field(
        default=None, description="count only the jobs this action would change"
    )


class JobSelection(JobFilter):
    """The jobs a bulk action touches: those the filter matches, up to `max_id` and `limit`."""

    max_id: UUID | None = Field(
        default=None,
        description="only jobs with an id up to this one: pass the `max_id` that "
        "`GET /v1/jobs/count` returned, and jobs created after the count are left alone",
    )
    limit: JsonInt = Field(
        default=10_000,
        ge=1,
        le=MAX_BULK_JOBS,
        strict=True,
        description="touch at most this many jobs",
    )


class BulkResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: BulkAction
    touched: int = Field(description="jobs cancelled, marked for cancellation, or retried")
    skipped: int = Field(
        default=0,
        description="matching jobs left alone: over the tenant's quota, or their dedup key "
        "is held by an active job",
    )
    more: bool = Field(description="the limit was reached before every match was examined")


class JobCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int
    max_id: UUID | None = Field(description="the newest matching job's id; None: no match")
