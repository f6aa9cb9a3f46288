"""The producer API under /v1: thin, every rule is in JobService."""

from __future__ import annotations

from typing import Annotated, Any, get_type_hints
from uuid import UUID

from fastapi import Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from jobs_schema import (
    BatchEnqueueRequest,
    BatchEnqueueResponse,
    EnqueueRequest,
    EnqueueResponse,
    ErrorCode,
    Job,
    JobListQuery,
    JobPage,
)
from jobs_server.api.deps import Enqueuer, Producer, Reader, Service, enqueuer_of, service_of
from jobs_server.api.errors import (
    BODY_ERRORS,
    ApiError,
    documented_errors,
    json_response,
)
from jobs_server.api.route import Handler, JobsRoute, api_router
from jobs_server.api.workflows import workflows_of
from jobs_server.auth import Principal
from jobs_server.service import request_hash

__all__ = ["router"]

router = api_router("jobs")

_KEY_MAX = 200
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", max_length=_KEY_MAX, description="makes retries of a POST safe"
    ),
]


class _FastPost(JobsRoute):
    """The enqueue routes. FastAPI's generic handling (solving the dependency tree, then
    json.loads and validating the dict) cost more server CPU than the rest of a single enqueue.
    So a request that is plainly fine, a JSON body that pydantic's JSON parser validates in one
    pass and a token that may write, calls the endpoint directly. Anything else, every error and
    any dependency override, goes through FastAPI's own handler: what callers see, errors
    included, and the OpenAPI schema stay FastAPI's. The endpoints take exactly the arguments
    `_fast_args` builds."""

    def inner_handler(self) -> Handler:
        slow = super().inner_handler()
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
    except ValidationError as exc:
        if any(_too_deep(e) for e in exc.errors()):
            # answered here (400 malformed_json): FastAPI's own parser fails on such nesting
            # with an error of no clear code
            raise
        return None
    except ApiError:
        return None
    return {
        "body": body,
        "who": who,
        "service": await service_of(request),
        "request": request,
        "idempotency_key": key,
    }


def _too_deep(error: ErrorDetails) -> bool:
    return error["type"] == "json_invalid" and "recursion limit" in error["msg"]


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
    idempotency = await _idempotency(request, idempotency_key)
    if body.depends_on:  # a job with parents: docs/workflows.md
        workflows = await workflows_of(request)
        result = await workflows.enqueue(_tenant(who), body, idempotency=idempotency)
    else:
        result = await service.enqueue(_tenant(who), body, idempotency=idempotency)
    return json_response(result, 200 if result.deduplicated else 201)


router.add_api_route(
    "/jobs",
    enqueue,
    methods=["POST"],
    route_class_override=_FastPost,
    name="enqueue_job",
    status_code=201,
    responses={
        201: {"model": EnqueueResponse, "description": "Enqueued"},
        200: {"model": EnqueueResponse, "description": "Deduplicated to an existing job"},
        **documented_errors(*BODY_ERRORS, 409, 429),
    },
    summary="Enqueue one job (200 when deduplicated to an existing job)",
)


async def enqueue_batch(
    body: BatchEnqueueRequest,
    who: Enqueuer,
    service: Service,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    idempotency = await _idempotency(request, idempotency_key)
    if body.is_graph:  # stored whole or not at all: docs/workflows.md
        workflows = await workflows_of(request)
        graph = await workflows.enqueue_batch(_tenant(who), body.jobs, idempotency=idempotency)
        return json_response(graph)
    result = await service.enqueue_batch(_tenant(who), body.jobs, idempotency=idempotency)
    return json_response(result)


router.add_api_route(
    "/jobs/batch",
    enqueue_batch,
    methods=["POST"],
    route_class_override=_FastPost,
    # 429: a graph's quota refusal is the request's
    responses={200: {"model": BatchEnqueueResponse}, **documented_errors(*BODY_ERRORS, 409, 429)},
    summary="Enqueue up to 1,000 jobs in one transaction, with a result per item; a graph "
    "(items with depends_on) is stored whole or not at all",
)


@router.get(
    "/jobs/{job_id}",
    responses={200: {"model": Job}, **documented_errors(404)},
    summary="A job with its attempts",
)
async def get_job(job_id: UUID, who: Reader, service: Service) -> Response:
    return json_response(await service.get(who, job_id))


@router.get(
    "/jobs",
    responses={200: {"model": JobPage}, **documented_errors(400)},
    summary="List jobs, newest first",
)
async def list_jobs(
    who: Reader, service: Service, query: Annotated[JobListQuery, Query()]
) -> Response:
    page = await service.list(who, query, cursor=query.cursor, limit=query.limit)
    return json_response(page)


@router.post(
    "/jobs/{job_id}/cancel",
    responses={200: {"model": Job}, **documented_errors(404, 409)},
    summary="Cancel a pending job at once, or mark a running one",
)
async def cancel_job(job_id: UUID, who: Producer, service: Service) -> Response:
    return json_response(await service.cancel(who, job_id))
