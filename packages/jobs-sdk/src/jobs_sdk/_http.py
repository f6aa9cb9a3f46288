"""Everything the sync and async clients share except I/O: building requests from our
arguments, and turning responses into models or exceptions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, JsonValue, ValidationError

from jobs_schema import (
    BackoffPolicy,
    BatchEnqueueRequest,
    BatchEnqueueResponse,
    BatchItemResult,
    EnqueueRequest,
    EnqueueResponse,
    ErrorEnvelope,
    JobFilter,
    JobListQuery,
    JobStatus,
    MissPolicy,
    UniqueRule,
)
from jobs_sdk._version import __version__
from jobs_sdk.errors import (
    JobsError,
    JobsTimeout,
    PayloadTooLarge,
    Unavailable,
    ValidationFailed,
    error_for_status,
    error_from_body,
)

__all__ = [
    "Call",
    "EnqueueOptions",
    "JobFilters",
    "batch_call",
    "batch_outcomes",
    "cancel_call",
    "client_headers",
    "enqueue_call",
    "enqueue_request",
    "failing_index",
    "get_call",
    "is_item_error",
    "job_filter",
    "list_call",
    "merge_groups",
    "new_idempotency_key",
    "parse",
    "query_params",
    "split_groups",
    "transport_error",
]

M = TypeVar("M", bound=BaseModel)


class EnqueueOptions(TypedDict, total=False):
    """Optional fields of an enqueue, as keyword arguments."""

    run_at: datetime | None
    deadline: datetime | None
    delay_tolerance: float | timedelta | None
    priority: int
    dedup_key: str | None
    # a UniqueRule, or its fields: {"key": "k", "window": "enqueued", "seconds": 3600}
    unique: UniqueRule | Mapping[str, object] | None
    concurrency_key: str | None
    rate_key: str | None
    max_attempts: int | None
    backoff: BackoffPolicy | None
    # if still pending past its deadline: "run_late" or "expire"; None: the use case's
    miss_policy: MissPolicy | str | None
    # with miss policy expire: seconds (or a timedelta) past the deadline it may still start
    expire_grace: float | timedelta | None


class JobFilters(TypedDict, total=False):
    """jobs_schema.JobFilter's fields as keyword arguments (a unit test keeps them the same);
    `tenant` is for admin tokens only."""

    status: JobStatus | str | None
    use_case: str | None
    job_type: str | None
    tenant: str | None
    dedup_key: str | None
    created_after: datetime | None
    created_before: datetime | None


@dataclass(frozen=True)
class Call:
    """One API request, ready to be sent (and resent) as is.

    `replayable`: sending it twice does no more than sending it once (reads, and POSTs that
    carry an Idempotency-Key), so it may be resent even after it may have reached the server.
    """

    method: str
    path: str
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    replayable: bool = True

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if self.content is not None else {}
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers


def client_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": f"jobs-sdk/{__version__}",
    }


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


# -- requests --------------------------------------------------------------------------------


def enqueue_request(
    use_case: str | EnqueueRequest,
    job_type: str | None,
    payload: Mapping[str, JsonValue] | None,
    options: EnqueueOptions,
) -> EnqueueRequest:
    """The request the arguments of `enqueue` describe; ValidationFailed when it breaks a rule
    that can be checked without the server."""
    if isinstance(use_case, EnqueueRequest):
        if job_type is not None or payload is not None or options:
            raise TypeError("pass either an EnqueueRequest or its fields, not both")
        return use_case
    if job_type is None:
        raise TypeError("enqueue() needs a job_type")
    unknown = sorted(set(options) - set(EnqueueOptions.__annotations__))
    if unknown:
        accepted = ", ".join(EnqueueOptions.__annotations__)
        raise TypeError(f"enqueue() got unknown options {unknown}; it takes {accepted}")
    fields = dict(options, use_case=use_case, job_type=job_type, payload=dict(payload or {}))
    tolerance = fields.pop("delay_tolerance", None)
    if isinstance(tolerance, timedelta):
        tolerance = tolerance.total_seconds()
    grace = fields.pop("expire_grace", None)
    if isinstance(grace, timedelta):
        grace = grace.total_seconds()
    return _validated(
        EnqueueRequest,
        {**fields, "delay_tolerance_seconds": tolerance, "expire_grace_seconds": grace},
    )


def _validated(model: type[M], fields: dict[str, object]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False, include_input=False))
        raise ValidationFailed(_summary(exc), details={"errors": errors}) from exc


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()[:5]
    )


def enqueue_call(request: EnqueueRequest, idempotency_key: str | None) -> Call:
    return Call(
        "POST",
        "/v1/jobs",
        content=request.model_dump_json(exclude_defaults=True).encode(),
        idempotency_key=idempotency_key,
        replayable=idempotency_key is not None,
    )


def batch_call(requests: Sequence[EnqueueRequest], idempotency_key: str | None) -> Call:
    batch = _validated(BatchEnqueueRequest, {"jobs": list(requests)})
    return Call(
        "POST",
        "/v1/jobs/batch",
        content=batch.model_dump_json(exclude_defaults=True).encode(),
        idempotency_key=idempotency_key,
        replayable=idempotency_key is not None,
    )


def get_call(job_id: UUID | str) -> Call:
    return Call("GET", f"/v1/jobs/{_job_id(job_id)}")


def cancel_call(job_id: UUID | str) -> Call:
    # Replayable because the clients treat "already cancelled" after a resend as success.
    return Call("POST", f"/v1/jobs/{_job_id(job_id)}/cancel")


def forecast_call(use_case: str) -> Call:
    if not use_case or "/" in use_case:
        raise ValidationFailed(f"not a use case name: {use_case!r}")
    return Call("GET", f"/v1/use-cases/{use_case}/forecast")


def job_filter(filters: Mapping[str, object]) -> JobFilter:
    """The JobFilter the keyword arguments describe; ValidationFailed for a bad filter."""
    return _validated(
        JobFilter, {name: value for name, value in filters.items() if value is not None}
    )


def list_call(filters: JobFilters, *, cursor: str | None, limit: int) -> Call:
    fields = {**job_filter(filters).given(), "cursor": cursor, "limit": limit}
    return Call("GET", "/v1/jobs", params=query_params(_validated(JobListQuery, fields)))


def query_params(query: BaseModel) -> dict[str, str]:
    """A query model as the query string's parameters (None fields left out)."""
    return {name: _param(value) for name, value in query.model_dump(exclude_none=True).items()}


