"""WorkflowService: the rules of dependencies and batches (docs/workflows.md). A graph
request is stored whole or not at all, in one transaction (WorkflowStore.enqueue_graph);
what follows a job's end (releasing or cancelling its children, counting its batch, the
batch's callback) happens in the store, in the statement that ended it."""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from jobs_schema import (
    BatchEnqueueResponse,
    EnqueueRequest,
    EnqueueResponse,
)
from jobs_schema.graph import GraphRefused, OnParentFailure, check_graph, parent_id
from jobs_schema.workflows import (
    MAX_BATCH_JOBS,
    Batch,
    BatchAddRequest,
    BatchCreateRequest,
    JobGraph,
    ParentsResponse,
    batch_refusal,
)
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.errors import (
    BadRequest,
    IdempotencyMismatch,
    JobConflict,
    JobNotFound,
    JobsServerError,
    QuotaExceeded,
)
from jobs_server.service import JobIds, JobService
from jobs_server.store.base import (
    EnqueueOutcome,
    EnqueueResult,
    GraphRefusal,
    GraphResult,
    IdempotentReplay,
    JobStore,
    NewBatch,
    NewJob,
    NewLink,
)

__all__ = ["MAX_GRAPH_LINKS", "BatchNotFound", "WorkflowService"]

logger = logging.getLogger(__name__)

_MAX_RETRIES = 3
MAX_GRAPH_LINKS = 500  # jobs a graph read (GET /v1/jobs/{id}/graph, the dashboard) lists


class BatchNotFound(JobNotFound):
    def __init__(self, batch_id: UUID) -> None:
        JobsServerError.__init__(self, f"batch {batch_id} not found", batch_id=str(batch_id))


