"""Periodic jobs under /v1/schedules: thin, every rule is in ScheduleService. A tenant's token
manages its own schedules; an admin token names the tenant with `?tenant=`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response

from jobs_schema import Schedule, ScheduleCreate, SchedulePage
from jobs_schema.limits import Key, Text
from jobs_schema.schedules import MAX_SCHEDULE_PAGE
from jobs_server.api.deps import Producer, Reader
from jobs_server.api.errors import BODY_ERRORS, documented_errors, json_response
from jobs_server.api.route import api_router, server_in
from jobs_server.schedules import ScheduleService

__all__ = ["router"]

router = api_router("schedules", prefix="/v1/schedules")


async def _schedules_of(request: Request) -> ScheduleService:
    return server_in(request.scope).schedules


Schedules = Annotated[ScheduleService, Depends(_schedules_of)]
Name = Annotated[Key, Path(description="the schedule's name, unique within its tenant")]
Cursor = Annotated[
    Text | None,
    Query(max_length=2000, description="the next_cursor of the previous page; none: the first"),
]
PageLimit = Annotated[
    int, Query(ge=1, le=MAX_SCHEDULE_PAGE, description="schedules a page, 1 to 1000")
]
Tenant = Annotated[
    Key | None, Query(description="an admin token's choice of tenant; a tenant token's own")
]


@router.post(
    "",
    status_code=201,
    responses={201: {"model": Schedule}, **documented_errors(*BODY_ERRORS, 409)},
    summary="Create a schedule for the token's tenant (cron or interval)",
)
async def create_schedule(body: ScheduleCreate, who: Producer, schedules: Schedules) -> Response:
    return json_response(await schedules.create(who, body), 201)


@router.get(
    "",
    responses={200: {"model": SchedulePage}, **documented_errors(400)},
    summary="List schedules with their last and next run, a page at a time",
)
async def list_schedules(
    who: Reader,
    schedules: Schedules,
    tenant: Tenant = None,
    cursor: Cursor = None,
    limit: PageLimit = MAX_SCHEDULE_PAGE,
) -> Response:
    return json_response(await schedules.list(who, tenant=tenant, cursor=cursor, limit=limit))


@router.get(
    "/{name}",
    responses={200: {"model": Schedule}, **documented_errors(400, 404)},
    summary="A schedule",
)
async def get_schedule(
    name: Name, who: Reader, schedules: Schedules, tenant: Tenant = None
) -> Response:
    return json_response(await schedules.get(who, name, tenant=tenant))


@router.post(
    "/{name}/pause",
    responses={200: {"model": Schedule}, **documented_errors(400, 404, 409)},
    summary="Pause a schedule: no ticks until it is resumed",
)
async def pause_schedule(
    name: Name, who: Producer, schedules: Schedules, tenant: Tenant = None
) -> Response:
    return json_response(await schedules.pause(who, name, tenant=tenant))


@router.post(
    "/{name}/resume",
    responses={200: {"model": Schedule}, **documented_errors(400, 404, 409)},
    summary="Resume a schedule at its next tick (ticks while paused are not made up)",
)
async def resume_schedule(
    name: Name, who: Producer, schedules: Schedules, tenant: Tenant = None
) -> Response:
    return json_response(await schedules.resume(who, name, tenant=tenant))


@router.delete(
    "/{name}",
    status_code=204,
    responses={204: {"description": "Deleted"}, **documented_errors(400, 404, 409)},
    summary="Delete a schedule (one from the config file cannot be)",
)
async def delete_schedule(
    name: Name, who: Producer, schedules: Schedules, tenant: Tenant = None
) -> Response:
    await schedules.delete(who, name, tenant=tenant)
    return Response(status_code=204)
