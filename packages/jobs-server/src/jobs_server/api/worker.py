"""The worker API under /v1/worker, for the worker token only. Thin: rules are in
OutcomeService."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.responses import Response

from jobs_schema import (
    CancellationsRequest,
    CancellationsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    OutcomeRequest,
    OutcomeResponse,
    PayloadResponse,
    ReleaseRequest,
    ReleaseResponse,
)
from jobs_server.api.deps import Worker
from jobs_server.api.errors import BODY_ERRORS, documented_errors, json_response
from jobs_server.api.route import api_router, server_in
from jobs_server.outcomes import OutcomeService

__all__ = ["router"]

router = api_router("worker", prefix="/v1/worker")
_BODY = documented_errors(*BODY_ERRORS)


async def _outcomes(request: Request) -> OutcomeService:
    return server_in(request.scope).outcomes


Outcomes = Annotated[OutcomeService, Depends(_outcomes)]


@router.post("/outcomes", responses={200: {"model": OutcomeResponse}, **_BODY})
async def report_outcomes(body: OutcomeRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Apply a batch of outcomes; stale reports come back with applied=false."""
    return json_response(OutcomeResponse(acks=await outcomes.report(list(body.reports))))


@router.post(
    "/heartbeats",
    name="send_heartbeats",
    responses={200: {"model": HeartbeatResponse}, **_BODY},
)
async def heartbeats(body: HeartbeatRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Extend leases; each answer says held, lost or cancelled."""
    return json_response(await outcomes.heartbeat(body))


@router.post(
    "/cancellations",
    name="poll_cancellations",
    responses={200: {"model": CancellationsResponse}, **_BODY},
)
async def cancellations(body: CancellationsRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Which of these running attempts were cancelled (the worker asks every second while it
    runs jobs); a read, it extends no lease."""
    return json_response(await outcomes.cancellations(body))


@router.post(
    "/release", name="release_leases", responses={200: {"model": ReleaseResponse}, **_BODY}
)
async def release(body: ReleaseRequest, _: Worker, outcomes: Outcomes) -> Response:
    """Give back leases of attempts that will not finish (worker shutdown)."""
    return json_response(ReleaseResponse(released=await outcomes.release(body)))


@router.get(
    "/jobs/{job_id}/payload",
    name="get_job_payload",
    responses={200: {"model": PayloadResponse}, **documented_errors(404)},
)
async def payload(job_id: UUID, _: Worker, outcomes: Outcomes) -> Response:
    """The payload of a running job whose message left it out (too large for SQS)."""
    return json_response(await outcomes.payload(job_id))
