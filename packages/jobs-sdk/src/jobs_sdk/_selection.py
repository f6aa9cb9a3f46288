"""Requests of the operator actions (retry one job, count, cancel or retry every job matching
a filter), built once for the sync and async clients, like `_http` builds the others."""

from __future__ import annotations

from uuid import UUID

from jobs_schema import BulkAction, JobCountQuery, JobSelection, JobStatus
from jobs_sdk import _http
from jobs_sdk._http import Call, JobFilters
from jobs_sdk.errors import Conflict

__all__ = [
    "SelectionFilters",
    "bulk_call",
    "count_call",
    "retried_by_resend",
    "retry_call",
    "selection_of",
]

_RETRIED = {JobStatus.PENDING.value, JobStatus.RUNNING.value}


class SelectionFilters(JobFilters, total=False):
    """jobs_schema.JobSelection's fields as keyword arguments: a listing's filters, plus
    `max_id` (from `count()`: jobs created after the count are left alone) and `limit` (touch
    at most this many; default 10,000)."""

    max_id: UUID | str | None
    limit: int


def retry_call(job_id: UUID | str) -> Call:
    # Replayable because the clients treat "already pending" after a resend as success.
    return Call("POST", f"/v1/jobs/{_http._job_id(job_id)}/retry")


def retried_by_resend(err: Conflict, attempts: int) -> bool:
    """A resent retry whose first send went through finds the job pending (or running)."""
    return attempts > 1 and err.details.get("status") in _RETRIED


def selection_of(selection: JobSelection | None, filters: SelectionFilters) -> JobSelection:
    """The JobSelection the arguments describe; ValidationFailed for a bad filter."""
    if selection is not None:
        if filters:
            raise TypeError("pass either a JobSelection or its fields, not both")
        return selection
    fields = {name: value for name, value in filters.items() if value is not None}
    return _http._validated(JobSelection, fields)


def bulk_call(action: BulkAction, selection: JobSelection) -> Call:
    # Not replayable: a resend would report zero jobs touched for what the first send did.
    return Call(
        "POST",
        f"/v1/jobs/{action.value}",
        content=selection.model_dump_json(exclude_none=True).encode(),
        replayable=False,
    )


def count_call(filters: JobFilters, action: BulkAction | None) -> Call:
    fields = {**_http.job_filter(filters).given(), "action": action}
    query = _http._validated(JobCountQuery, fields)
    return Call("GET", "/v1/jobs/count", params=_http.query_params(query))
