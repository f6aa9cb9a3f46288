"""How the jobs-server commands write their logs: the shared format of
jobs_schema.logformat (`json` by default, `text` under `dev`), uvicorn's loggers included;
`logging_config` is also handed to uvicorn, which applies it in each of its worker processes."""

from __future__ import annotations

import logging.config
from typing import Any

from jobs_schema.logformat import JsonFormatter, LogFormat, TextFormatter
from jobs_schema.logformat import logging_config as _shared_config

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "configure_logging", "logging_config"]

_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


def logging_config(fmt: LogFormat | str, level: str, *, trace_ids: bool = False) -> dict[str, Any]:
    trace = "jobs_schema.telemetry.TraceLogFilter" if trace_ids else None
    return _shared_config(fmt, level, trace_filter=trace, propagate=_UVICORN)


def configure_logging(fmt: LogFormat | str, level: str, *, trace_ids: bool = False) -> None:
    logging.config.dictConfig(logging_config(fmt, level, trace_ids=trace_ids))
