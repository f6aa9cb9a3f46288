"""Workflows and batches: a job's parents and graph under /v1/jobs, batches under
/v1/batches, and the parents a running job's handler reads under /v1/worker. Thin: every
rule is in WorkflowService (graph enqueues come through POST /v1/jobs and /v1/jobs/batch)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from jobs_schema import ErrorCode
from jobs_schema.workflows import (
    Batch,
    BatchAddRequest,
    BatchCreateRequest,
    JobGraph,
    ParentsResponse,
)
from jobs_server.api.deps import Producer, Reader, Worker
from jobs_server.api.errors import (
    BODY_ERRORS,
    COMMON_ERRORS,
    ApiError,
    documented_errors,
    json_response,
)
from jobs_server.api.route import JobsRoute, operation_id, server_in
from jobs_server.auth import Principal
from jobs_server.workflows import WorkflowService

__all__ = ["router", "workflows_of"]

router = APIRouter(
    responses=documented_errors(*COMMON_ERRORS),
    route_class=JobsRoute,
    generate_unique_id_function=operation_id,
)


async def workflows_of(request: Request) -> WorkflowService:
    return server_in(request.scope).workflows


Workflows = Annotated[WorkflowService, Depends(workflows_of)]


def _tenant(who: Principal) -> str:
    if who.tenant is None:
        raise ApiError(403, ErrorCode.FORBIDDEN, "batches are made with a tenant token")
    return who.tenant


@router.get(
    "/v1/jobs/{job_id}/parents",
    tags=["workflows"],
    name="get_job_parents",
    responses={200: {"model": ParentsResponse}, **documented_errors(404)},
    summary="A job's parents (depends_on) with their states and results",
)
async def get_parents(job_id: UUID, who: Reader, workflows: Workflows) -> Response:
    return json_response(await workflows.parents(job_id, tenant=who.tenant_scope))


@router.get(
    "/v1/jobs/{job_id}/graph",
    tags=["workflows"],
    name="get_job_graph",
    responses={200: {"model": JobGraph}, **documented_errors(404)},
    summary="The workflow a job belongs to: its linked jobs (at most 500) and their edges",
)
async def get_graph(job_id: UUID, who: Reader, workflows: Workflows) -> Response:
    return json_response(await workflows.graph(who, job_id))


@router.post(
    "/v1/batches",
    tags=["batches"],
    status_code=201,
    responses={201: {"model": Batch}, **documented_errors(*BODY_ERRORS, 429)},
    summary="Create a batch of up to 1,000 jobs (more may be added), with an optional "
    "callback job enqueued once every job of it has ended",
)
async def create_batch(body: BatchCreateRequest, who: Producer, workflows: Workflows) -> Response:
    return json_response(await workflows.create_batch(_tenant(who), body), 201)


@router.post(
    "/v1/batches/{batch_id}/jobs",
    tags=["batches"],
    responses={200: {"model": Batch}, **documented_errors(*BODY_ERRORS, 404, 409, 429)},
    summary="Add up to 1,000 jobs to a batch that has not finished",
)
async def add_to_batch(
    batch_id: UUID, body: BatchAddRequest, who: Producer, workflows: Workflows
) -> Response:
    return json_response(await workflows.add_to_batch(_tenant(who), batch_id, body))


@router.get(
    "/v1/batches/{batch_id}",
    tags=["batches"],
    responses={200: {"model": Batch}, **documented_errors(404)},
    summary="A batch's progress: its jobs counted by how they ended, and its failures",
)
async def get_batch(batch_id: UUID, who: Reader, workflows: Workflows) -> Response:
    return json_response(await workflows.get_batch(who, batch_id))


@router.get(
    "/v1/worker/jobs/{job_id}/parents",
    tags=["worker"],
    name="get_worker_job_parents",
    responses={200: {"model": ParentsResponse}, **documented_errors(404)},
    summary="The parents of a job, with their results, for its handler (ctx.parent_results)",
)
async def worker_parents(job_id: UUID, _: Worker, workflows: Workflows) -> Response:
    return json_response(await workflows.parents(job_id, tenant=None))
