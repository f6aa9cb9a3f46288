"""OpenTelemetry spans along a job's way through the server.

- `jobs.enqueue` (server span) around each enqueue request, its parent taken from the request's
  W3C `traceparent`; its context is stored on every job the request creates (`trace_context`).
- `jobs.dispatch` (producer span) when the scheduler publishes a job: a child of the stored
  context, so the gap between enqueue and dispatch shows in the trace. The SQS message carries
  the dispatch span's context and the worker's `jobs.run` span is its child: producer, enqueue,
  dispatch and handler make one trace, and each retry adds a dispatch and a run to it.

Off unless `Tracing` gets a tracer provider (the CLI builds one when JOBS_OTEL_ENABLED is true or
OTEL_EXPORTER_OTLP_ENDPOINT is set). opentelemetry is imported only then: without the `otel`
extra everything else works, and a disabled `Tracing` costs a None check."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs_schema.telemetry import TraceLogFilter, otlp_tracer_provider
from jobs_server.errors import ConfigError
from jobs_server.store.base import ClaimedJob

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Status, Tracer, TracerProvider

__all__ = [
    "DispatchSpans",
    "TraceLogFilter",
    "Tracing",
    "TracingMiddleware",
    "sdk_tracer_provider",
]

_ENQUEUE_PATHS = frozenset({"/v1/jobs", "/v1/jobs/batch"})
_INSTRUMENTATION = "jobs_server"


class Tracing:
    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer: Tracer | None = None
        if provider is not None:
            from opentelemetry import propagate, trace

            self._tracer = provider.get_tracer(_INSTRUMENTATION)
            self._propagate = propagate
            self._trace = trace

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def carrier(self) -> dict[str, str] | None:
        """The current context (the enqueue span, inside a request) as W3C headers."""
        if self._tracer is None:
            return None
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return carrier or None

    def enqueue_span(self, headers: dict[str, str], path: str) -> Any:
        """A context manager: the `jobs.enqueue` span, current while it is open."""
        assert self._tracer is not None
        return self._tracer.start_as_current_span(
            "jobs.enqueue",
            context=self._propagate.extract(headers),
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": "POST", "url.path": path},
        )

    def start_dispatch(self, jobs: Iterable[ClaimedJob]) -> DispatchSpans:
        """A `jobs.dispatch` span per job that carries a trace context, with the context its
        message should carry. Jobs enqueued untraced stay untraced."""
        spans = DispatchSpans()
        if self._tracer is None:
            return spans
        error = self._trace.Status(self._trace.StatusCode.ERROR, "not published")
        for job in jobs:
            if not job.trace_context:
                continue
            span = self._tracer.start_span(
                "jobs.dispatch",
                context=self._propagate.extract(job.trace_context),
                kind=self._trace.SpanKind.PRODUCER,
                attributes=_job_attributes(job),
            )
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
            spans.add(job.id, span, carrier, error)
        return spans


class DispatchSpans:
    """The open `jobs.dispatch` spans of one publish call."""

    def __init__(self) -> None:
        self._open: dict[UUID, tuple[Span, dict[str, str], Status]] = {}

    def add(self, job_id: UUID, span: Span, carrier: dict[str, str], error: Status) -> None:
        self._open[job_id] = (span, carrier, error)

    def carrier(self, job_id: UUID) -> dict[str, str] | None:
        entry = self._open.get(job_id)
        return entry[1] if entry else None

    def end(self, *, failed: set[UUID]) -> None:
        for job_id, (span, _, error) in self._open.items():
            if job_id in failed:
                span.set_status(error)
            span.end()
        self._open.clear()


def _job_attributes(job: ClaimedJob) -> dict[str, Any]:
    return {
        "jobs.job_id": str(job.id),
        "jobs.tenant": job.tenant,
        "jobs.use_case": job.use_case,
        "jobs.job_type": job.job_type,
        "jobs.attempt": job.attempt,
        "jobs.deadline_missed": job.missed_deadline,
        "messaging.system": "aws_sqs",
    }


class TracingMiddleware:
    """Open `jobs.enqueue` around POST /v1/jobs and /v1/jobs/batch. A plain ASGI middleware, so
    the span is current in the endpoint's own task, where JobService reads it."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in _ENQUEUE_PATHS
            or not self.tracing.enabled
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self.tracing.enqueue_span(headers, scope["path"]) as span:

            async def recording(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, recording)


def sdk_tracer_provider(service_name: str) -> SdkTracerProvider:
    """jobs_schema.telemetry's OTLP provider; a ConfigError naming the extra to install when
    OpenTelemetry is missing."""
    try:
        return otlp_tracer_provider(service_name)
    except ImportError as exc:
        raise ConfigError(
            "JOBS_OTEL_ENABLED (or OTEL_EXPORTER_OTLP_ENDPOINT) is set but the OpenTelemetry "
            f"SDK or its OTLP exporter is not installed ({exc.name}): install 'jobs-server[otel]'"
        ) from exc
