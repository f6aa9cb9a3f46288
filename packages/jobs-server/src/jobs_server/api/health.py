"""Liveness and readiness, unauthenticated, for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jobs_server.errors import StoreUnavailable

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: the database answers and migrations are current")
async def readyz(request: Request) -> JSONResponse:
    store = request.app.state.jobs.store
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
