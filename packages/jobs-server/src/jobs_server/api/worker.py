"""The worker API under /v1/worker, for the worker token only. Thin: rules are in
OutcomeService."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from jobs_schema import (
    HeartbeatRequest,
    HeartbeatResponse,
    OutcomeRequest,
    OutcomeResponse,
    PayloadResponse,
    ReleaseRequest,
)
from jobs_server.api.deps import Worker
from jobs_server.api.errors import documented_errors, json_response
from jobs_server.outcomes import OutcomeService

__all__ = ["router"]

_ERRORS = documented_errors(401, 403, 404, 413, 422, 503)

router = APIRouter(prefix="/v1/worker", tags=["worker"], responses=_ERRORS)


async def _outcomes(request: Request) -> OutcomeService:
    service: OutcomeService = request.app.state.jobs.outcomes
    return service


Outcomes = Annotated[OutcomeService, Depends(_outcomes)]


class ReleaseResponse(BaseModel):
    released: list[UUID]


@router.post("/outcomes", responses={200: {"model": OutcomeResponse}})
async def report_outcomes(body: OutcomeRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Apply a batch of outcomes; stale reports come back with applied=false."""
    return json_response(OutcomeResponse(acks=await outcomes.report(list(body.reports))))


@router.post("/heartbeats", responses={200: {"model": HeartbeatResponse}})
async def heartbeats(body: HeartbeatRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Extend leases; each answer says held, lost or cancelled."""
    return json_response(await outcomes.heartbeat(body))


@router.post("/release", responses={200: {"model": ReleaseResponse}})
async def release(body: ReleaseRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Give back leases of attempts that will not finish (worker shutdown)."""
    return json_response(ReleaseResponse(released=await outcomes.release(body)))


@router.get("/jobs/{job_id}/payload", responses={200: {"model": PayloadResponse}})
async def payload(job_id: UUID, _: Worker, outcomes: Outcomes) -> Response:
    """The payload of a running job whose message left it out (too large for SQS)."""
    return json_response(await outcomes.payload(job_id))
