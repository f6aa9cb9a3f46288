"""jobs-sdk: the producer client of jobs-server.

async with JobsClient("http://localhost:8000", token) as jobs:
    result = await jobs.enqueue("notifications", "notifications.send_email", {"to": "a@b.c"})
"""

from jobs_sdk._http import EnqueueOptions, JobFilters
from jobs_sdk._retry import RetryPolicy
from jobs_sdk._selection import SelectionFilters
from jobs_sdk._version import __version__
from jobs_sdk.client import JobsClient, SyncJobsClient
from jobs_sdk.errors import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    JobsError,
    JobsTimeout,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from jobs_sdk.protocols import Enqueuer, JobsApi, SyncEnqueuer
from jobs_sdk.tasks import Task
from jobs_sdk.worker_api import WorkerApiClient

__all__ = [
    "Conflict",
    "EnqueueOptions",
    "Enqueuer",
    "Forbidden",
    "IdempotencyMismatch",
    "JobFilters",
    "JobsApi",
    "JobsClient",
    "JobsError",
    "JobsTimeout",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RetryPolicy",
    "SelectionFilters",
    "ServerError",
    "SyncEnqueuer",
    "SyncJobsClient",
    "Task",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WorkerApiClient",
    "__version__",
]
