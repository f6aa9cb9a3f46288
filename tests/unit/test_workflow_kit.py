"""The testing kits' workflows: jobs_sdk.testing's fakes keep children waiting until their
parents end, and jobs_worker.testing.InlineJobs runs a graph in dependency order, each
handler reading its parents' results through ctx.parent_results()."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from jobs_schema import EnqueueRequest, JobStatus
from jobs_sdk import ValidationFailed
from jobs_sdk.testing import FakeJobsClient, FakeSyncJobsClient
from jobs_sdk.workflows import Workflow
from jobs_worker import JobContext, PermanentFailure, Registry
from jobs_worker.testing import InlineJobs


class Step(BaseModel):
    name: str
    fail: bool = False


def step(name: str, **payload: Any) -> EnqueueRequest:
    return EnqueueRequest(use_case="etl", job_type="etl.step", payload={"name": name, **payload})


def registry(order: list[str], seen: dict[str, list[Any]]) -> Registry:
    reg = Registry()

    @reg.handler("etl.step")
    async def run(payload: Step, ctx: JobContext) -> str:
        order.append(payload.name)
        seen[payload.name] = sorted(str(p.result) for p in (await ctx.parent_results()).values())
        if payload.fail:
            raise PermanentFailure("no")
        return payload.name

    return reg


async def test_inline_jobs_run_a_diamond_in_order():
    order: list[str] = []
    seen: dict[str, list[Any]] = {}
    jobs = InlineJobs(registry(order, seen))
    wf = Workflow()
    a = wf.add(step("a"))
    b, c = wf.group(step("b"), step("c"), after=[a])
    wf.add(step("d"), after=[b, c])
    made = await jobs.enqueue_workflow(wf)
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
    assert seen["d"] == ["b", "c"] and seen["a"] == []
    assert [(await jobs.get(j.id)).status for j in made] == [JobStatus.SUCCEEDED] * 4


async def test_inline_jobs_cancel_after_a_dead_parent():
    order: list[str] = []
    jobs = InlineJobs(registry(order, {}))
    made = await jobs.chain(step("a", fail=True), step("b"), step("c"))
    assert order == ["a"]
    assert [(await jobs.get(j.id)).status for j in made] == [
        JobStatus.DEAD,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]


async def test_fake_client_keeps_children_waiting():
    fake = FakeJobsClient()
    made = await fake.group(step("x"), step("y"), then=step("z"))
    assert [j.status for j in made] == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.WAITING]
    parents = await fake.parents(made[2].id)
    assert {p.id for p in parents} == {made[0].id, made[1].id}
    with pytest.raises(ValidationFailed):
        await fake.enqueue(step("orphan", n=1).model_copy(update={"depends_on": ["ref"]}))


def test_sync_fake_chain():
    fake = FakeSyncJobsClient()
    made = fake.chain(step("one"), step("two"))
    assert [j.status for j in made] == [JobStatus.PENDING, JobStatus.WAITING]
    assert [p.id for p in fake.parents(made[1].id)] == [made[0].id]