def _param(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _job_id(job_id: UUID | str) -> UUID:
    try:
        return job_id if isinstance(job_id, UUID) else UUID(job_id)
    except ValueError as exc:
        raise ValidationFailed(f"not a job id: {job_id!r}") from exc


# -- responses -------------------------------------------------------------------------------


def parse(response: httpx.Response, model: type[M]) -> M:
    """The body of a successful answer as `model`; the mapped JobsError otherwise."""
    if response.is_success:
        return model.model_validate_json(response.content)
    raise _error(response)


def _error(response: httpx.Response) -> JobsError:
    try:
        envelope = ErrorEnvelope.model_validate_json(response.content)
    except ValidationError:
        return error_for_status(response.status_code, _describe(response))
    return error_from_body(envelope.error, response.status_code)


def _describe(response: httpx.Response) -> str:
    text = response.text.strip()[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def batch_outcomes(response: BatchEnqueueResponse) -> list[EnqueueResponse | JobsError]:
    """One outcome per submitted item, in submission order."""
    return [_outcome(item) for item in sorted(response.results, key=lambda r: r.index)]


def _outcome(item: BatchItemResult) -> EnqueueResponse | JobsError:
    if item.error is not None:
        return error_from_body(item.error)
    if item.job is None:
        return JobsError(f"batch item {item.index} has neither a job nor an error")
    return EnqueueResponse(
        job=item.job,
        deduplicated=item.deduplicated,
        expected_start_at=item.expected_start_at,
        at_risk=item.at_risk,
    )


def transport_error(exc: httpx.TransportError) -> JobsError:
    """What a caller sees when the server could not be reached (after every retry)."""
    if isinstance(exc, httpx.TimeoutException):
        return JobsTimeout(f"request timed out: {type(exc).__name__}")
    return Unavailable(f"cannot reach the jobs server: {type(exc).__name__}: {exc}")


# -- splitting a refused batch ---------------------------------------------------------------


def is_item_error(err: JobsError) -> bool:
    """Whether a batch refused whole with `err` may hold items that would be accepted alone."""
    return isinstance(err, ValidationFailed | PayloadTooLarge)


def split_groups(size: int, err: JobsError) -> list[list[int]]:
    """How to resend a batch of `size` items refused whole with `err`: the item it names on
    its own and the rest together, else in halves. Each part fails or succeeds on its own."""
    bad = failing_index(err)
    if bad is not None and 0 <= bad < size:
        return [[bad], [i for i in range(size) if i != bad]]
    half = size // 2
    return [list(range(half)), list(range(half, size))]


def failing_index(err: JobsError) -> int | None:
    """The batch index that a whole-batch error blames, if it names one."""
    index = err.details.get("index")
    if isinstance(index, int):
        return index
    errors = err.details.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return _index_in_loc(errors[0].get("loc"))
    return None


def _index_in_loc(loc: JsonValue) -> int | None:
    # A request validation error points at ["body", "jobs", "<index>", ...].
    if isinstance(loc, list) and len(loc) > 2 and loc[:2] == ["body", "jobs"]:
        item = loc[2]
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            return int(item)
    return None


def merge_groups(
    groups: Sequence[Sequence[int]], parts: Sequence[Sequence[EnqueueResponse | JobsError]]
) -> list[EnqueueResponse | JobsError]:
    """Put the outcomes of the parts of a split batch back in the batch's order."""
    merged: dict[int, EnqueueResponse | JobsError] = {}
    for group, part in zip(groups, parts, strict=True):
        merged.update(zip(group, part, strict=True))
    return [merged[i] for i in range(len(merged))]
