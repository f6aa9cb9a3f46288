"""GET /metrics: the Prometheus text exposition of this process (or, in multiprocess mode, of
every process under PROMETHEUS_MULTIPROC_DIR). Open unless JOBS_METRICS_TOKEN is set; then it
wants `Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from jobs_schema import ErrorCode
from jobs_server.api.errors import ApiError
from jobs_server.metrics import CONTENT_TYPE, ServerMetrics

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    server = request.app.state.jobs
    token: str | None = server.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "GET /metrics wants the metrics token")
    registry: ServerMetrics = server.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
