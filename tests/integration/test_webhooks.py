"""Webhooks end to end: a jobs-server with its scheduler (PostgreSQL, moto's SQS), a worker in
this process sending the deliveries of the built-in use case, and a receiver on loopback
(uvicorn, real HTTP). Loopback is allowed explicitly (JOBS_WEBHOOKS_ALLOWED_NETWORKS), as an
operator would allow an internal network; without it the same target is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import uvicorn
from pydantic import BaseModel

from jobs_schema import JobStatus
from jobs_schema.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_JOB_TYPE,
    WEBHOOKS_USE_CASE,
    WebhookDeliveryPayload,
    WebhookTarget,
    parse_networks,
)
from jobs_sdk import JobsClient
from jobs_sdk.errors import ValidationFailed
from jobs_sdk.webhooks import InvalidSignature, verify
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.webhooks import fan_out_rules
from jobs_worker import JobContext, PermanentFailure, Registry
from jobs_worker.testing import make_context
from jobs_worker.webhooks import ServerTargets, WebhookSender, webhook_registry
from tests.conftest import free_port
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import (
    EMAIL,
    USE_CASE,
    MakeStack,
    Stack,
    WorkerProcess,
)

make_stack = harness.make_stack  # the fixtures
worker_processes = harness.worker_processes

LOOPBACK = "127.0.0.0/8"


def hour_ahead() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """An HTTP receiver on loopback: answers each POST with the next status of `script`
    (then 204), and keeps what it got."""

    url: str
    script: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = self.script.pop(0) if self.script else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"nope" if status >= 300 else b""})
        async with self.arrived:
            self.got.append(Received(headers, body))
            self.arrived.notify_all()

    async def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.got) >= n), timeout)
        return list(self.got)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hooks")
    server = uvicorn.Server(
        uvicorn.Config(
            rec.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("the receiver did not start")
        await asyncio.sleep(0.01)
    yield rec
    server.should_exit = True
    await task


def webhooks_use_case(prefix: str) -> dict[str, Any]:
    """The built-in use case with quick retries (a constant 0.2 s), configured by name."""
    return {
        "queue": f"{prefix}-webhooks",
        "job_types": [WEBHOOK_JOB_TYPE],
        "max_attempts": 4,
        "backoff": {"kind": "constant", "base_seconds": 0.2, "cap_seconds": 0.2, "jitter": 0},
    }


MakeWebhookStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
def webhook_stack(make_stack: MakeStack, queue_prefix: str) -> MakeWebhookStack:
    async def make(**server: Any) -> Stack:
        return await make_stack(
            server={"webhooks": True, "webhooks_allowed_networks": LOOPBACK, **server},
            use_cases={USE_CASE: {}, WEBHOOKS_USE_CASE: webhooks_use_case(queue_prefix)},
        )

    return make


class Email(BaseModel):
    to: str


def registry_with_sender(stack: Stack, outcome: Callable[[JobContext], object]) -> Registry:
    registry = Registry()

    @registry.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> object:
        return outcome(ctx)

    sender = WebhookSender(
        ServerTargets(stack.server.url, stack.server.worker_token),
        networks=parse_networks(LOOPBACK),
    )
    registry.include(webhook_registry(sender))
    return registry


def succeed(ctx: JobContext) -> object:
    return {"ok": True}


async def running_worker(stack: Stack, registry: Registry) -> None:
    worker = await stack.worker(registry)
    task = asyncio.create_task(worker.run())

    async def stop() -> None:
        worker.stop()
        await task

    stack.exits.push_async_callback(stop)


async def test_a_receiver_on_loopback_gets_an_event_with_a_valid_signature(
    webhook_stack: MakeWebhookStack, receiver: Receiver
) -> None:
    stack = await webhook_stack()
    hook = await stack.client.webhooks.create(receiver.url, ["succeeded"], description="ci")
    assert hook.secret.startswith("whsec_") and hook.event_types == ["succeeded"]
    await running_worker(stack, registry_with_sender(stack, succeed))
    job_id = await stack.enqueue({"to": "a@example.com"})

    [got] = await receiver.wait_for(1)
    assert verify(got.body, got.headers[SIGNATURE_HEADER.lower()], hook.secret) > 0
    with pytest.raises(InvalidSignature):
        verify(got.body, got.headers[SIGNATURE_HEADER.lower()], "whsec_another")
    with pytest.raises(InvalidSignature):
        verify(got.body + b" ", got.headers[SIGNATURE_HEADER.lower()], hook.secret)
    event = got.event
    assert (event["type"], event["job_id"], event["tenant"]) == ("succeeded", str(job_id), "acme")
    assert (event["status"], event["attempts"], event["use_case"]) == ("succeeded", 1, USE_CASE)
    assert got.headers["jobs-event-id"] == event["id"]
    assert got.headers["jobs-event-type"] == "succeeded"
    assert got.headers["content-type"] == "application/json"

    page = await wait_for_delivery(stack.client, hook.id, lambda d: d.status == "succeeded")
    [delivery] = page
    assert (delivery.attempts, delivery.response_code) == (1, 204)
    assert str(delivery.event_id) == event["id"]
    # the secret is shown once: never in a read of the subscription
    again = await stack.client.webhooks.get(hook.id)
    assert "secret" not in again.model_dump() and again.url == receiver.url


async def wait_for_delivery(
    client: JobsClient, hook_id: UUID, check: Callable[[Any], bool], timeout: float = 30.0
) -> list[Any]:
    async def poll() -> list[Any]:
        while True:
            items = (await client.webhooks.deliveries(hook_id)).items
            if items and all(check(d) for d in items):
                return items
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def test_a_receiver_answering_500_twice_gets_the_third_try(
    webhook_stack: MakeWebhookStack, receiver: Receiver
) -> None:
    stack = await webhook_stack()
    receiver.script = [500, 500]
    hook = await stack.client.webhooks.create(receiver.url, ["succeeded"])
    await running_worker(stack, registry_with_sender(stack, succeed))
    await stack.enqueue({"to": "a@example.com"})

    tries = await receiver.wait_for(3)
    assert len({t.event["id"] for t in tries}) == 1  # one event, three tries
    assert [t.headers["jobs-delivery-attempt"] for t in tries] == ["1", "2", "3"]
    for t in tries:  # each signed at its own send
        verify(t.body, t.headers[SIGNATURE_HEADER.lower()], hook.secret)
    [delivery] = await wait_for_delivery(stack.client, hook.id, lambda d: d.status == "succeeded")
    assert (delivery.attempts, delivery.response_code) == (3, 204)
    job = await stack.client.get(delivery.job_id)
    assert [a.error_message for a in job.history or []][:2] == [
        "HTTP 500 from the receiver: nope",
        "HTTP 500 from the receiver: nope",
    ]


async def test_a_4xx_ends_the_delivery_dead_and_the_log_says_so(
    webhook_stack: MakeWebhookStack, receiver: Receiver
) -> None:
    stack = await webhook_stack()
    receiver.script = [410]
    hook = await stack.client.webhooks.create(receiver.url, ["succeeded"])
    await running_worker(stack, registry_with_sender(stack, succeed))
    await stack.enqueue({"to": "a@example.com"})
    [delivery] = await wait_for_delivery(stack.client, hook.id, lambda d: d.status == "dead")
    assert (delivery.attempts, delivery.response_code) == (1, 410)
    assert len(receiver.got) == 1


async def test_dead_cancelled_and_expired_events_and_none_for_a_tenant_without_webhooks(
    webhook_stack: MakeWebhookStack, receiver: Receiver
) -> None:
    stack = await webhook_stack()
    hook = await stack.client.webhooks.create(
        receiver.url, ["dead", "cancelled", "expired", "succeeded"], use_case=USE_CASE
    )

    def outcome(ctx: JobContext) -> object:
        if ctx.tenant == "acme":
            raise PermanentFailure("no such mailbox")
        return "fine"

    await running_worker(stack, registry_with_sender(stack, outcome))
    globex = JobsClient(stack.server.url, stack.server.tenant_token("globex"))
    stack.exits.push_async_callback(globex.aclose)
    other = (await globex.enqueue(USE_CASE, EMAIL, {"to": "b@example.com"})).job.id
    [done] = await asyncio.gather(globex.wait(other, timeout=30, poll_interval=0.05))
    assert done.status is JobStatus.SUCCEEDED

    dead = await stack.enqueue({"to": "a@example.com"})
    later = await stack.enqueue({"to": "c@example.com"}, run_at=hour_ahead())
    await stack.client.cancel(later)
    admin = JobsClient(stack.server.url, stack.server.admin_token)
    stack.exits.push_async_callback(admin.aclose)
    await admin.pauses.pause(use_case=USE_CASE, tenant="acme")
    expiring = await stack.enqueue({"to": "d@example.com"}, delay_tolerance=0, miss_policy="expire")
    await stack.wait_for(expiring, lambda j: j.status == JobStatus.EXPIRED)
    await admin.pauses.resume(use_case=USE_CASE, tenant="acme")

    got = await receiver.wait_for(3)
    events = sorted((r.event["type"], r.event["job_id"]) for r in got)
    assert events == sorted(
        [("dead", str(dead)), ("cancelled", str(later)), ("expired", str(expiring))]
    )
    assert {r.event["tenant"] for r in got} == {"acme"}  # globex's success made no event
    log = await wait_for_delivery(stack.client, hook.id, lambda d: d.status == "succeeded")
    assert sorted(d.event_type.value for d in log) == ["cancelled", "dead", "expired"]


async def test_a_private_target_is_refused_unless_the_operator_allows_it(
    start_server: Any, receiver: Receiver
) -> None:
    strict = await start_server(webhooks=True)
    async with JobsClient(strict.url, strict.tenant_token("acme")) as client:
        with pytest.raises(ValidationFailed) as refused:
            await client.webhooks.create(receiver.url, ["dead"])
        assert "127.0.0.1 is a loopback address" in str(refused.value)
        assert "JOBS_WEBHOOKS_ALLOWED_NETWORKS" in str(refused.value)
        for url in (
            "http://[::ffff:127.0.0.1]/x",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/",
        ):
            with pytest.raises(ValidationFailed):
                await client.webhooks.create(url, ["dead"])
        assert await client.webhooks.list() == []
    allowing = await start_server(webhooks=True, webhooks_allowed_networks=LOOPBACK)
    async with JobsClient(allowing.url, allowing.tenant_token("acme")) as client:
        made = await client.webhooks.create(receiver.url, ["dead"])
        assert [h.id for h in await client.webhooks.list()] == [made.id]


async def test_the_sender_refuses_a_private_address_at_delivery_time(receiver: Receiver) -> None:
    """The address is judged again when sending (DNS may point elsewhere since creation)."""
    target = WebhookTarget(id=UUID(int=1), url=receiver.url, secret="s", paused=False)

    async def targets(_: UUID) -> WebhookTarget:
        return target

    payload = WebhookDeliveryPayload.model_validate(
        {
            "subscription_id": str(target.id),
            "event": {
                "id": str(UUID(int=2)),
                "type": "dead",
                "occurred_at": "2026-01-01T00:00:00Z",
                "tenant": "acme",
            },
        }
    )
    ctx = make_context(use_case=WEBHOOKS_USE_CASE, job_type=WEBHOOK_JOB_TYPE)
    strict = WebhookSender(targets)
    with pytest.raises(PermanentFailure, match=r"127\.0\.0\.1 is a loopback address"):
        await strict.deliver(payload, ctx)
    assert receiver.got == []
    allowing = WebhookSender(targets, networks=parse_networks(LOOPBACK))
    assert await allowing.deliver(payload, ctx) == {"status_code": 204}
    [got] = receiver.got
    verify(got.body, got.headers[SIGNATURE_HEADER.lower()], "s")
    await strict.aclose()
    await allowing.aclose()


async def test_hostile_subscriptions_are_refused_with_nothing_stored(
    webhook_stack: MakeWebhookStack,
) -> None:
    stack = await webhook_stack()
    base = {"url": "http://127.0.0.1:9/x", "event_types": ["dead"]}
    bad: list[dict[str, Any]] = [
        {**base, "url": "ftp://example.com/x"},
        {**base, "url": "http:///nohost"},
        {**base, "url": "https://user:pw@example.com/x"},
        {**base, "url": "https://example.com/" + "a" * 3000},
        {**base, "url": "https://exa\u0000mple.com/x"},
        {**base, "url": "https://example.com/a b"},
        {**base, "url": "https://example.com:99999/x"},
        {**base, "url": 42},
        {**base, "event_types": []},
        {**base, "event_types": ["exploded"]},
        {**base, "event_types": "dead"},
        {**base, "use_case": "nope"},
        {**base, "use_case": "jobs.webhooks"},
        {**base, "use_case": "uc\u0000"},
        {**base, "description": "x" * 201},
        {**base, "secret": "mine"},
        {**base, "tenant": "globex"},
    ]
    headers = {"Authorization": f"Bearer {stack.server.tenant_token('acme')}"}
    async with httpx.AsyncClient(base_url=stack.server.url, headers=headers) as http:
        for body in bad:
            resp = await http.post("/v1/webhooks", json=body)
            assert resp.status_code in (400, 422), (body, resp.text)
            error = resp.json()["error"]
            assert error["message"], body
        deep: Any = "x"
        for _ in range(200):
            deep = [deep]
        resp = await http.post("/v1/webhooks", json={**base, "event_types": deep})
        assert resp.status_code in (400, 422)
        resp = await http.post("/v1/webhooks", content=b"{" * 100_000)
        assert resp.status_code in (400, 413, 422)
        resp = await http.get("/v1/webhooks/not-a-uuid")
        assert resp.status_code in (400, 422)
        resp = await http.get(f"/v1/webhooks/{UUID(int=5)}/deliveries", params={"limit": 0})
        assert resp.status_code in (400, 422)
        assert (await http.get("/v1/webhooks")).json() == {"items": []}


async def test_a_replayed_event_makes_no_second_delivery(
    start_server: Any, receiver: Receiver
) -> None:
    """The unique (event, subscription) key: an event that came back to the outbox (as after
    a failover that replayed it) is not delivered twice. No scheduler runs here: this test's
    store is the only leader."""
    server = await start_server(webhooks=True, webhooks_allowed_networks=LOOPBACK)
    rules = fan_out_rules(server.settings.jobs_config())
    assert rules is not None
    store = await PostgresJobStore.connect(server.database_url, min_size=1, max_size=2)
    conn = await asyncpg.connect(server.database_url)
    client = JobsClient(server.url, server.tenant_token("acme"))
    try:
        hook = await client.webhooks.create(receiver.url, ["cancelled"])
        job = await client.enqueue(USE_CASE, EMAIL, {"to": "a@example.com"}, run_at=hour_ahead())
        await client.cancel(job.job.id)
        first = await store.fan_out_webhook_events(rules, limit=10)
        assert (first.events, first.deliveries) == (1, 1)
        [delivery] = (await client.webhooks.deliveries(hook.id)).items
        assert delivery.status == "pending" and delivery.event_type.value == "cancelled"
        await conn.execute(
            "INSERT INTO webhook_events (id, tenant, event_type, use_case, body) "
            "VALUES ($1, 'acme', 'cancelled', $2, '{}'::jsonb)",
            delivery.event_id,
            USE_CASE,
        )
        done = await store.fan_out_webhook_events(rules, limit=10)
        assert (done.events, done.deliveries) == (1, 0)
        assert len((await client.webhooks.deliveries(hook.id)).items) == 1
    finally:
        await client.aclose()
        await conn.close()
        await store.close()


HANDLERS = """
from pydantic import BaseModel
from jobs_worker import Registry

