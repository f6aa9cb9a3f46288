"""The exception tree of jobs-worker. Handlers raise `Retry` or `PermanentFailure` as
instructions to the worker; anything else a handler raises is a retryable failure."""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ConfigError",
    "JobCancelled",
    "JobsWorkerError",
    "PermanentFailure",
    "RegistrationError",
    "Retry",
    "WorkerApiError",
]


class JobsWorkerError(Exception):
    """Root of every error jobs-worker raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RegistrationError(JobsWorkerError):
    """A handler cannot be registered: a duplicate name or a signature the runtime cannot call."""


class ConfigError(JobsWorkerError):
    """A setting is missing or wrong; the message names it."""


class WorkerApiError(JobsWorkerError):
    """The jobs server's worker API could not be reached or refused a request."""


class Retry(JobsWorkerError):
    """Raise from a handler to fail this attempt and retry after `delay` seconds (None: the
    use case's backoff). Attempts still count: after the last one the job is dead."""

    def __init__(self, message: str = "retry requested", *, delay: float | timedelta | None = None):
        super().__init__(message)
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and seconds < 0:
            raise ValueError("Retry delay must not be negative")
        self.delay = seconds


class PermanentFailure(JobsWorkerError):
    """Raise from a handler when retrying cannot help: the job goes straight to dead."""


class JobCancelled(JobsWorkerError):
    """Raised by `JobContext.raise_if_cancelled()` once the job was cancelled; the job ends
    cancelled whatever the attempt reports."""
