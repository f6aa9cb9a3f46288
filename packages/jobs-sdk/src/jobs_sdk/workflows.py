"""Workflows for producers: a small graph builder whose jobs go to the server in one request
(`client.enqueue_workflow(wf)`), and the calls of the batch and parents endpoints, shared by
the async and sync clients (docs/workflows.md).

    wf = Workflow()
    fetch = wf.add(EnqueueRequest(use_case="etl", job_type="etl.fetch"))
    a, b = wf.group(req_a, req_b, after=[fetch])      # fan-out: both after fetch
    wf.add(req_merge, after=[a, b])                    # fan-in: after both
    jobs = await client.enqueue_workflow(wf)           # one request, one transaction

`client.chain(a, b, c)` and `client.group(a, b, then=c)` are the two common shapes in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from jobs_schema import BatchEnqueueResponse, EnqueueRequest, Job
from jobs_schema.graph import MAX_GRAPH_NODES, OnParentFailure
from jobs_schema.workflows import BatchAddRequest, BatchCreateRequest
from jobs_sdk._http import Call, _job_id, _validated, batch_call

__all__ = ["Step", "Workflow"]

Step = str  # an item's ref, or the id of an existing job (as text)


class Workflow:
    """Jobs and their dependencies, built up before one enqueue. Each `add` answers the
    step's ref, which later steps name in `after`; a job id (UUID) names an existing job."""

    def __init__(self) -> None:
        self._items: list[EnqueueRequest] = []

    def add(
        self,
        request: EnqueueRequest,
        *,
        after: Sequence[Step | UUID] = (),
        on_parent_failure: OnParentFailure | str | None = None,
    ) -> Step:
        if len(self._items) >= MAX_GRAPH_NODES:
            raise ValueError(f"a workflow holds at most {MAX_GRAPH_NODES} jobs")
        ref = request.ref or f"step-{len(self._items)}"
        parents = [str(p) for p in after]
        fields: dict[str, object] = {"ref": ref}
        if parents:
            fields["depends_on"] = [*(request.depends_on or []), *parents]
            if on_parent_failure is not None:
                fields["on_parent_failure"] = OnParentFailure(on_parent_failure)
        self._items.append(
            EnqueueRequest.model_validate({**request.model_dump(exclude_defaults=True), **fields})
        )
        return ref

    def chain(self, *requests: EnqueueRequest, after: Sequence[Step | UUID] = ()) -> list[Step]:
        """Each job after the one before it (the first after `after`)."""
        steps: list[Step] = []
        for request in requests:
            steps.append(self.add(request, after=steps[-1:] or after))
        return steps

    def group(self, *requests: EnqueueRequest, after: Sequence[Step | UUID] = ()) -> list[Step]:
        """The jobs side by side, each after `after` (a fan-out)."""
        return [self.add(request, after=after) for request in requests]

    @property
    def requests(self) -> list[EnqueueRequest]:
        return list(self._items)


def chain_of(requests: Sequence[EnqueueRequest]) -> Workflow:
    wf = Workflow()
    wf.chain(*requests)
    return wf


def group_of(requests: Sequence[EnqueueRequest], then: EnqueueRequest | None) -> Workflow:
    wf = Workflow()
    steps = wf.group(*requests)
    if then is not None:
        wf.add(then, after=steps)
    return wf


def workflow_call(wf: Workflow, idempotency_key: str | None) -> Call:
    if not wf.requests:
        raise ValueError("the workflow has no jobs: add some first")
    return batch_call(wf.requests, idempotency_key)


def graph_jobs(response: BatchEnqueueResponse) -> list[Job]:
    """The jobs of a graph enqueue, in request order (a graph is stored whole)."""
    return [r.job for r in response.results if r.job is not None]


def create_batch_call(jobs: Sequence[EnqueueRequest], callback: EnqueueRequest | None) -> Call:
    body = _validated(BatchCreateRequest, {"jobs": list(jobs), "callback": callback})
    return Call(
        "POST",
        "/v1/batches",
        content=body.model_dump_json(exclude_defaults=True).encode(),
        replayable=False,  # a resend would make a second batch
    )


def add_to_batch_call(batch_id: UUID | str, jobs: Sequence[EnqueueRequest]) -> Call:
    body = _validated(BatchAddRequest, {"jobs": list(jobs)})
    return Call(
        "POST",
        f"/v1/batches/{_job_id(batch_id)}/jobs",
        content=body.model_dump_json(exclude_defaults=True).encode(),
        replayable=False,
    )


def get_batch_call(batch_id: UUID | str) -> Call:
    return Call("GET", f"/v1/batches/{_job_id(batch_id)}")


def parents_call(job_id: UUID | str) -> Call:
    return Call("GET", f"/v1/jobs/{_job_id(job_id)}/parents")


def graph_call(job_id: UUID | str) -> Call:
    return Call("GET", f"/v1/jobs/{_job_id(job_id)}/graph")
