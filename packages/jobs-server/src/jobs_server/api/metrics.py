"""GET /metrics: the Prometheus text exposition of this process (or, in multiprocess mode, of
every process under PROMETHEUS_MULTIPROC_DIR). Open unless JOBS_METRICS_TOKEN is set; then it
wants `Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from jobs_schema import ErrorCode
from jobs_server.api.errors import ApiError, documented_errors
from jobs_server.api.route import JobsRoute, operation_id, server_in
from jobs_server.metrics import CONTENT_TYPE, ServerMetrics

__all__ = ["router"]

router = APIRouter(
    tags=["metrics"], route_class=JobsRoute, generate_unique_id_function=operation_id
)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **documented_errors(401),
    },
)
async def metrics(request: Request) -> Response:
    server = server_in(request.scope)
    token: str | None = server.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "GET /metrics wants the metrics token")
    registry: ServerMetrics | None = server.metrics
    assert registry is not None, "the metrics router is included only when metrics are on"
    return Response(registry.render(), media_type=CONTENT_TYPE)