class WorkflowService:
    def __init__(self, store: JobStore, jobs: JobService, *, clock: Clock) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock
        self._ids = JobIds(clock)

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self, tenant: str, req: EnqueueRequest, *, idempotency: tuple[str, str] | None = None
    ) -> EnqueueResponse:
        """One job with parents, all of them existing jobs (by id)."""
        for entry in req.depends_on or ():
            if parent_id(entry) is None:
                raise BadRequest(
                    f"depends_on names {entry!r}, which is not a job id: refs name items of "
                    "the same request, so send the graph to POST /v1/jobs/batch",
                    field="depends_on",
                )
        result = (await self._store_graph(tenant, [req], None, idempotency)).results[0]
        assert result.job is not None
        return EnqueueResponse(
            job=result.job, deduplicated=result.outcome is EnqueueOutcome.DEDUPLICATED
        )

    async def enqueue_batch(
        self,
        tenant: str,
        reqs: list[EnqueueRequest],
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> BatchEnqueueResponse:
        """A graph: every item stored, or none (an error for the request)."""
        graph = await self._store_graph(tenant, reqs, None, idempotency)
        return _batch_response(graph.results)

    async def _store_graph(
        self,
        tenant: str,
        reqs: list[EnqueueRequest],
        batch: NewBatch | None,
        idempotency: tuple[str, str] | None = None,
    ) -> GraphResult:
        now = self._clock.now()
        key, digest = idempotency if idempotency else (None, None)
        out: GraphResult | IdempotentReplay = GraphResult([], GraphRefusal.RETRY)
        jobs: list[NewJob] = []
        for _ in range(_MAX_RETRIES):
            jobs, links = self._graph(reqs, now)
            out = await self._store.enqueue_graph(
                tenant,
                quota=self._jobs.quota(tenant),
                jobs=jobs,
                links=links,
                batch=batch,
                idempotency_key=key,
                request_hash=digest,
            )
            if isinstance(out, IdempotentReplay):
                return await self._replay(out, digest, key)
            if out.refused is not GraphRefusal.RETRY:
                break
        assert isinstance(out, GraphResult)
        self._refuse(tenant, out, batch)
        self._jobs.stored(tenant, jobs, [r.outcome for r in out.results])
        return out

    async def _replay(
        self, replay: IdempotentReplay, digest: str | None, key: str | None
    ) -> GraphResult:
        """The answer of the request that used the key first, its jobs as they are now."""
        if replay.request_hash != digest or replay.results is None:
            raise IdempotencyMismatch(key or "")
        jobs = {j.id: j for j in await self._store.get_jobs([i for i, _ in replay.results if i])}
        return GraphResult(
            [EnqueueResult(o, jobs.get(i) if i else None) for i, o in replay.results]
        )

    def _graph(
        self, reqs: list[EnqueueRequest], now: datetime
    ) -> tuple[list[NewJob], list[NewLink]]:
        """The jobs the requests make by the enqueue rules, and their links; BadRequest for a
        cycle, a ref given twice or one no item gives."""
        if any(r.depends_on or r.ref for r in reqs):
            try:
                check_graph(reqs)
            except GraphRefused as exc:
                raise BadRequest(str(exc), field="depends_on") from None
        refs = {r.ref: i for i, r in enumerate(reqs) if r.ref is not None}
        jobs, links = [], []
        for i, req in enumerate(reqs):
            jobs.append(self._prepare(req, now, i))
            if not req.depends_on:
                continue
            template = self._jobs.template(req)
            links.append(
                NewLink(
                    child=i,
                    parents=tuple(parent_id(p) or refs[p] for p in req.depends_on),
                    on_parent_failure=req.on_parent_failure or OnParentFailure.CANCEL,
                    tolerance_seconds=None if req.deadline else template.tolerance_seconds,
                    grace_seconds=template.expire_grace_seconds,
                )
            )
        return jobs, links

    def _prepare(self, req: EnqueueRequest, now: datetime, index: int) -> NewJob:
        try:
            return self._jobs.prepare(req, now)
        except JobsServerError as exc:
            exc.details.setdefault("index", index)
            raise

    def _refuse(self, tenant: str, out: GraphResult, batch: NewBatch | None) -> None:
        """The error of a refused graph call; nothing was stored."""
        refused = out.refused
        if refused is None:
            return
        if refused in (GraphRefusal.QUOTA_EXCEEDED, GraphRefusal.RETRY):
            raise QuotaExceeded(tenant, self._jobs.quota(tenant) or 0)
        if refused is GraphRefusal.MISSING_PARENTS:
            missing = [str(i) for i in out.missing_parents]
            raise BadRequest(
                f"depends_on names jobs that are not yours or do not exist: {', '.join(missing)}"
                "; name existing jobs of this tenant, or refs of items of this request",
                field="depends_on",
                missing=missing,
            )
        assert batch is not None
        if refused is GraphRefusal.BATCH_NOT_FOUND:
            raise BatchNotFound(batch.id)
        if refused is GraphRefusal.BATCH_FINISHED:
            raise JobConflict(
                f"batch {batch.id} has finished (every job ended): create a new batch",
                batch_id=str(batch.id),
            )
        raise BadRequest(
            f"a batch holds at most {MAX_BATCH_JOBS} jobs: create another batch",
            batch_id=str(batch.id),
            limit=MAX_BATCH_JOBS,
        )

    # -- batches ---------------------------------------------------------------------------

    async def create_batch(self, tenant: str, body: BatchCreateRequest) -> Batch:
        _check_batch(body.jobs, body.callback)
        callback, tolerance, grace = None, 0.0, None
        if body.callback is not None:
            callback = self._jobs.prepare(body.callback, self._clock.now())
            template = self._jobs.template(body.callback)
            tolerance, grace = template.tolerance_seconds, template.expire_grace_seconds
        batch = NewBatch(
            id=self._ids.new(),
            callback_job_id=self._ids.new(),
            callback=callback,
            callback_tolerance_seconds=tolerance,
            callback_grace_seconds=grace,
        )
        out = await self._store_graph(tenant, list(body.jobs), batch)
        return await self._batch(tenant, batch.id, out)

    async def add_to_batch(self, tenant: str, batch_id: UUID, body: BatchAddRequest) -> Batch:
        _check_batch(body.jobs, None)
        batch = NewBatch(id=batch_id, callback_job_id=batch_id, create=False)
        out = await self._store_graph(tenant, list(body.jobs), batch)
        return await self._batch(tenant, batch_id, out)

    async def _batch(self, tenant: str, batch_id: UUID, out: GraphResult) -> Batch:
        found = await self._store.get_batch(batch_id, tenant=tenant)
        assert found is not None
        return found.model_copy(update={"jobs": [r.job for r in out.results if r.job]})

    async def get_batch(self, who: Principal, batch_id: UUID) -> Batch:
        found = await self._store.get_batch(batch_id, tenant=who.tenant_scope)
        if found is None:
            raise BatchNotFound(batch_id)
        return found

    # -- reads -----------------------------------------------------------------------------

    async def parents(self, job_id: UUID, *, tenant: str | None) -> ParentsResponse:
        """The job's parents with their results (what its handler reads)."""
        if await self._store.get_job(job_id, tenant=tenant) is None:
            raise JobNotFound(job_id)
        parents = await self._store.get_parents(job_id, tenant=tenant)
        return ParentsResponse(job_id=job_id, parents=parents)

    async def graph(
        self, who: Principal, job_id: UUID, *, limit: int = MAX_GRAPH_LINKS
    ) -> JobGraph:
        """The jobs linked to the job, nearest first (its parents and children before theirs),
        at most `limit`, and the edges among them."""
        jobs, links, more = await self._store.get_job_graph(
            job_id, tenant=who.tenant_scope, limit=limit
        )
        if not jobs:
            raise JobNotFound(job_id)
        return JobGraph(jobs=jobs, links=links, truncated=more)


def _check_batch(jobs: list[EnqueueRequest], callback: EnqueueRequest | None) -> None:
    refusal = batch_refusal(jobs, callback)
    if refusal is not None:
        raise BadRequest(refusal)


def _batch_response(results: list[EnqueueResult]) -> BatchEnqueueResponse:
    return BatchEnqueueResponse.model_validate(
        {
            "results": [
                {
                    "index": i,
                    "job": r.job,
                    "deduplicated": r.outcome is EnqueueOutcome.DEDUPLICATED,
                }
                for i, r in enumerate(results)
            ]
        }
    )
