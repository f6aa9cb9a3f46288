"""GET /v1/use-cases/{use_case}/rate-keys: a use case's rate limit and its busiest keys. Thin:
the rules are in FlowService, which the dashboard calls too."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.responses import Response

from jobs_schema import RateKeyList
from jobs_schema.limits import Key
from jobs_server.api.deps import Reader
from jobs_server.api.errors import documented_errors, json_response
from jobs_server.api.route import api_router, server_in

__all__ = ["router"]

router = api_router("flow limits")


@router.get(
    "/use-cases/{use_case}/rate-keys",
    responses={200: {"model": RateKeyList}, **documented_errors(403, 422)},
    summary="A use case's rate limit and its busiest rate keys: starts, next slot, waiting",
)
async def list_rate_keys(
    request: Request,
    who: Reader,
    use_case: Annotated[Key, Path()],
    limit: Annotated[int, Query(ge=1, le=100, description="1-100 keys")] = 20,
) -> Response:
    flow = server_in(request.scope).flow
    return json_response(await flow.rate_keys(who, use_case, limit=limit))
