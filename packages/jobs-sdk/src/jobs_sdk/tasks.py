"""Typed tasks: a job type declared once, with its payload model and its defaults, in a module
that producers and workers both import.

    class SendEmail(BaseModel):
        to: str
        subject: str

    send_email = Task("notifications", "notifications.send_email", SendEmail, delay_tolerance=30)

    await send_email.enqueue(jobs, SendEmail(to="ada@example.com", subject="Hi"))  # producer

    @registry.task(send_email)                                                    # worker
    async def handle(payload: SendEmail, ctx: JobContext) -> None: ...

mypy checks the payload's type at every call; at run time the payload is validated against
the model before anything is sent, the same check the worker makes before it runs a handler.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar, Unpack

from pydantic import BaseModel, JsonValue, ValidationError

from jobs_schema import BackoffPolicy, BatchEnqueueResponse, EnqueueRequest, EnqueueResponse
from jobs_sdk import _http
from jobs_sdk._http import EnqueueOptions
from jobs_sdk.errors import ValidationFailed
from jobs_sdk.protocols import Enqueuer, SyncEnqueuer

__all__ = ["Task"]

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Task(Generic[P]):
    """A job type and the model of its payload, with the defaults of every enqueue.

    `delay_tolerance` (seconds or a timedelta), `priority`, `max_attempts` and `backoff` apply
    unless a call passes its own; None leaves the choice to the use case's config. A call that
    passes an absolute `deadline` drops the default tolerance. Every call takes the options of
    `JobsClient.enqueue`, `dedup_key` and `unique` among them (a uniqueness rule, e.g.
    `unique={"key": "report-7", "window": "enqueued", "seconds": 3600}`). The flow-limit keys
    belong to a job, not its type: pass them per call (`concurrency_key=account_id,
    rate_key=account_id`)."""

    use_case: str
    job_type: str
    payload_model: type[P]
    delay_tolerance: float | timedelta | None = None
    priority: int = 0
    max_attempts: int | None = None
    backoff: BackoffPolicy | None = None

    def __post_init__(self) -> None:
        model = self.payload_model
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(
                f"task {self.job_type!r}: payload_model must be a pydantic BaseModel subclass, "
                f"not {model!r}"
            )
        # the names and defaults break a rule: fail at import, not at the first enqueue
        _http.enqueue_request(self.use_case, self.job_type, {}, self._defaults({}))

    def request(self, payload: P, **options: Unpack[EnqueueOptions]) -> EnqueueRequest:
        """The EnqueueRequest of one job; ValidationFailed when the payload is not a valid
        `payload_model`."""
        body = self._payload(payload)
        return _http.enqueue_request(self.use_case, self.job_type, body, self._defaults(options))

    async def enqueue(
        self,
        jobs: Enqueuer,
        payload: P,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse:
        """Enqueue one job with `jobs` (a JobsClient, or a fake in tests)."""
        request = self.request(payload, **options)
        return await jobs.enqueue(request, idempotency_key=idempotency_key)

    async def enqueue_many(
        self,
        jobs: Enqueuer,
        payloads: Iterable[P],
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> BatchEnqueueResponse:
        """Up to 1,000 jobs in one request and one transaction, with a result per item."""
        requests = [self.request(p, **options) for p in payloads]
        return await jobs.enqueue_batch(requests, idempotency_key=idempotency_key)

    def enqueue_sync(
        self,
        jobs: SyncEnqueuer,
        payload: P,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse:
        """`enqueue` with a SyncJobsClient."""
        return jobs.enqueue(self.request(payload, **options), idempotency_key=idempotency_key)

    def enqueue_many_sync(
        self,
        jobs: SyncEnqueuer,
        payloads: Iterable[P],
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> BatchEnqueueResponse:
        """`enqueue_many` with a SyncJobsClient."""
        requests = [self.request(p, **options) for p in payloads]
        return jobs.enqueue_batch(requests, idempotency_key=idempotency_key)

    def parse(self, payload: object) -> P:
        """A stored job's payload as the task's model (e.g. `Job.payload` in a test)."""
        try:
            return self.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise ValidationFailed(f"{self._name}: {_summary(exc)}") from exc

    def _payload(self, payload: P) -> dict[str, JsonValue]:
        model = self.payload_model
        if not isinstance(payload, model):
            raise ValidationFailed(
                f"{self._name} takes a {model.__name__} payload, not "
                f"{type(payload).__name__}: pass {model.__name__}(...)"
            )
        body = payload.model_dump(mode="json", by_alias=True, warnings=False)
        # revalidated as the worker will read it: catches model_construct() and mutation
        self.parse(body)
        return body

    def _defaults(self, options: EnqueueOptions) -> EnqueueOptions:
        defaults = EnqueueOptions(priority=self.priority)
        if self.max_attempts is not None:
            defaults["max_attempts"] = self.max_attempts
        if self.backoff is not None:
            defaults["backoff"] = self.backoff
        if self.delay_tolerance is not None and options.get("deadline") is None:
            defaults["delay_tolerance"] = self.delay_tolerance
        return {**defaults, **options}

    @property
    def _name(self) -> str:
        return f"task {self.job_type!r}"


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()[:5]
    )
