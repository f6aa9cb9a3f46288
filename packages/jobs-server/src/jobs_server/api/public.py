"""The producer API under /v1: thin, every rule is in JobService."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, get_type_hints
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from jobs_schema import (
    BatchEnqueueRequest,
    BatchEnqueueResponse,
    EnqueueRequest,
    EnqueueResponse,
    ErrorCode,
    Job,
    JobPage,
    JobStatus,
)
from jobs_server.api.deps import Enqueuer, Producer, Reader, Service, enqueuer_of, service_of
from jobs_server.api.errors import ApiError, documented_errors, json_response
from jobs_server.auth import Principal
from jobs_server.service import request_hash

__all__ = ["router"]

_ERRORS = documented_errors(400, 401, 403, 404, 409, 413, 422, 429, 503)

router = APIRouter(prefix="/v1", tags=["jobs"], responses=_ERRORS)

_KEY_MAX = 200
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", max_length=_KEY_MAX, description="makes retries of a POST safe"
    ),
]


class _FastPost(APIRoute):
    """The enqueue routes. FastAPI's generic handling (solving the dependency tree, then
    json.loads and validating the dict) cost more server CPU than the rest of a single enqueue.
    So a request that is plainly fine, a JSON body that pydantic's JSON parser validates in one
    pass and a token that may write, calls the endpoint directly. Anything else, every error and
    any dependency override, goes through FastAPI's own handler: what callers see, errors
    included, and the OpenAPI schema stay FastAPI's. The endpoints take exactly the arguments
    `_fast_args` builds."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        slow = super().get_route_handler()
        endpoint = self.endpoint
        model: type[BaseModel] = get_type_hints(endpoint, include_extras=False)["body"]

        async def handler(request: Request) -> Response:
            args = await _fast_args(request, model)
            if args is None:
                return await slow(request)
            response: Response = await endpoint(**args)
            return response

        return handler


async def _fast_args(request: Request, model: type[BaseModel]) -> dict[str, Any] | None:
    """The endpoint's arguments when nothing about the request needs FastAPI; else None."""
    if getattr(request.app, "dependency_overrides", None):
        return None
    media_type = request.headers.get("content-type", "").partition(";")[0]
    if media_type.strip().lower() != "application/json":
        return None
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > _KEY_MAX:
        return None
    try:
        who = await enqueuer_of(request)
        body = model.model_validate_json(await request.body())
    except (ApiError, ValidationError):
        return None
    return {
        "body": body,
        "who": who,
        "service": await service_of(request),
        "request": request,
        "idempotency_key": key,
    }


def _tenant(who: Principal) -> str:
    if who.tenant is None:
        raise ApiError(403, ErrorCode.FORBIDDEN, "enqueue with a tenant token")
    return who.tenant


async def _idempotency(request: Request, key: str | None) -> tuple[str, str] | None:
    if key is None:
        return None
    return key, request_hash(request.url.path, await request.body())


async def enqueue(
    body: EnqueueRequest,
    who: Enqueuer,
    service: Service,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    result = await service.enqueue(
        _tenant(who), body, idempotency=await _idempotency(request, idempotency_key)
    )
    return json_response(result, 200 if result.deduplicated else 201)


router.add_api_route(
    "/jobs",
    enqueue,
    methods=["POST"],
    route_class_override=_FastPost,
    status_code=201,
    responses={201: {"model": EnqueueResponse}, 200: {"model": EnqueueResponse}},
    summary="Enqueue one job (200 when deduplicated to an existing job)",
)


async def enqueue_batch(
    body: BatchEnqueueRequest,
    who: Enqueuer,
    service: Service,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    result = await service.enqueue_batch(
        _tenant(who), body.jobs, idempotency=await _idempotency(request, idempotency_key)
    )
    return json_response(result)


router.add_api_route(
    "/jobs/batch",
    enqueue_batch,
    methods=["POST"],
    route_class_override=_FastPost,
    responses={200: {"model": BatchEnqueueResponse}},
    summary="Enqueue up to 1,000 jobs in one transaction, with a result per item",
)


@router.get("/jobs/{job_id}", responses={200: {"model": Job}}, summary="A job with its attempts")
async def get_job(job_id: UUID, who: Reader, service: Service) -> Response:
    return json_response(await service.get(who, job_id))


@router.get("/jobs", responses={200: {"model": JobPage}}, summary="List jobs, newest first")
async def list_jobs(
    who: Reader,
    service: Service,
    status: JobStatus | None = None,
    use_case: str | None = None,
    job_type: str | None = None,
    tenant: Annotated[str | None, Query(description="admins only")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    dedup_key: str | None = None,
) -> Response:
    page = await service.list(
        who,
        status=status,
        use_case=use_case,
        job_type=job_type,
        tenant=tenant,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
        dedup_key=dedup_key,
    )
    return json_response(page)


@router.post(
    "/jobs/{job_id}/cancel",
    responses={200: {"model": Job}},
    summary="Cancel a pending job at once, or mark a running one",
)
async def cancel_job(job_id: UUID, who: Producer, service: Service) -> Response:
    return json_response(await service.cancel(who, job_id))
