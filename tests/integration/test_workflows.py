"""Workflows and batches through the API, the scheduler, SQS (moto) and a real worker: a
diamond runs in dependency order and its last job reads both parents' results; a dead parent
cancels its descendants; refused graphs store nothing (docs/workflows.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pydantic import BaseModel

from jobs_schema import EnqueueRequest, JobStatus
from jobs_sdk import ValidationFailed
from jobs_sdk.workflows import Workflow
from jobs_worker import JobContext, PermanentFailure, Registry
from tests.conftest import LiveServer
from tests.integration import test_worker_harness as harness
from tests.integration.requests import ACME, GLOBEX, TINY, job
from tests.integration.test_worker_harness import EMAIL, USE_CASE, MakeStack

make_stack = harness.make_stack  # the fixture


class Step(BaseModel):
    to: str
    fail: bool = False


def request(name: str, **options: Any) -> EnqueueRequest:
    fields: dict[str, Any] = {"payload": {"to": name}, "max_attempts": 1, **options}
    return EnqueueRequest(use_case=USE_CASE, job_type=EMAIL, **fields)


def recording_registry(order: list[str], seen: dict[str, dict[str, Any]]) -> Registry:
    registry = Registry()

    @registry.handler(EMAIL)
    async def step(payload: Step, ctx: JobContext) -> dict[str, str]:
        order.append(payload.to)
        parents = await ctx.parent_results()
        seen[payload.to] = {str(p.id): p.result for p in parents.values()}
        if payload.fail:
            raise PermanentFailure("told to fail")
        return {"done": payload.to}

    return registry


async def test_diamond_runs_in_order_and_the_child_reads_both_results(make_stack: MakeStack):
    stack = await make_stack()
    wf = Workflow()
    a = wf.add(request("a"))
    b, c = wf.group(request("b"), request("c"), after=[a])
    wf.add(request("d"), after=[b, c])
    jobs = await stack.client.enqueue_workflow(wf)
    assert [j.status for j in jobs] == [JobStatus.PENDING] + [JobStatus.WAITING] * 3
    order: list[str] = []
    seen: dict[str, dict[str, Any]] = {}
    worker = await stack.worker(recording_registry(order, seen))
    run = asyncio.create_task(worker.run())
    done = await stack.wait_all([j.id for j in jobs])
    worker.stop()
    await run
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 4
    assert order[0] == "a" and set(order[1:3]) == {"b", "c"} and order[3] == "d"
    ids = {j.payload["to"]: str(j.id) for j in jobs}
    assert seen["d"] == {ids["b"]: {"done": "b"}, ids["c"]: {"done": "c"}}
    assert seen["b"] == {ids["a"]: {"done": "a"}} and seen["a"] == {}
    graph = await stack.client.workflow_graph(jobs[0].id)
    assert {j.id for j in graph.jobs} == {j.id for j in jobs} and len(graph.links) == 4


async def test_a_dead_parent_cancels_its_descendants_and_run_children_run(
    make_stack: MakeStack,
):
    stack = await make_stack()
    wf = Workflow()
    root = wf.add(request("root", payload={"to": "root", "fail": True}))
    wf.chain(request("child"), request("grandchild"), after=[root])
    wf.add(request("cleanup"), after=[root], on_parent_failure="run")
    jobs = await stack.client.enqueue_workflow(wf)
    order: list[str] = []
    worker = await stack.worker(recording_registry(order, {}))
    run = asyncio.create_task(worker.run())
    done = await stack.wait_all([j.id for j in jobs])
    worker.stop()
    await run
    statuses = {j.payload["to"]: j.status for j in done}
    assert statuses == {
        "root": JobStatus.DEAD,
        "child": JobStatus.CANCELLED,
        "grandchild": JobStatus.CANCELLED,
        "cleanup": JobStatus.SUCCEEDED,
    }
    assert order == ["root", "cleanup"]  # the cancelled ones never ran
    [parent] = await stack.client.parents(jobs[3].id)
    assert parent.status is JobStatus.DEAD and parent.last_error


async def test_chain_and_group_helpers(make_stack: MakeStack):
    stack = await make_stack()
    jobs = await stack.client.chain(request("one"), request("two"), request("three"))
    assert [j.status for j in jobs] == [JobStatus.PENDING, JobStatus.WAITING, JobStatus.WAITING]
    grouped = await stack.client.group(request("x"), request("y"), then=request("z"))
    z = grouped[-1]
    parents = await stack.client.parents(z.id)
    assert {p.id for p in parents} == {grouped[0].id, grouped[1].id}


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


async def _count(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM jobs"))


async def test_cycles_unknown_and_foreign_parents_are_refused_storing_nothing(client, db):
    foreign = (await client.post("/v1/jobs", json=job(), headers=GLOBEX)).json()["job"]["id"]
    before = await _count(db)
    cases = {
        "cycle": [job(ref="a", depends_on=["b"]), job(ref="b", depends_on=["a"])],
        "self": [job(ref="a", depends_on=["a"])],
        "unknown ref": [job(ref="a"), job(depends_on=["nope"])],
        "duplicate ref": [job(ref="a"), job(ref="a"), job(depends_on=["a"])],
        "unknown id": [job(ref="a"), job(depends_on=["a", str(uuid4())])],
        "foreign id": [job(ref="a"), job(depends_on=["a", foreign])],
        "uuid ref": [job(ref=str(uuid4())), job(depends_on=["x"])],
        "dedup child": [job(ref="a"), job(depends_on=["a"], dedup_key="k")],
        "policy alone": [job(on_parent_failure="run")],
        "wrong type": [job(ref="a"), job(depends_on="a")],
        "bad policy": [job(ref="a"), job(depends_on=["a"], on_parent_failure="maybe")],
        "twice": [job(ref="a"), job(depends_on=["a", "a"])],
        "too many parents": [job(ref="a"), job(depends_on=[str(uuid4()) for _ in range(101)])],
        "nul": [job(ref="a\u0000"), job(depends_on=["a\u0000"])],
    }
    for name, jobs in cases.items():
        r = await client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=ACME)
        assert r.status_code in (400, 422), (name, r.status_code, r.text)
        assert r.json()["error"]["message"], name
    r = await client.post("/v1/jobs", json=job(depends_on=[foreign]), headers=ACME)
    assert r.status_code == 400 and foreign in r.json()["error"]["message"]
    r = await client.post("/v1/jobs", json=job(depends_on=["a-ref"]), headers=ACME)
    assert r.status_code == 400 and "POST /v1/jobs/batch" in r.json()["error"]["message"]
    over = [job(ref="n0")] + [job(ref=f"n{i}", depends_on=[f"n{i - 1}"]) for i in range(1, 1001)]
    r = await client.post("/v1/jobs/batch", json={"jobs": over}, headers=ACME)
    assert r.status_code in (400, 413, 422), r.text
    assert await _count(db) == before  # nothing stored by any of them


async def test_a_thousand_node_chain_in_one_request(client, db):
    chain = [job(ref="n0")] + [job(ref=f"n{i}", depends_on=[f"n{i - 1}"]) for i in range(1, 1000)]
    r = await client.post("/v1/jobs/batch", json={"jobs": chain}, headers=ACME)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 1000
    assert [x["job"]["status"] for x in results[:2]] == ["pending", "waiting"]
    assert await db.fetchval("SELECT count(*) FROM job_edges") == 999
    # the whole chain is one workflow; cancelling its head cancels every job after it
    head = results[0]["job"]["id"]
    r = await client.post(f"/v1/jobs/{head}/cancel", headers=ACME)
    assert r.status_code == 200
    statuses = await db.fetch("SELECT status::text AS s, count(*) AS n FROM jobs GROUP BY 1")
    assert {x["s"]: x["n"] for x in statuses} == {"cancelled": 1000}


async def test_batch_api_and_callback(make_stack: MakeStack):
    stack = await make_stack()
    callback = request("report")
    batch = await stack.client.create_batch(
        [request("p1"), request("p2", payload={"to": "p2", "fail": True})], callback=callback
    )
    assert batch.counts.total == 2 and batch.jobs is not None and len(batch.jobs) == 2
    added = await stack.client.add_to_batch(batch.id, [request("p3")])
    assert added.counts.total == 3
    worker = await stack.worker(recording_registry([], {}))
    run = asyncio.create_task(worker.run())
    await stack.wait_all([j.id for j in (batch.jobs or []) + (added.jobs or [])])
    for _ in range(200):
        done = await stack.client.get_batch(batch.id)
        if done.callback_job_id is not None:
            break
        await asyncio.sleep(0.05)
    assert done.callback_job_id is not None
    [cb] = await stack.wait_all([done.callback_job_id])
    worker.stop()
    await run
    assert cb.status is JobStatus.SUCCEEDED
    assert cb.payload["batch"] == {
        "id": str(batch.id),
        "counts": {"succeeded": 2, "dead": 1, "cancelled": 0, "expired": 0},
        "failed_job_ids": [str(batch.jobs[1].id)] if batch.jobs else [],
        "failed_truncated": False,
    }
    with pytest.raises(Exception, match="finished"):
        await stack.client.add_to_batch(batch.id, [request("late")])
    with pytest.raises(ValidationFailed):
        await stack.client.create_batch([request("x")], callback=request("y", dedup_key="k"))


async def test_a_graph_request_is_idempotent(client, db):
    graph = {"jobs": [job(ref="a"), job(ref="b", depends_on=["a"])]}
    key = {**ACME, "Idempotency-Key": "graph-1"}
    first = await client.post("/v1/jobs/batch", json=graph, headers=key)
    again = await client.post("/v1/jobs/batch", json=graph, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    ids = [r["job"]["id"] for r in first.json()["results"]]
    assert [r["job"]["id"] for r in again.json()["results"]] == ids
    assert await _count(db) == 2 and await db.fetchval("SELECT count(*) FROM job_edges") == 1
    other = {"jobs": [job(ref="a"), job(ref="c", depends_on=["a"])]}
    mismatch = await client.post("/v1/jobs/batch", json=other, headers=key)
    assert mismatch.status_code == 409


async def test_hostile_batch_inputs_store_nothing(client, db):
    before = await _count(db)
    cases = {
        "callback run_at": {"jobs": [job()], "callback": job(run_at="2030-01-01T00:00:00Z")},
        "callback parents": {"jobs": [job()], "callback": job(depends_on=[str(uuid4())])},
        "callback batch key": {"jobs": [job()], "callback": job(payload={"batch": 1})},
        "dedup member": {"jobs": [job(dedup_key="k")]},
        "cycle": {"jobs": [job(ref="a", depends_on=["a"])]},
        "no jobs": {"jobs": []},
        "wrong type": {"jobs": "all of them"},
        "extra field": {"jobs": [job()], "tenant": "globex"},
    }
    for name, body in cases.items():
        r = await client.post("/v1/batches", json=body, headers=ACME)
        assert r.status_code in (400, 422), (name, r.status_code, r.text)
        assert r.json()["error"]["message"], name
    r = await client.post(f"/v1/batches/{uuid4()}/jobs", json={"jobs": [job()]}, headers=ACME)
    assert r.status_code == 404
    r = await client.get("/v1/batches/not-a-uuid", headers=ACME)
    assert r.status_code == 422
    assert await _count(db) == before
    assert await db.fetchval("SELECT count(*) FROM batches") == 0


async def test_a_graph_over_the_quota_is_a_429_storing_nothing(client, db):
    chain = [job(ref="n0")] + [job(ref=f"n{i}", depends_on=[f"n{i - 1}"]) for i in range(1, 11)]
    r = await client.post("/v1/jobs/batch", json={"jobs": chain}, headers=TINY)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert await _count(db) == 0
    r = await client.post("/v1/jobs/batch", json={"jobs": chain[:10]}, headers=TINY)
    assert r.status_code == 200, r.text  # ten fit: waiting jobs count, and are granted together
