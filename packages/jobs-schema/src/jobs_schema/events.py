"""The live event stream (server-sent events): `GET /v1/jobs/{id}/events` and `GET /v1/events`.

The stream is state-based and at most once: each `job` event carries a job's current head (its
state as read after a change committed), not the change itself. Intermediate states may be
skipped (a job that ran and succeeded between two reads shows as succeeded), nothing is
replayed after a reconnect, and `Last-Event-ID` is not honoured. A client that must not miss
an outcome re-reads what it cares about when a stream (re)opens and after a `lagged` or
`reconnected` notice; `GET /v1/jobs/{id}/events` always opens with the job's current state.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from jobs_schema.jobs import FINISHED_STATUSES, JobStatus, StoredTime
from jobs_schema.limits import Key

__all__ = [
    "MAX_EVENT_STATUSES",
    "EventKind",
    "EventQuery",
    "JobEvent",
    "JobHead",
    "StreamNotice",
    "sse_frame",
]

# `status` may be repeated up to this many times (there are fewer statuses than this).
MAX_EVENT_STATUSES = 8


class EventKind(StrEnum):
    """The SSE `event:` field of each message of a stream."""

    JOB = "job"  # data: JobHead, the job's current state
    LAGGED = "lagged"  # data: StreamNotice; this client fell behind, the stream ends
    RECONNECTED = "reconnected"  # data: StreamNotice; events may have been missed, re-read
    SHUTDOWN = "shutdown"  # data: StreamNotice; the server is stopping, the stream ends


class JobHead(BaseModel):
    """A job's state without its payload, result or history: what a stream sends."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    tenant: str
    use_case: str
    job_type: str
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: StoredTime
    deadline: StoredTime
    deadline_missed: bool = False
    cancel_requested: bool = False
    updated_at: StoredTime
    finished_at: StoredTime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class StreamNotice(BaseModel):
    """What a `lagged`, `reconnected` or `shutdown` message says."""

    model_config = ConfigDict(frozen=True)

    message: str


class JobEvent(BaseModel):
    """One message of a stream as the SDK yields it: a job's head, or a notice."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    job: JobHead | None = None
    notice: StreamNotice | None = None


class EventQuery(BaseModel):
    """The filters of `GET /v1/events`: every given field must match. `status` may be
    repeated (any of them). A tenant token sees its own jobs only; `tenant` narrows an admin's
    view. Unknown query parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: Key | None = Field(default=None, description="only this use case")
    job_type: Key | None = Field(default=None, description="only this job type")
    status: list[JobStatus] = Field(
        default_factory=list,
        max_length=MAX_EVENT_STATUSES,
        description="only jobs entering one of these statuses (repeatable)",
    )
    tenant: Key | None = Field(default=None, description="only this tenant (admins only)")

    def matches(self, head: JobHead) -> bool:
        return (
            (self.use_case is None or head.use_case == self.use_case)
            and (self.job_type is None or head.job_type == self.job_type)
            and (not self.status or head.status in self.status)
            and (self.tenant is None or head.tenant == self.tenant)
        )


def sse_frame(kind: EventKind, data: BaseModel, *, event_id: str | None = None) -> bytes:
    """One server-sent event: `event:`, an optional `id:` and the model's JSON as `data:`
    (JSON holds no newline, so one `data:` line)."""
    head = f"event: {kind.value}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return (head + "data: " + data.model_dump_json() + "\n\n").encode()
