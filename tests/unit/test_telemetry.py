"""jobs_schema.telemetry: shared by server and worker, without a hard opentelemetry dependency."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from jobs_schema.telemetry import TraceLogFilter
from jobs_server import tracing as server_tracing
from jobs_worker import tracing as worker_tracing


def test_importing_it_does_not_import_opentelemetry():
    code = "import sys, jobs_schema.telemetry; print('opentelemetry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_server_and_worker_share_one_log_filter():
    assert server_tracing.TraceLogFilter is worker_tracing.TraceLogFilter is TraceLogFilter


def test_the_filter_stamps_ids_only_inside_a_span():
    from opentelemetry.sdk.trace import TracerProvider

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert TraceLogFilter().filter(record) and not hasattr(record, "trace_id")
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        TraceLogFilter().filter(record)
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")


@pytest.mark.parametrize(
    ("module", "extra"), [(server_tracing, "jobs-server"), (worker_tracing, "jobs-worker")]
)
def test_a_missing_exporter_is_a_config_error_naming_the_extra(module, extra, monkeypatch):
    def missing(service_name: str) -> None:
        raise ImportError("no exporter", name="opentelemetry.exporter")

    monkeypatch.setattr(module, "otlp_tracer_provider", missing)
    with pytest.raises(module.ConfigError, match=rf"{extra}\[otel\]"):
        module.sdk_tracer_provider("svc")
