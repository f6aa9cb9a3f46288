"""examples/: the producer app enqueues through jobs-sdk, a worker runs examples/handlers.py,
over the real server, PostgreSQL and SQS, with the use cases of `jobs-server dev`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from examples.handlers import registry
from examples.producer_app import create_app

from jobs_schema import JobStatus
from jobs_sdk import JobsClient
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import MakeStack

make_stack = harness.make_stack  # the fixture

DEV_USE_CASES: dict[str, dict[str, Any]] = {
    "notifications": {"job_types": ["notifications.send_email", "notifications.send_push"]},
    "message_labeling": {"job_types": ["messages.label", "messages.analyse_conversation"]},
}


async def test_producer_app_and_example_handlers(make_stack: MakeStack):
    stack = await make_stack(use_cases=DEV_USE_CASES)
    client = JobsClient(stack.server.url, stack.server.tenant_token("acme"))
    app = create_app(client)
    async with (
        client,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as http,
    ):
        signup = (await http.post("/signups", json={"email": "ada@example.com"})).json()
        again = (await http.post("/signups", json={"email": "ada@example.com"})).json()
        label = await http.post("/messages", json={"message_id": "m1", "text": "Refund please"})
        analysis = await http.post(
            "/conversations/c1/analysis", json={"messages": ["hi there", "the app crashed"]}
        )
        assert again["deduplicated"] and again["job_id"] == signup["job_id"]
        ids = [signup["job_id"], label.json()["job_id"], analysis.json()["job_id"]]
        await stack.dispatched(ids)
        worker = await stack.worker(registry)
        await asyncio.wait_for(worker.run(burst=True), 30)
        statuses = [(await http.get(f"/jobs/{i}")).json() for i in ids]
    assert [s["status"] for s in statuses] == [JobStatus.SUCCEEDED] * 3
    assert len(statuses[0]["result"]["message_id"]) == 16
    assert statuses[1]["result"] == {"message_id": "m1", "labels": ["billing"]}
    assert statuses[2]["result"] == {"conversation_id": "c1", "messages": 2, "words": 5}
