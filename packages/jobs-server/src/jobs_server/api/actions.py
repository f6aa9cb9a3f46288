"""Operator actions under /v1: retry a job, count jobs matching a filter, and cancel or retry
all of them. Thin, like public.py: every rule is in ActionService, which the dashboard calls
too. Include this router before public.py's, whose /v1/jobs/{job_id} would take /count."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.responses import Response

from jobs_schema import (
    BulkResult,
    Job,
    JobCount,
    JobCountQuery,
    JobSelection,
)
from jobs_server.actions import ActionService
from jobs_server.api.deps import Producer, Reader
from jobs_server.api.errors import BODY_ERRORS, documented_errors, json_response
from jobs_server.api.route import api_router, server_in

__all__ = ["router"]

router = api_router("actions")


async def _actions_of(request: Request) -> ActionService:
    return server_in(request.scope).actions


Actions = Annotated[ActionService, Depends(_actions_of)]


@router.get(
    "/jobs/count",
    responses={200: {"model": JobCount}, **documented_errors(400)},
    summary="Count the jobs matching the filters of GET /v1/jobs (to confirm a bulk action)",
)
async def count_jobs(
    who: Reader, actions: Actions, query: Annotated[JobCountQuery, Query()]
) -> Response:
    selection = JobSelection(**query.given())
    return json_response(await actions.count(who, selection, action=query.action))


@router.post(
    "/jobs/cancel",
    responses={200: {"model": BulkResult}, **documented_errors(*BODY_ERRORS)},
    summary="Cancel every pending job matching the filter, and mark every running one",
)
async def cancel_jobs(body: JobSelection, who: Producer, actions: Actions) -> Response:
    return json_response(await actions.cancel_matching(who, body))


@router.post(
    "/jobs/retry",
    responses={200: {"model": BulkResult}, **documented_errors(*BODY_ERRORS)},
    summary="Retry now every dead, cancelled or expired job matching the filter",
)
async def retry_jobs(body: JobSelection, who: Producer, actions: Actions) -> Response:
    return json_response(await actions.retry_matching(who, body))


@router.post(
    "/jobs/{job_id}/retry",
    responses={200: {"model": Job}, **documented_errors(404, 409, 429)},
    summary="Retry a dead, cancelled or expired job now, with one more attempt and a new deadline",
)
async def retry_job(job_id: UUID, who: Producer, actions: Actions) -> Response:
    return json_response(await actions.retry(who, job_id))
