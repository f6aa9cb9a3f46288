"""Jobs as producers submit them and as the API returns them."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from jobs_schema.config import BackoffPolicy, MissPolicy, UseCaseConfig
from jobs_schema.errors import ErrorBody
from jobs_schema.graph import MAX_PARENTS, UUID_PATTERN, OnParentFailure, parent_id
from jobs_schema.limits import (
    MAX_EXPIRE_GRACE_SECONDS,
    MAX_TIMESTAMP,
    MAX_UNIQUE_SECONDS,
    CheckedPayload,
    JsonInt,
    Key,
    Payload,
    Timestamp,
    WholeNumber,
    zoned,
)

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
    "UniqueRule",
    "UniqueWindow",
]

MAX_BATCH_SIZE = 1000

# A time as stored and returned: always with a zone.
StoredTime = Annotated[datetime, AfterValidator(zoned)]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"
    # never dispatched: its deadline plus the grace of its miss policy `expire` passed first
    EXPIRED = "expired"
    # has parents (depends_on) not all ended yet; never claimed (docs/workflows.md)
    WAITING = "waiting"


ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
FINISHED_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


class UniqueWindow(StrEnum):
    """How long a job's key keeps out duplicates. Every window holds while the job is active."""

    ACTIVE = "active"  # while pending or running (what `dedup_key` alone gives)
    ENQUEUED = "enqueued"  # and for `seconds` after it was enqueued, whatever its state
    FINISHED = "finished"  # and for `seconds` after it finished
    STATES = "states"  # while it is in one of `states`


def _given(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {field: schema}, "required": [field]}


# The window's rules as JSON Schema, so the OpenAPI says which fields each window takes.
_UNIQUE_RULE_SCHEMA: dict[str, Any] = {
    "allOf": [
        {
            "if": _given("window", {"enum": ["enqueued", "finished"]}),
            "then": _given("seconds", {"type": "number"}),
            "else": {"properties": {"seconds": {"type": "null"}}},
        },
        {
            "if": _given("window", {"const": "states"}),
            "then": _given(
                "states",
                {
                    "type": "array",
                    "uniqueItems": True,
                    "allOf": [
                        {"contains": {"const": "pending"}},
                        {"contains": {"const": "running"}},
                    ],
                },
            ),
            "else": {"properties": {"states": {"type": "null"}}},
        },
    ]
}


