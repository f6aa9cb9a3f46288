"""GET /v1/use-cases/{use_case}/forecast: a use case's backlog by deadline horizon, its
projected misses and the worker slots it needs. Thin: the rules are in JobService and
jobs_server.feasibility."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from fastapi.responses import Response

from jobs_schema import UseCaseForecast
from jobs_schema.limits import Key
from jobs_server.api.deps import Reader, Service
from jobs_server.api.errors import documented_errors, json_response
from jobs_server.api.route import api_router

__all__ = ["router"]

router = api_router("feasibility")


@router.get(
    "/use-cases/{use_case}/forecast",
    responses={200: {"model": UseCaseForecast}, **documented_errors(404, 409, 422)},
    summary="A use case's backlog by deadline horizon, projected misses and slots needed",
)
async def get_forecast(who: Reader, service: Service, use_case: Annotated[Key, Path()]) -> Response:
    return json_response(await service.forecast(who, use_case))
