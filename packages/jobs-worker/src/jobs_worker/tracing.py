"""The worker's OpenTelemetry span: `jobs.run <job_type>` (a consumer span) around each
handler run, a child of the context the SQS message carries (the scheduler's `jobs.dispatch`
span, itself a child of the producer's enqueue), so the handler joins the producer's trace.
It is current while the handler runs: the handler's own spans, and those of instrumented
libraries it calls, nest under it (sync handlers too: their thread gets the context).

Off unless `WorkerTracing` gets a tracer provider (the CLI builds one when JOBS_OTEL_ENABLED is
true or OTEL_EXPORTER_OTLP_ENDPOINT is set); opentelemetry is imported only then."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from jobs_schema import JobMessage
from jobs_schema.telemetry import TraceLogFilter, otlp_tracer_provider
from jobs_worker.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["TraceLogFilter", "WorkerTracing", "sdk_tracer_provider"]

# Called with the outcome label (jobs_worker.metrics.outcome_label) once the handler is done.
RecordOutcome = Callable[[str], None]

_OK = frozenset({"succeeded", "retry"})


def _ignore(outcome: str) -> None:
    return None


class WorkerTracing:
    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer: Tracer | None = None
        if provider is not None:
            from opentelemetry import context, propagate, trace

            self._tracer = provider.get_tracer("jobs_worker")
            self._propagate = propagate
            self._trace = trace
            self._context = context

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def run_span(self, job: JobMessage) -> Iterator[RecordOutcome]:
        if self._tracer is None:
            yield _ignore
            return
        # the message's context, or none at all: an untraced job starts a trace of its own
        parent = self._propagate.extract(job.trace_context, context=self._context.Context())
        with self._tracer.start_as_current_span(
            f"jobs.run {job.job_type}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                "jobs.job_id": str(job.job_id),
                "jobs.tenant": job.tenant,
                "jobs.use_case": job.use_case,
                "jobs.job_type": job.job_type,
                "jobs.attempt": job.attempt,
                "messaging.system": "aws_sqs",
            },
        ) as span:
            yield lambda outcome: self._record(span, outcome)

    def _record(self, span: Span, outcome: str) -> None:
        span.set_attribute("jobs.outcome", outcome)
        if outcome not in _OK:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))


def sdk_tracer_provider(service_name: str) -> SdkTracerProvider:
    """jobs_schema.telemetry's OTLP provider; a ConfigError naming the extra to install when
    OpenTelemetry is missing."""
    try:
        return otlp_tracer_provider(service_name)
    except ImportError as exc:
        raise ConfigError(
            "JOBS_OTEL_ENABLED (or OTEL_EXPORTER_OTLP_ENDPOINT) is set but the OpenTelemetry "
            f"SDK or its OTLP exporter is not installed ({exc.name}): install 'jobs-worker[otel]'"
        ) from exc
