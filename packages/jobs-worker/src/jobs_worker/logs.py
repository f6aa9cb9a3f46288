"""How `jobs-worker run` writes its logs: the shared format of jobs_schema.logformat (`json` by
default, `text` when `jobs-server dev` asks for it). Every line about a job carries `job_id`,
`tenant`, `use_case`, `job_type` and `attempt` (see `job_logger`). Only the CLI configures
logging."""

from __future__ import annotations

import logging.config
from typing import Any

from jobs_schema.logformat import JsonFormatter, LogFormat, TextFormatter
from jobs_schema.logformat import logging_config as _shared_config

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "configure_logging", "logging_config"]


def logging_config(fmt: LogFormat | str, level: str, *, trace_ids: bool = False) -> dict[str, Any]:
    trace = "jobs_schema.telemetry.TraceLogFilter" if trace_ids else None
    return _shared_config(fmt, level, trace_filter=trace)


def configure_logging(fmt: LogFormat | str, level: str, *, trace_ids: bool = False) -> None:
    logging.config.dictConfig(logging_config(fmt, level, trace_ids=trace_ids))
