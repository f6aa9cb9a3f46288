"""OpenTelemetry set-up shared by jobs-server and jobs-worker: the OTLP tracer provider and the
log filter that stamps trace ids on records.

jobs-schema does not depend on opentelemetry: it is imported only when these are used, and a
process without it installed gets an ImportError (each process's CLI turns that into its own
ConfigError, naming the extra to install)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span

__all__ = ["TraceLogFilter", "otlp_tracer_provider"]


class TraceLogFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to records logged inside a span (for log correlation)."""

    def __init__(self) -> None:
        super().__init__()
        from opentelemetry import trace

        self._current: Callable[[], Span] = trace.get_current_span

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = self._current().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def otlp_tracer_provider(service_name: str) -> SdkTracerProvider:
    """The SDK's provider exporting over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT and the other
    OTEL_* variables configure it, as the SDK documents; OTEL_SERVICE_NAME wins over
    `service_name`). ImportError when the SDK or its OTLP exporter is not installed."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = SdkProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
