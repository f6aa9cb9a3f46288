"""Jobs as producers submit them and as the API returns them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from jobs_schema.config import BackoffPolicy
from jobs_schema.errors import ErrorBody
from jobs_schema.limits import JsonInt, Text, Timestamp, WholeNumber, check_payload, zoned

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "MAX_BATCH_SIZE",
    "AttemptOutcome",
    "AttemptRecord",
    "BatchEnqueueRequest",
    "BatchEnqueueResponse",
    "BatchItemResult",
    "EnqueueRequest",
    "EnqueueResponse",
    "Job",
    "JobFilter",
    "JobListQuery",
    "JobPage",
    "JobStatus",
    "Payload",
]

MAX_BATCH_SIZE = 1000

Payload = dict[str, JsonValue]
# A payload the API takes: storable, and within the nesting every parser on its way reads.
CheckedPayload = Annotated[Payload, AfterValidator(check_payload)]
Key = Annotated[Text, Field(min_length=1, max_length=200)]
# A time as stored and returned: always with a zone.
StoredTime = Annotated[datetime, AfterValidator(zoned)]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED})


class AttemptOutcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEASE_EXPIRED = "lease_expired"
    CANCELLED = "cancelled"
    RELEASED = "released"


class EnqueueRequest(BaseModel):
    """One job to enqueue. The tenant comes from the token, never from the body.

    `deadline` is absolute; otherwise it is `run_at + delay_tolerance_seconds`, or the use
    case's default tolerance when neither is given. `run_at` defaults to now.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"not": {"required": ["deadline", "delay_tolerance_seconds"]}},
    )

    use_case: Key
    job_type: Key
    payload: CheckedPayload = Field(default_factory=dict)
    run_at: Timestamp | None = None
    deadline: Timestamp | None = None
    delay_tolerance_seconds: float | None = Field(default=None, ge=0, le=365 * 86_400, strict=True)
    priority: JsonInt = Field(
        default=0, ge=-1000, le=1000, strict=True, description="higher runs first"
    )
    dedup_key: Key | None = None
    concurrency_key: Key | None = Field(
        default=None,
        description="at most the use case's concurrency_limit_per_key jobs with it run at once",
    )
    rate_key: Key | None = Field(
        default=None, description="jobs with this key start at most at the use case's rate_limit"
    )
    max_attempts: Annotated[int, Field(ge=1, le=1000, strict=True), WholeNumber] | None = None
    backoff: BackoffPolicy | None = None

    @model_validator(mode="after")
    def _deadline_is_consistent(self) -> EnqueueRequest:
        if self.deadline is not None and self.delay_tolerance_seconds is not None:
            raise ValueError("give either deadline or delay_tolerance_seconds, not both")
        if self.deadline is not None and self.run_at is not None and self.deadline < self.run_at:
            raise ValueError("deadline is before run_at")
        return self


class BatchEnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


class AttemptRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt: int
    outcome: AttemptOutcome
    worker_id: str | None = None
    dispatched_at: StoredTime
    started_at: StoredTime | None = None
    finished_at: StoredTime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    deadline: StoredTime | None = Field(
        default=None,
        description="the deadline this attempt ran under, when a retry has since given the job "
        "a new one; None: the job's deadline",
    )


class Job(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    tenant: str
    use_case: str
    job_type: str
    payload: Payload
    status: JobStatus
    priority: int
    run_at: StoredTime
    deadline: StoredTime
    attempts: int
    max_attempts: int
    dedup_key: str | None = None
    concurrency_key: str | None = None
    rate_key: str | None = None
    result: JsonValue = None
    last_error: str | None = None
    cancel_requested: bool = False
    deadline_missed: bool = False
    created_at: StoredTime
    updated_at: StoredTime
    finished_at: StoredTime | None = None
    history: list[AttemptRecord] | None = Field(
        default=None, description="every attempt, oldest first; only on single-job reads"
    )


class EnqueueResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: Job
    deduplicated: bool = False


class BatchItemResult(BaseModel):
    """The result of one item of a batch: a job, or the error that refused it."""

    model_config = ConfigDict(frozen=True)

    index: int
    job: Job | None = None
    deduplicated: bool = False
    error: ErrorBody | None = None


class BatchEnqueueResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    results: list[BatchItemResult]


class JobPage(BaseModel):
    """Newest first. Pass `next_cursor` back as `cursor` for the next page; None: no more."""

    model_config = ConfigDict(frozen=True)

    items: list[Job]
    next_cursor: str | None = None


class JobFilter(BaseModel):
    """The jobs matching every given field: the one filter of the job list (`GET /v1/jobs`),
    the count and the bulk actions, in the API, the SDK and the `jobs` command. A tenant
    token sees its own jobs only; `tenant` narrows an admin's view."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: JobStatus | None = Field(default=None, description="only jobs in this status")
    use_case: Key | None = Field(default=None, description="only this use case")
    job_type: Key | None = Field(default=None, description="only this job type")
    tenant: Key | None = Field(default=None, description="only this tenant (admins only)")
    dedup_key: Key | None = Field(default=None, description="only jobs with this dedup key")
    created_after: Timestamp | None = Field(
        default=None, description="created at or after (ISO 8601, with a zone)"
    )
    created_before: Timestamp | None = Field(
        default=None, description="created before (ISO 8601, with a zone)"
    )

    def given(self) -> dict[str, Any]:
        """The filter's fields that are set (the fields of a subclass left out)."""
        values = ((name, getattr(self, name)) for name in JobFilter.model_fields)
        return {name: value for name, value in values if value is not None}


class JobListQuery(JobFilter):
    """The query of `GET /v1/jobs`: the filter and a page of its matches. Unknown query
    parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cursor: Key | None = Field(default=None, description="the `next_cursor` of the previous page")
    limit: int = Field(default=50, ge=1, le=500, description="jobs a page")
