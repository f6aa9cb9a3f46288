"""A job enqueued inside a traced request runs its handler in the same trace: the producer's
span → jobs.enqueue (server) → jobs.dispatch (scheduler) → jobs.run (worker), collected by an
in-memory span exporter from a live server, its scheduler on SQS (moto) and a worker here."""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel

from jobs_worker import JobContext, Registry
from jobs_worker.tracing import WorkerTracing
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import EMAIL, USE_CASE, MakeStack

make_stack = harness.make_stack  # the fixture


class Email(BaseModel):
    to: str


def tracing_registry(seen: list[int]) -> Registry:
    reg = Registry()

    @reg.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> dict[str, str]:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        return {"sent_to": payload.to}

    return reg


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_handler_span_joins_the_trace_of_the_enqueuing_request(make_stack: MakeStack):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack = await make_stack(server={"app_options": {"tracer_provider": provider}})

    producer_tracer = provider.get_tracer("producer")
    with producer_tracer.start_as_current_span("producer") as producer:
        headers = {"Authorization": f"Bearer {stack.server.tenant_token('acme')}"}
        TraceContextTextMapPropagator().inject(headers)  # traceparent
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{stack.server.url}/v1/jobs",
                json={"use_case": USE_CASE, "job_type": EMAIL, "payload": {"to": "a@x"}},
                headers=headers,
            )
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    await stack.dispatched([job_id])

    seen: list[int] = []
    worker = await stack.worker(tracing_registry(seen), tracing=WorkerTracing(provider))
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    assert stats.succeeded == 1

    spans = list(exporter.get_finished_spans())
    trace_id = producer.get_span_context().trace_id
    enqueue = one(spans, "jobs.enqueue")
    dispatch = one(spans, "jobs.dispatch")
    run = one(spans, f"jobs.run {EMAIL}")
    assert run.context is not None and run.context.trace_id == trace_id
    assert seen == [trace_id]  # the span is current inside the handler
    # the chain, parent by parent
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == producer.get_span_context().span_id
    assert dispatch.parent is not None and enqueue.context is not None
    assert dispatch.parent.span_id == enqueue.context.span_id
    assert run.parent is not None and dispatch.context is not None
    assert run.parent.span_id == dispatch.context.span_id
    assert run.kind is trace.SpanKind.CONSUMER
    assert run.attributes is not None
    assert run.attributes["jobs.job_id"] == job_id
    assert run.attributes["jobs.outcome"] == "succeeded"
    assert enqueue.attributes is not None
    assert enqueue.attributes["http.response.status_code"] == 201


async def test_without_a_tracer_provider_jobs_carry_no_trace_context(make_stack: MakeStack):
    stack = await make_stack()
    job_id = await stack.enqueue({"to": "a@x"})
    async with httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {stack.server.admin_token}"}
        r = await http.get(f"{stack.server.url}/v1/jobs/{job_id}", headers=headers)
    assert r.status_code == 200
    seen: list[int] = []
    worker = await stack.worker(tracing_registry(seen))
    await stack.dispatched([job_id])
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    assert stats.succeeded == 1
    assert seen == [0]  # no span: the invalid span's trace id
