"""Wiring: JobsServer owns the store, services, wake-ups and (when asked) the scheduler;
create_app makes a FastAPI app around it, and `JobsServer.mount` adds the jobs API to a user's
own FastAPI app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from jobs_server.actions import ActionService
from jobs_server.api import actions, health, public, worker
from jobs_server.api.errors import install_error_handlers
from jobs_server.api.limits import BodyLimitMiddleware
from jobs_server.api.metrics import router as metrics_router
from jobs_server.auth import Authenticator
from jobs_server.dashboard import install_dashboard
from jobs_server.errors import ConfigError
from jobs_server.metrics import HttpMetricsMiddleware, ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import Publisher
from jobs_server.scheduler import Scheduler, SchedulerConfig
from jobs_server.service import JobService
from jobs_server.settings import ServerSettings
from jobs_server.store.base import JobStore
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.tracing import Tracing, TracingMiddleware
from jobs_server.wakeups import WakeupSender

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["JobsServer", "create_app", "scheduler_config", "server_metrics"]

logger = logging.getLogger(__name__)

# Room for the JSON around a payload of the maximum size.
_ENVELOPE_SLACK = 16 * 1024


def scheduler_config(settings: ServerSettings) -> SchedulerConfig:
    return SchedulerConfig(
        tick_seconds=settings.scheduler_tick_seconds,
        leader_ttl_seconds=settings.leader_ttl_seconds,
        claim_batch=settings.claim_batch,
        metrics_refresh_seconds=settings.metrics_refresh_seconds,
    )


def server_metrics(settings: ServerSettings) -> ServerMetrics | None:
    """None when JOBS_METRICS_ENABLED is false: nothing is counted, /metrics is not served."""
    if not settings.metrics_enabled:
        return None
    return ServerMetrics(
        tenant_labels=settings.metrics_tenant_labels,
        multiprocess_dir=settings.prometheus_multiproc_dir,
    )


class JobsServer:
    """Everything one jobs-server process runs, started and stopped together."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        store: JobStore | None = None,
        publisher: Publisher | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.jobs_config()
        self.metrics = server_metrics(settings)
        self.metrics_token = _secret(settings.metrics_token)
        self.tracing = Tracing(tracer_provider)
        if not self.config.use_cases:
            raise ConfigError(
                "no use cases configured: set JOBS_CONFIG_FILE to a TOML file with "
                "[use_cases.<name>] tables, or JOBS_USE_CASES to JSON"
            )
        self.authenticator = Authenticator(
            self.config,
            admin_token=_secret(settings.admin_token),
            readonly_admin_token=_secret(settings.readonly_admin_token),
            worker_token=_secret(settings.worker_token),
        )
        self._given_store = store
        self._given_publisher = publisher
        self._store: JobStore | None = None
        self._publisher: Publisher | None = None
        self._service: JobService | None = None
        self._outcomes: OutcomeService | None = None
        self._actions: ActionService | None = None
        self._wakeups: WakeupSender | None = None
        self.scheduler: Scheduler | None = None
        self._stop = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None

    @property
    def service(self) -> JobService:
        if self._service is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._service

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._store

    @property
    def actions(self) -> ActionService:
        if self._actions is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._actions

    @property
    def outcomes(self) -> OutcomeService:
        if self._outcomes is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._outcomes

    async def start(self) -> None:
        store = self._given_store or await PostgresJobStore.connect(
            self.settings.require_database_url(),
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
        )
        self._store = store
        self._wakeups = WakeupSender(store)
        self._service = JobService(
            store,
            self.config,
            default_quota=self.settings.default_tenant_quota,
            max_payload_bytes=self.settings.max_payload_bytes,
            on_enqueued=self._wakeups.enqueued if self.settings.enqueue_wakeups else None,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self._outcomes = OutcomeService(
            store, on_slots_freed=self._wakeups.slots_freed, metrics=self.metrics
        )
        self._actions = ActionService(
            store,
            self.config,
            default_quota=self.settings.default_tenant_quota,
            on_enqueued=self._wakeups.enqueued,
        )
        if self.settings.run_scheduler:
            await self._start_scheduler(store)

    async def _start_scheduler(self, store: JobStore) -> None:
        from jobs_server.publisher.sqs import SqsPublisher

        self._publisher = self._given_publisher or await SqsPublisher.connect(
            region=self.settings.aws_region,
            endpoint_url=self.settings.sqs_endpoint_url,
            in_flight=self.settings.publish_in_flight,
            on_error=self.metrics.sqs_error if self.metrics else None,
        )
        self.scheduler = Scheduler(
            store,
            self._publisher,
            dict(self.config.use_cases),
            config=scheduler_config(self.settings),
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self._stop.clear()
        self._scheduler_task = asyncio.create_task(self.scheduler.run_forever(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._scheduler_task is not None:
            await self._scheduler_task
        if self._wakeups is not None:
            await self._wakeups.close()
        if self._publisher is not None and self._given_publisher is None:
            await self._publisher.close()
        if self._store is not None and self._given_store is None:
            await self._store.close()
        self._store = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobsServer]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def mount(self, app: FastAPI) -> None:
        """Add the jobs API (routes, error envelope, body limit) to `app`. Call `start()` and
        `stop()` from the app's lifespan."""
        app.state.jobs = self
        app.include_router(actions.router)  # before public: /v1/jobs/count is not a job id
        app.include_router(public.router)
        app.include_router(worker.router)
        app.include_router(health.router)
        if self.metrics is not None:
            app.include_router(metrics_router)
        install_dashboard(app, self.config)
        install_error_handlers(app)
        single = self.settings.max_payload_bytes + _ENVELOPE_SLACK
        batch = self.settings.max_batch_body_bytes
        app.add_middleware(
            BodyLimitMiddleware,
            limit_for=lambda path: single if path == "/v1/jobs" else batch,
        )
        if self.tracing.enabled:
            app.add_middleware(TracingMiddleware, tracing=self.tracing)
        if self.metrics is not None:
            app.add_middleware(HttpMetricsMiddleware, metrics=self.metrics)


def create_app(
    settings: ServerSettings,
    *,
    store: JobStore | None = None,
    publisher: Publisher | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """`tracer_provider` turns on the enqueue and dispatch spans (the CLI passes one when
    JOBS_OTEL_ENABLED; tests pass their own)."""
    server = JobsServer(settings, store=store, publisher=publisher, tracer_provider=tracer_provider)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with server.running():
            yield

    app = FastAPI(
        title="jobs-server",
        version="0.1.0",
        description="Deadline-aware jobs: enqueue, query and cancel; the worker API.",
        lifespan=lifespan,
    )
    server.mount(app)
    return app


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None
