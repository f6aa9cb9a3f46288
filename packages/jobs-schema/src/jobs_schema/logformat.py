"""The log line format of every jobs process: one JSON object per line (`json`) or a readable
line with the `extra` fields as key=value (`text`). Messages are constant and the variable
parts travel in `extra`, so a log pipeline filters on `job_id`, `tenant`, `use_case` or
`attempt` instead of parsing sentences. Log pipelines read these lines, so the format lives
here, once, for the server and the worker. Only the CLIs apply it (libraries configure no
handlers)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "logging_config"]

# Attributes every LogRecord has; anything else on a record came from `extra` (but uvicorn's
# colored copy of its message).
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A readable line, the `extra` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = "".join(f" {k}={v}" for k, v in _extra(record).items())
        if not extra:
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays below the fields
        return head + extra + sep + rest


def logging_config(
    fmt: LogFormat | str,
    level: str,
    *,
    trace_filter: str | None = None,
    propagate: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A dictConfig: one stderr handler on the root logger. `trace_filter`: the dotted path of a
    logging.Filter adding trace ids to each line (tracing on). `propagate`: loggers that bring
    handlers of their own (uvicorn's), made to hand their records to the root instead."""
    formatter = JsonFormatter if LogFormat(fmt) is LogFormat.JSON else TextFormatter
    level = level.upper()
    filters = {"trace": {"()": trace_filter}} if trace_filter else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"jobs": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "filters": filters,
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "jobs",
                "stream": "ext://sys.stderr",
                "filters": list(filters),
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level} for name in propagate
        },
    }