registry = Registry()


class Email(BaseModel):
    to: str


@registry.handler("notifications.send_email")
def send_email(payload: Email) -> str:
    return "sent"
"""


async def test_jobs_worker_run_with_webhooks_sends_them(
    webhook_stack: MakeWebhookStack,
    receiver: Receiver,
    tmp_path: Any,
    worker_processes: list[WorkerProcess],
) -> None:
    """`jobs-worker run ... --webhooks` as a process: it consumes the built-in use case beside
    the one named and sends its deliveries."""
    stack = await webhook_stack()
    code = tmp_path / "code"
    code.mkdir()
    (code / "email_handlers.py").write_text(HANDLERS)
    env = {**stack.worker_env(code), "JOBS_WEBHOOKS_ALLOWED_NETWORKS": LOOPBACK}
    args = ["email_handlers:registry", "-u", USE_CASE, "--webhooks"]
    worker = WorkerProcess(args, env, tmp_path / "worker.log")
    worker_processes.append(worker)
    hook = await stack.client.webhooks.create(receiver.url, ["succeeded"])
    job_id = await stack.enqueue({"to": "a@example.com"})
    [got] = await receiver.wait_for(1)
    verify(got.body, got.headers[SIGNATURE_HEADER.lower()], hook.secret)
    assert got.event["job_id"] == str(job_id)
