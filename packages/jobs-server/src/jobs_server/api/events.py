"""The event streams (server-sent events): thin, every rule is in jobs_server.streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from jobs_schema import ErrorEnvelope, EventQuery
from jobs_server.api.deps import Reader
from jobs_server.api.errors import documented_errors
from jobs_server.api.route import api_router, server_in
from jobs_server.streams import JobStreams

__all__ = ["router"]

router = api_router("events")

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_STREAM = {
    "description": "Server-sent events: `event: job` with a JobHead as `data` (the job's "
    "current state), `lagged`, `reconnected` or `shutdown` with a notice, and `: keepalive` "
    "comments. At most once and state-based: nothing is replayed (docs/events.md).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_LIMITS: dict[int | str, dict[str, object]] = {
    429: {
        "model": ErrorEnvelope,
        "description": "The tenant's streams on this server are at "
        "their limit (JOBS_EVENTS_MAX_STREAMS_PER_TENANT; see Retry-After)",
    },
    503: {
        "model": ErrorEnvelope,
        "description": "The database is unavailable, or this server "
        "holds its maximum of streams or is stopping (see Retry-After)",
    },
}


def _streams(request: Request) -> JobStreams:
    return server_in(request.scope).streams


def _sse(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=_HEADERS)


@router.get(
    "/jobs/{job_id}/events",
    responses={200: _STREAM, **documented_errors(404), **_LIMITS},
    summary="Follow one job: its current state, then each change, until it ends",
    response_class=StreamingResponse,
)
async def stream_job_events(job_id: UUID, who: Reader, request: Request) -> StreamingResponse:
    return _sse(await _streams(request).job_events(who, job_id))


@router.get(
    "/events",
    responses={200: _STREAM, **_LIMITS},
    summary="Follow the changes of a tenant's jobs (filters: use_case, job_type, status)",
    response_class=StreamingResponse,
)
async def stream_events(
    who: Reader, request: Request, query: Annotated[EventQuery, Query()]
) -> StreamingResponse:
    return _sse(await _streams(request).tenant_events(who, query))
