"""jobs-worker: run typed job handlers for jobs-server.

registry = Registry()

@registry.handler("notifications.send_email")
async def send_email(payload: SendEmail, ctx: JobContext) -> dict[str, str]:
    ...

Then: `jobs-worker run myapp.handlers:registry --use-case notifications`.
"""

from jobs_worker.consumer import Consumer, InMemoryConsumer, ReceivedMessage, SqsConsumer
from jobs_worker.context import JobContext, LeaseClients, TenantClients
from jobs_worker.errors import (
    ConfigError,
    JobCancelled,
    JobsWorkerError,
    PermanentFailure,
    RegistrationError,
    Retry,
    WorkerApiError,
)
from jobs_worker.registry import Handler, Registry
from jobs_worker.reporter import HttpWorkerApi, WorkerApi
from jobs_worker.runtime import Worker, WorkerStats
from jobs_worker.settings import WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Consumer",
    "Handler",
    "HttpWorkerApi",
    "InMemoryConsumer",
    "JobCancelled",
    "JobContext",
    "JobsWorkerError",
    "LeaseClients",
    "PermanentFailure",
    "ReceivedMessage",
    "RegistrationError",
    "Registry",
    "Retry",
    "SqsConsumer",
    "TenantClients",
    "Worker",
    "WorkerApi",
    "WorkerApiError",
    "WorkerSettings",
    "WorkerStats",
    "__version__",
]