class UniqueRule(BaseModel):
    """A uniqueness rule: while a job of the same tenant, use case and `key` matches the
    window, an enqueue returns that job instead of storing a new one.

    `{"key": "k"}` is `dedup_key: "k"`; `{"key": "k", "window": "enqueued", "seconds": 3600}`
    returns the first job for an hour after its enqueue; `{"key": "k", "window": "finished",
    "seconds": 600}` for ten minutes after it finished; `{"key": "k", "window": "states",
    "states": ["pending", "running", "succeeded"]}` while it is in a named state. A key is
    always unique while its job is active, so `states` must name pending and running.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_UNIQUE_RULE_SCHEMA)

    key: Key = Field(description="the dedup key (1-200 characters); the job's `dedup_key`")
    window: UniqueWindow = Field(default=UniqueWindow.ACTIVE, description="see UniqueWindow")
    seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_UNIQUE_SECONDS,
        strict=True,
        description="the window's length, over 0 and up to a year; required by `enqueued` and "
        "`finished`, refused otherwise",
    )
    states: list[JobStatus] | None = Field(
        default=None,
        max_length=len(JobStatus),
        description="the states that keep duplicates out, pending and running among them; "
        "required by `states`, refused otherwise",
    )

    @model_validator(mode="after")
    def _window_is_consistent(self) -> UniqueRule:
        timed = self.window in (UniqueWindow.ENQUEUED, UniqueWindow.FINISHED)
        if timed and self.seconds is None:
            raise ValueError(f"unique.seconds is required by window {self.window.value!r}")
        if not timed and self.seconds is not None:
            raise ValueError(
                "unique.seconds is taken by windows 'enqueued' and 'finished' only, "
                f"not {self.window.value!r}"
            )
        if self.window is UniqueWindow.STATES:
            if self.states is None:
                raise ValueError("unique.states is required by window 'states'")
            if len(set(self.states)) < len(self.states):
                raise ValueError("unique.states names a state twice")
            if not set(self.states) >= ACTIVE_STATUSES:
                raise ValueError(
                    "unique.states must name 'pending' and 'running': a key is always unique "
                    "while its job is active"
                )
        elif self.states is not None:
            raise ValueError(
                f"unique.states is taken by window 'states' only, not {self.window.value!r}"
            )
        return self

    def holds(
        self,
        status: JobStatus,
        *,
        created_at: datetime,
        finished_at: datetime | None,
        now: datetime,
    ) -> bool:
        """Whether a job of the key, so far, keeps a new one with this rule out at `now`."""
        if status in ACTIVE_STATUSES:
            return True
        since = now - timedelta(seconds=self.seconds or 0)
        if self.window is UniqueWindow.ENQUEUED:
            return created_at > since
        if self.window is UniqueWindow.FINISHED:
            return finished_at is not None and finished_at > since
        return self.window is UniqueWindow.STATES and status in (self.states or ())


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
        json_schema_extra={
            "allOf": [
                {"not": {"required": ["deadline", "delay_tolerance_seconds"]}},
                {"not": {"required": ["dedup_key", "unique"]}},
                # workflows: on_parent_failure with depends_on only; depends_on without dedup
                {
                    "if": {"required": ["on_parent_failure"]},
                    "then": {
                        "required": ["depends_on"],
                        "properties": {"depends_on": {"type": "array"}},
                    },
                },
                {"not": {"required": ["depends_on", "dedup_key"]}},
                {"not": {"required": ["depends_on", "unique"]}},
                {
                    "not": {
                        "properties": {"miss_policy": {"const": "run_late"}},
                        "required": ["miss_policy", "expire_grace_seconds"],
                    }
                },
            ]
        },
    )

    use_case: Key
    job_type: Key
    payload: CheckedPayload = Field(default_factory=dict)
    run_at: Timestamp | None = None
    deadline: Timestamp | None = None
    delay_tolerance_seconds: float | None = Field(default=None, ge=0, le=365 * 86_400, strict=True)
    priority: JsonInt = Field(
        default=0,
        ge=-1000,
        le=1000,
        strict=True,
        description=(
            "a class: a use case's due jobs of a higher priority are claimed before those of a "
            "lower one, earliest deadline first within a class"
        ),
    )
    dedup_key: Key | None = Field(
        default=None, description="while a job with this key is active, return it instead"
    )
    unique: UniqueRule | None = Field(
        default=None, description="a uniqueness rule, in place of `dedup_key`"
    )
    concurrency_key: Key | None = Field(
        default=None,
        description="at most the use case's concurrency_limit_per_key jobs with it run at once",
    )
    rate_key: Key | None = Field(
        default=None, description="jobs with this key start at most at the use case's rate_limit"
    )
    max_attempts: Annotated[int, Field(ge=1, le=1000, strict=True), WholeNumber] | None = None
    backoff: BackoffPolicy | None = None
    miss_policy: MissPolicy | None = Field(
        default=None,
        description="if still pending past its deadline: run_late (dispatched, a miss) or "
        "expire (ends expired once the deadline plus the grace has passed); default: the use "
        "case's",
    )
    expire_grace_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_EXPIRE_GRACE_SECONDS,
        strict=True,
        description="with miss_policy expire (the job's or its use case's): how long past its "
        "deadline it may still be dispatched, 0 to 2592000 (30 days); default: the use case's",
    )

    ref: Annotated[Key, Field(json_schema_extra={"not": {"pattern": UUID_PATTERN}})] | None = Field(
        default=None,
        description="a name for this item, local to its batch request, that other items' "
        "depends_on may give (1-200 characters, not a UUID)",
    )
    depends_on: list[Key] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PARENTS,
        json_schema_extra={"uniqueItems": True},
        description=(
            "the job's parents, 1 to 100 distinct entries: ids of existing jobs of the tenant, "
            "or refs of items of the same batch request. The job waits (status waiting, never "
            "claimed) until every parent has ended; then it becomes pending, its run_at the "
            "later of its own and that moment, and a deadline given as "
            "delay_tolerance_seconds (or the use case's default) counted from then. An "
            "absolute deadline stays as given. Takes no dedup_key or unique"
        ),
    )
    on_parent_failure: OnParentFailure | None = Field(
        default=None,
        description="with depends_on: when a parent ends dead, cancelled or expired, cancel "
        "(default: the job and its descendants that cancel too end cancelled) or run (the job "
        "runs once every parent has ended)",
    )

    @model_validator(mode="after")
    def _parents_are_consistent(self) -> EnqueueRequest:
        if self.ref is not None and parent_id(self.ref) is not None:
            raise ValueError("ref must not be a UUID: depends_on reads a UUID as a job id")
        if self.depends_on is None:
            if self.on_parent_failure is not None:
                raise ValueError("on_parent_failure is taken with depends_on only")
            return self
        if len(set(self.depends_on)) < len(self.depends_on):
            raise ValueError("depends_on names a parent twice")
        if self.dedup_key is not None or self.unique is not None:
            raise ValueError("a job with depends_on takes no dedup_key or unique: drop one of them")
        return self

    @model_validator(mode="after")
    def _deadline_is_consistent(self) -> EnqueueRequest:
        if self.dedup_key is not None and self.unique is not None:
            raise ValueError("give either dedup_key or unique (its key is the dedup key), not both")
        if self.deadline is not None and self.delay_tolerance_seconds is not None:
            raise ValueError("give either deadline or delay_tolerance_seconds, not both")
        if self.deadline is not None and self.run_at is not None and self.deadline < self.run_at:
            raise ValueError("deadline is before run_at")
        if self.miss_policy is MissPolicy.RUN_LATE and self.expire_grace_seconds is not None:
            raise ValueError(
                "expire_grace_seconds is taken with miss_policy 'expire' only, not 'run_late': "
                "drop one of them"
            )
        return self

    def expire_grace(self, use_case: UseCaseConfig) -> float | None:
        """The grace after its deadline at which the job ends expired if still pending, by its
        own miss policy, else its use case's (the grace likewise); None: it runs late.
        ValueError when a grace is given for a job that runs late by its use case's policy."""
        if (self.miss_policy or use_case.miss_policy) is MissPolicy.RUN_LATE:
            if self.expire_grace_seconds is not None:
                raise ValueError(
                    "expire_grace_seconds applies to miss_policy 'expire' only, and use case "
                    f"{self.use_case!r} runs late: give miss_policy 'expire' too, or drop "
                    "expire_grace_seconds"
                )
            return None
        if self.expire_grace_seconds is not None:
            return self.expire_grace_seconds
        return use_case.expire_grace_seconds

    def expires_at(self, use_case: UseCaseConfig, deadline: datetime) -> datetime | None:
        """When the job ends expired if still pending (expire_grace); None: it runs late."""
        return expiry_of(deadline, self.expire_grace(use_case))


