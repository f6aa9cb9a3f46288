"""What travels between scheduler, SQS, worker and the worker API."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from jobs_schema.jobs import JobStatus, StoredTime
from jobs_schema.limits import (
    MAX_RETRY_DELAY_SECONDS,
    JsonInt,
    JsonRefused,
    Payload,
    ReportedText,
    Text,
    Timestamp,
    json_text,
)

WorkerId = Annotated[Text, Field(min_length=1, max_length=200)]
# The bounds inside, so that they reach the document through the `| None`.
RetryDelay = Annotated[
    float, Field(ge=0, strict=True), AfterValidator(lambda v: min(v, MAX_RETRY_DELAY_SECONDS))
]

__all__ = [
    "LEASE_CREDENTIAL_PREFIX",
    "MAX_PACK_JOBS",
    "MAX_SQS_MESSAGE_BYTES",
    "SERVER_TIME_HEADER",
    "CancellationsRequest",
    "CancellationsResponse",
    "FailureInfo",
    "HeartbeatItem",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "HeartbeatResult",
    "JobMessage",
    "LeaseRef",
    "LeaseState",
    "OutcomeAck",
    "OutcomeKind",
    "OutcomeReport",
    "OutcomeRequest",
    "OutcomeResponse",
    "PackedMessage",
    "PayloadResponse",
    "ReleaseRequest",
    "ReleaseResponse",
    "jobs_in_body",
    "lease_from_body",
    "pack_bodies",
    "packed_size",
]

MAX_SQS_MESSAGE_BYTES = 256 * 1024

# Every answer of the API carries the server's clock (PostgreSQL's) in this header, as Unix
# seconds with milliseconds: workers read leases against it, whatever their own clock says.
SERVER_TIME_HEADER = "Jobs-Server-Time"


class JobMessage(BaseModel):
    """The SQS message body. `payload` is None when it was too large to embed: the worker then
    fetches it from the server's worker API."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = 1
    job_id: UUID
    lease_token: UUID
    attempt: int
    tenant: str
    use_case: str
    job_type: str
    payload: Payload | None
    deadline: StoredTime
    lease_expires_at: StoredTime
    max_attempts: int
    trace_context: dict[str, str] = Field(default_factory=dict)
    # when the job was enqueued (start-lag metrics); absent in messages of older schedulers
    enqueued_at: StoredTime | None = None


MAX_PACK_JOBS = 100  # UseCaseConfig.pack_max_jobs's upper bound


class PackedMessage(BaseModel):
    """Several jobs of one use case in one SQS message (`v` 2); a message of one job is a plain
    JobMessage (`v` 1). Each job keeps its own lease, payload rule and trace context; the
    message is deleted once every one of them has an outcome."""

    model_config = ConfigDict(frozen=True)

    v: Literal[2] = 2
    jobs: list[JobMessage] = Field(min_length=1, max_length=MAX_PACK_JOBS)


_PACK_HEAD = '{"v":2,"jobs":['
_PACK_TAIL = "]}"


def pack_bodies(bodies: list[str]) -> str:
    """The PackedMessage body of these JobMessage bodies (as `model_dump_json` writes it),
    joined without parsing them again."""
    return _PACK_HEAD + ",".join(bodies) + _PACK_TAIL


def packed_size(sizes: list[int]) -> int:
    """The bytes of `pack_bodies` of bodies of these sizes in bytes."""
    return len(_PACK_HEAD) + sum(sizes) + max(0, len(sizes) - 1) + len(_PACK_TAIL)


def jobs_in_body(body: str) -> list[JobMessage]:
    """The jobs of a message body, packed (`v` 2) or not (`v` 1); ValidationError when it is
    neither."""
    parsed = _BODY.validate_json(body)
    return parsed.jobs if isinstance(parsed, PackedMessage) else [parsed]


_BODY: TypeAdapter[JobMessage | PackedMessage] = TypeAdapter(
    Annotated[JobMessage | PackedMessage, Field(discriminator="v")]
)


LEASE_CREDENTIAL_PREFIX = "lease."


