"""Liveness and readiness, unauthenticated, for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jobs_server.api.route import JobsRoute, operation_id, server_in
from jobs_server.errors import StoreUnavailable

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"], route_class=JobsRoute, generate_unique_id_function=operation_id)

_UNREADY: dict[int | str, dict[str, object]] = {
    503: {"description": "The database does not answer, or migrations are pending"}
}


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    responses=_UNREADY,
    summary="Readiness: the database answers and migrations are current",
)
async def readyz(request: Request) -> JSONResponse:
    store = server_in(request.scope).store
    try:
        pending = await store.pending_migrations()
    except StoreUnavailable as exc:
        return JSONResponse({"status": "unready", "database": str(exc)}, status_code=503)
    if pending:
        return JSONResponse(
            {
                "status": "unready",
                "database": "ok",
                "pending_migrations": pending,
                "fix": "run `jobs-server migrate`",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": "ok", "pending_migrations": []})
