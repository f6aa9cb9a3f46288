"""Pause and resume under /v1/pauses. Thin: every rule is in PauseService (jobs_server.pauses),
which the dashboard calls too."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from jobs_schema import PauseList, PauseRequest, PauseState
from jobs_server.api.deps import Producer, Reader
from jobs_server.api.errors import BODY_ERRORS, documented_errors, json_response
from jobs_server.api.route import api_router, server_in
from jobs_server.pauses import PauseService

__all__ = ["router"]

router = api_router("pauses")


async def _pauses_of(request: Request) -> PauseService:
    return server_in(request.scope).pauses


Pauses = Annotated[PauseService, Depends(_pauses_of)]


@router.get(
    "/pauses",
    responses={200: {"model": PauseList}},
    summary="The paused scopes and the latest changes (a tenant: those that stop its jobs)",
)
async def list_pauses(who: Reader, pauses: Pauses) -> Response:
    return json_response(await pauses.list(who))


@router.post(
    "/pauses",
    responses={200: {"model": PauseState}, **documented_errors(*BODY_ERRORS)},
    summary="Pause a use case, a tenant, or a tenant within a use case (idempotent)",
    description="Pending jobs of the scope stay pending and are not claimed from the "
    "scheduler's next pass on; running ones finish. Pausing a paused scope changes nothing "
    "(`changed` false). Admins pause any scope; a tenant token its own tenant only.",
)
async def pause_queue(body: PauseRequest, who: Producer, pauses: Pauses) -> Response:
    return json_response(await pauses.pause(who, body))


@router.post(
    "/pauses/resume",
    responses={200: {"model": PauseState}, **documented_errors(*BODY_ERRORS)},
    summary="Resume a paused scope (idempotent)",
    description="The scheduler is woken and claims the scope's due jobs earliest deadline "
    "first. Resuming a scope that is not paused changes nothing (`changed` false).",
)
async def resume_queue(body: PauseRequest, who: Producer, pauses: Pauses) -> Response:
    return json_response(await pauses.resume(who, body))