class LeaseRef(BaseModel):
    """Names one attempt's lease. Every worker report carries it (fencing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: UUID
    attempt: JsonInt = Field(ge=1, le=2_147_483_647, strict=True)
    lease_token: UUID

    def credential(self) -> str:
        """The bearer credential that enqueues as the job's tenant while this lease lives:
        `lease.<job id>.<attempt>.<lease token>` (a worker's follow-up jobs need no tenant
        token)."""
        return f"{LEASE_CREDENTIAL_PREFIX}{self.job_id}.{self.attempt}.{self.lease_token}"

    @classmethod
    def from_credential(cls, credential: str) -> LeaseRef:
        """The lease a `credential()` names; ValueError when it is not one."""
        parts = credential.removeprefix(LEASE_CREDENTIAL_PREFIX).split(".")
        if not credential.startswith(LEASE_CREDENTIAL_PREFIX) or len(parts) != 3:
            raise ValueError("a lease credential is 'lease.<job id>.<attempt>.<lease token>'")
        job_id, attempt, token = parts
        # a job has at most 1,000 attempts (UseCaseConfig.max_attempts)
        if not (attempt.isascii() and attempt.isdigit() and 1 <= int(attempt) <= 1000):
            raise ValueError(f"attempt {attempt[:20]!r} is not a number from 1 to 1000")
        return cls(job_id=UUID(job_id), attempt=int(attempt), lease_token=UUID(token))


# JobMessage serializes `v`, `job_id`, `lease_token` and `attempt` first (a unit test holds
# that order): the lease can be read from the start of a body whose rest no parser reads.
_LEASE_PREFIX = re.compile(
    r'\{"v":1,"job_id":"([0-9a-f-]{36})","lease_token":"([0-9a-f-]{36})","attempt":(\d{1,10})[,}]'
)


def lease_from_body(body: str) -> LeaseRef | None:
    """The lease a job message's body names in its first fields, read without parsing the
    rest, so that a worker that cannot parse or validate a body still fails that attempt for
    good instead of leaving it to lease expiry. None when the body does not start so."""
    found = _LEASE_PREFIX.match(body)
    if found is None:
        return None
    try:
        return LeaseRef(job_id=UUID(found[1]), lease_token=UUID(found[2]), attempt=int(found[3]))
    except (ValueError, ValidationError):
        return None


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FailureInfo(BaseModel):
    """Why an attempt failed. Text PostgreSQL cannot store (NUL, unpaired surrogates) is kept
    with each such character replaced by U+FFFD, and a retry delay past MAX_RETRY_DELAY_SECONDS
    is that much: a failure is never lost for its details."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ReportedText = Field(max_length=200)
    message: ReportedText = Field(max_length=10_000)
    traceback: ReportedText | None = Field(default=None, max_length=100_000)
    retryable: bool = Field(default=True, strict=True)
    retry_delay_seconds: RetryDelay | None = None


class OutcomeReport(LeaseRef):
    """A result that breaks jobs_schema.limits (NUL, unpaired surrogates, NaN, nesting past
    MAX_PAYLOAD_DEPTH) cannot be stored: the report becomes a permanent failure saying why, on
    whichever side builds it, so that attempt fails with its reason and the rest of its batch
    applies."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"outcome": {"const": "failed"}}, "required": ["outcome"]},
            "then": {"required": ["failure"], "properties": {"failure": {"type": "object"}}},
            "else": {"properties": {"failure": {"type": "null"}}},
        }
    )

    outcome: OutcomeKind
    worker_id: WorkerId
    result: JsonValue = None
    failure: FailureInfo | None = None
    started_at: Timestamp | None = None

    @model_validator(mode="before")
    @classmethod
    def _unstorable_result_fails(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("outcome") != OutcomeKind.SUCCEEDED:
            return data
        try:
            json_text(data.get("result"), what="the handler's result")
        except JsonRefused as exc:
            failure = {"type": "ResultNotStorable", "message": str(exc), "retryable": False}
            return {**data, "outcome": OutcomeKind.FAILED.value, "result": None, "failure": failure}
        return data

    @model_validator(mode="after")
    def _failure_iff_failed(self) -> OutcomeReport:
        if (self.outcome is OutcomeKind.FAILED) != (self.failure is not None):
            raise ValueError("a failed outcome needs `failure`, and only a failed one")
        return self


class OutcomeRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reports: list[OutcomeReport] = Field(min_length=1, max_length=1000)


class OutcomeAck(BaseModel):
    """`applied` False: the report was stale (another attempt holds the job) and changed
    nothing. `status` is the job's status after the report."""

    model_config = ConfigDict(frozen=True)

    job_id: UUID
    applied: bool
    status: JobStatus | None


class OutcomeResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    acks: list[OutcomeAck]


class HeartbeatItem(LeaseRef):
    extend_seconds: float = Field(gt=0, le=12 * 3600, strict=True)


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: WorkerId
    items: list[HeartbeatItem] = Field(min_length=1, max_length=1000)


class LeaseState(StrEnum):
    HELD = "held"
    LOST = "lost"
    CANCELLED = "cancelled"


class HeartbeatResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: UUID
    state: LeaseState
    lease_expires_at: StoredTime | None = None


class HeartbeatResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    results: list[HeartbeatResult]


class ReleaseRequest(BaseModel):
    """Give back leases of attempts that did not run to the end (worker shutdown)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: WorkerId
    leases: Annotated[list[LeaseRef], Field(min_length=1, max_length=1000)]


class ReleaseResponse(BaseModel):
    """The attempts whose leases were given back (the others had already moved on)."""

    model_config = ConfigDict(frozen=True)

    released: list[UUID]


class CancellationsRequest(BaseModel):
    """Which of these running attempts were cancelled? The worker's cancellation poll (a read:
    it extends nothing). Only a lease's holder knows its token, so a worker learns only about
    its own attempts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: WorkerId
    leases: Annotated[list[LeaseRef], Field(min_length=1, max_length=1000)]


class CancellationsResponse(BaseModel):
    """The leases asked about whose job is marked for cancellation (still running under that
    very lease); the others are not mentioned."""

    model_config = ConfigDict(frozen=True)

    cancelled: list[LeaseRef]


class PayloadResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: UUID
    payload: Payload