def expiry_of(deadline: datetime, grace: float | None) -> datetime | None:
    """`deadline` plus `grace` seconds (None: no expiry); a grace reaching past the range ends
    at its end, not an overflow."""
    if grace is None:
        return None
    return deadline + min(timedelta(seconds=grace), MAX_TIMESTAMP - deadline)


class BatchEnqueueRequest(BaseModel):
    """Up to 1,000 jobs in one transaction. When an item gives `depends_on`, the request is a
    graph: refs name its items, it is stored whole or not at all (a quota refusal is the
    request's, 429), and a cycle, a ref given twice or unknown, or a parent of another tenant
    is refused (400) with nothing stored (docs/workflows.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=MAX_BATCH_SIZE)

    @property
    def is_graph(self) -> bool:
        """Whether an item depends on another job (the request is stored whole or not)."""
        return any(j.depends_on for j in self.jobs)


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
    deadline: StoredTime = Field(
        description="run_at + its tolerance, or as given; a job with parents (depends_on) "
        "gets run_at and a tolerance's deadline anew when its last parent ends (its release)"
    )
    attempts: int
    max_attempts: int
    dedup_key: str | None = None
    unique: UniqueRule | None = Field(
        default=None,
        description="the job's uniqueness rule; None: unique while active if it has a dedup_key",
    )
    concurrency_key: str | None = None
    rate_key: str | None = None
    result: JsonValue = None
    last_error: str | None = None
    cancel_requested: bool = False
    deadline_missed: bool = False
    expires_at: StoredTime | None = Field(
        default=None,
        description="miss policy expire: still pending after this time (its deadline plus the "
        "grace), the job ends expired; None: it runs late",
    )
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
    expected_start_at: StoredTime | None = Field(
        default=None,
        description="when the job is expected to start, from the work ahead of it in claim "
        "order, the free slots and the observed throughput (docs/feasibility.md); None when "
        "the server runs with JOBS_FEASIBILITY=off",
    )
    at_risk: bool = Field(
        default=False,
        description="the deadline may not hold: expected_start_at, plus the server's risk "
        "margin (JOBS_FEASIBILITY_RISK_MARGIN, default 0.25) times the expected wait, is later "
        "than the job's deadline",
    )


class BatchItemResult(BaseModel):
    """The result of one item of a batch: a job, or the error that refused it."""

    model_config = ConfigDict(frozen=True)

    index: int
    job: Job | None = None
    deduplicated: bool = False
    error: ErrorBody | None = None
    expected_start_at: StoredTime | None = Field(
        default=None, description="as in EnqueueResponse; None for a refused item"
    )
    at_risk: bool = Field(default=False, description="as in EnqueueResponse")


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
