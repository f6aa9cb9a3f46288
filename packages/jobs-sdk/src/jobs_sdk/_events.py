"""The event streams' wire (server-sent events) and the rules of a streaming `wait()`, shared by
both clients; only the I/O differs (client.py).

The stream is at most once and state-based (docs/events.md): a `wait()` that loses its stream
opens it again (it starts with the job's current state) and, when streaming is not possible
(an older server answering 404, a proxy in the way, the connection refused), polls."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import httpx
from pydantic import ValidationError

from jobs_schema import EventKind, EventQuery, JobEvent, JobHead, JobStatus, StreamNotice
from jobs_sdk import _http
from jobs_sdk.errors import JobsError, JobsTimeout

__all__ = [
    "EventFilters",
    "SseParser",
    "StreamWait",
    "events_params",
    "job_events_path",
    "stream_timeout",
]

# A stream that ends this many times in a row without a job event is given up for polling.
_MAX_EMPTY_STREAMS = 3


@dataclass
class SseParser:
    """Server-sent events, a line at a time (without its line break), to JobEvents; messages
    of a kind this SDK does not know are skipped."""

    _kind: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> JobEvent | None:
        if not line:
            kind, data = self._kind, "\n".join(self._data)
            self._kind, self._data = "", []
            return _event(kind, data) if data else None
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        return None


def _event(kind: str, data: str) -> JobEvent | None:
    try:
        known = EventKind(kind)
        if known is EventKind.JOB:
            return JobEvent(kind=known, job=JobHead.model_validate_json(data))
        return JobEvent(kind=known, notice=StreamNotice.model_validate_json(data))
    except (ValueError, ValidationError):
        return None


@dataclass(frozen=True)
class EventFilters:
    use_case: str | None = None
    job_type: str | None = None
    status: Sequence[JobStatus | str] = ()
    tenant: str | None = None


def events_params(filters: EventFilters) -> httpx.QueryParams:
    """The query of GET /v1/events, checked here first (ValidationFailed, nothing sent)."""
    query = _http._validated(
        EventQuery,
        {
            "use_case": filters.use_case,
            "job_type": filters.job_type,
            "status": list(filters.status),
            "tenant": filters.tenant,
        },
    )
    fields = {"use_case": query.use_case, "job_type": query.job_type, "tenant": query.tenant}
    params = [(name, value) for name, value in fields.items() if value is not None]
    return httpx.QueryParams([*params, *(("status", s.value) for s in query.status)])


def job_events_path(job_id: UUID | str) -> str:
    return f"/v1/jobs/{_http._job_id(job_id)}/events"


def stream_timeout(base: httpx.Timeout, read: float | None) -> httpx.Timeout:
    """The client's timeouts with `read` as the longest wait for the next line."""
    return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)


class StreamWait:
    """What a streaming `wait()` knows: its deadline, the last status seen, and whether the
    stream is still worth opening."""

    def __init__(self, job_id: UUID | str, timeout: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.status: JobStatus | None = None
        self._empty = 0
        self.streams = 0  # streams opened, for tests

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def opened(self) -> None:
        self.streams += 1
        self._empty += 1

    def seen(self, event: JobEvent) -> bool:
        """True once the job has finished."""
        if event.job is None:
            return False
        self._empty = 0
        self.status = event.job.status
        return event.job.finished

    def worth_reopening(self) -> bool:
        return self._empty < _MAX_EMPTY_STREAMS and self.remaining() > 0

    def timed_out(self) -> JobsTimeout:
        status = self.status.value if self.status else "unknown"
        return JobsTimeout(
            f"job {self.job_id} is still {status} after {self.timeout} s",
            details={"job_id": str(self.job_id), "status": status},
        )


def is_stream(response: httpx.Response) -> bool:
    """An event stream answered (not an error, nor a page a proxy put in its place)."""
    media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return response.is_success and media == "text/event-stream"


def lost(exc: Exception) -> JobEvent:
    """What `events()` yields when its connection dropped and it opens the stream again."""
    message = f"connection lost ({type(exc).__name__}); reconnecting: re-read the jobs"
    return JobEvent(kind=EventKind.RECONNECTED, notice=StreamNotice(message=message))


def refusal(response: httpx.Response) -> JobsError:
    """The JobsError of a stream the server would not open (its body read already)."""
    try:
        _http.parse(response, StreamNotice)
    except JobsError as err:
        return err
    return JobsError(f"unexpected answer {response.status_code} to a stream request")
