"""Wiring: JobsServer owns the store, services, wake-ups and (when asked) the scheduler.

- `create_app(settings)` is the standalone server: the API, the dashboard, health, metrics,
  docs, and our error envelope for every path.
- `JobsServer.include_in(app, prefix=...)` adds the jobs API to a user's own FastAPI app and
  touches nothing else of it (see "Embedding" in the package README).
- `app.mount("/jobs", create_app(settings))` works too: the mounted app starts its server on
  the first request, since Starlette runs no lifespan of a mounted app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs_server.actions import ActionService
from jobs_server.api import actions, events, flow, forecast, pauses, public, schedules, worker
from jobs_server.api import webhooks as webhooks_api
from jobs_server.api.errors import install_error_handlers, response_for
from jobs_server.api.health import router as health_router
from jobs_server.api.metrics import router as metrics_router
from jobs_server.api.workflows import router as workflows_router
from jobs_server.auth import Authenticator
from jobs_server.clock import Clock, DatabaseClock
from jobs_server.dashboard import install_dashboard
from jobs_server.errors import ConfigError, JobsServerError, StoreUnavailable
from jobs_server.events import EventSender
from jobs_server.flow import FlowService
from jobs_server.metrics import HttpMetricsMiddleware, ServerMetrics
from jobs_server.notify import Notifier
from jobs_server.outcomes import OutcomeService
from jobs_server.pauses import PauseService
from jobs_server.publisher.base import Publisher
from jobs_server.scheduler import Scheduler
from jobs_server.schedules import ScheduleService, config_schedules
from jobs_server.service import JobService
from jobs_server.settings import ServerSettings
from jobs_server.store.base import JobStore
from jobs_server.streams import EventHub, JobStreams
from jobs_server.tracing import Tracing, TracingMiddleware
from jobs_server.wakeups import WakeupSender
from jobs_server.webhooks import WebhookService
from jobs_server.wiring import (
    build_job_service,
    build_scheduler,
    connect_publisher,
    connect_store,
    scheduler_config,
    target_check,
    webhook_services,
)
from jobs_server.workflows import WorkflowService

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["JobsServer", "create_app", "openapi_schema", "scheduler_config", "server_metrics"]

logger = logging.getLogger(__name__)

# Room for the JSON around a payload of the maximum size.
_ENVELOPE_SLACK = 16 * 1024
# The dashboard's forms are small; FastAPI's own limit (a plain-text 413) suits a browser form.
_DASHBOARD_BODY_LIMIT = 64 * 1024

TITLE = "jobs-server"
VERSION = "0.1.0"
DESCRIPTION = (
    "Deadline-aware jobs: enqueue, query, cancel and retry jobs; the worker API. "
    'Every error answers `{"error": {"code", "message", "details"}}`.'
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
        clock: Clock | None = None,
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
        self._given_clock = clock
        self._store: JobStore | None = None
        self._publisher: Publisher | None = None
        self._service: JobService | None = None
        self._schedules: ScheduleService | None = None
        self._outcomes: OutcomeService | None = None
        self._actions: ActionService | None = None
        self._pauses: PauseService | None = None
        self._flow: FlowService | None = None
        self._webhooks: WebhookService | None = None
        self._wakeups: WakeupSender | None = None
        self._workflows: WorkflowService | None = None
        self._events: EventSender | None = None
        self._streams: JobStreams | None = None
        self.scheduler: Scheduler | None = None
        # the one clock: given, or PostgreSQL's (the store binds and syncs it); once started,
        # the store's
        self.clock: Clock = clock or DatabaseClock()
        self._stop = asyncio.Event()
        self._starting = asyncio.Lock()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._methods: dict[str, set[str]] = {}

    @property
    def started(self) -> bool:
        return self._store is not None

    @property
    def service(self) -> JobService:
        if self._service is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._service

    @property
    def schedules(self) -> ScheduleService:
        if self._schedules is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._schedules

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
    def pauses(self) -> PauseService:
        if self._pauses is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._pauses

    @property
    def flow(self) -> FlowService:
        if self._flow is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._flow

    @property
    def webhooks(self) -> WebhookService:
        if self._webhooks is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._webhooks

    @property
    def workflows(self) -> WorkflowService:
        if self._workflows is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._workflows

    @property
    def streams(self) -> JobStreams:
        if self._streams is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._streams

    @property
    def outcomes(self) -> OutcomeService:
        if self._outcomes is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._outcomes

    async def start(self) -> None:
        """Connect and start the services (and the scheduler when JOBS_RUN_SCHEDULER); once."""
        if self._store is not None:
            return
        store = self._given_store or await connect_store(self.settings, clock=self.clock)
        self._store = store
        self.clock = clock = self._given_clock or store.clock
        notifier = Notifier(store)  # a commit's wake-up and events in one statement
        self._wakeups = WakeupSender(store, notifier=notifier)
        self._events = events = EventSender(
            store, enabled=self.settings.events_notify, notifier=notifier
        )
        self._service = build_job_service(
            self.settings,
            store,
            clock=clock,
            config=self.config,
            on_enqueued=self._wakeups.enqueued if self.settings.enqueue_wakeups else None,
            metrics=self.metrics,
            tracing=self.tracing,
            on_changed=events.changed,
        )
        self._schedules = ScheduleService(store, self._service, clock=clock)
        self._workflows = WorkflowService(store, self._service, clock=clock)
        await self._write_config_schedules(store)
        self._outcomes = OutcomeService(
            store,
            clock=clock,
            on_slots_freed=self._wakeups.slots_freed,
            metrics=self.metrics,
            on_changed=events.changed,
        )
        self._actions = ActionService(
            store,
            self.config,
            default_quota=self.settings.default_tenant_quota,
            on_enqueued=self._wakeups.enqueued,
            clock=clock,
            on_changed=events.changed,
        )
        self._pauses = PauseService(store, self.config, on_resumed=self._wakeups.slots_freed)
        self._flow = FlowService(store, self.config, clock=clock)
        self._webhooks = WebhookService(
            store, self.config, clock=clock, targets=target_check(self.settings)
        )
        self._streams = JobStreams(
            self._hub(store),
            self._service,
            heartbeat_seconds=self.settings.events_heartbeat_seconds,
        )
        if self.settings.run_scheduler:
            await self._start_scheduler(store)

    async def _write_config_schedules(self, store: JobStore) -> None:
        """The config file's schedules, written so that the API shows them before a scheduler
        has run. Skipped while the database is down or not migrated: the server starts anyway
        (readiness says why), and the leader writes them on its first pass."""
        rows = config_schedules(self.config, now=self.clock.now())
        if not rows:
            return
        try:
            if not await store.pending_migrations():
                await store.sync_config_schedules(rows)
        except StoreUnavailable:
            logger.warning("config file's schedules not written at start")

    async def _start_scheduler(self, store: JobStore) -> None:
        self._publisher = self._given_publisher or await connect_publisher(
            self.settings, metrics=self.metrics
        )
        self.scheduler = build_scheduler(
            store,
            self._publisher,
            self.config.use_cases,
            outcomes=self.outcomes,
            clock=self.clock,
            config=scheduler_config(self.settings),
            metrics=self.metrics,
            tracing=self.tracing,
            jobs=self.service,
            extra=webhook_services(
                self.settings,
                self.config,
                store,
                on_enqueued=self._wakeups.enqueued if self._wakeups is not None else None,
            ),
            on_changed=self._events.changed if self._events else None,
        )
        self._stop.clear()
        self._scheduler_task = asyncio.create_task(self.scheduler.run_forever(self._stop))

    def _hub(self, store: JobStore) -> EventHub:
        s = self.settings
        return EventHub(
            store,
            queue_size=s.events_queue_size,
            max_streams=s.events_max_streams,
            max_per_tenant=s.events_max_streams_per_tenant,
        )

    def end_streams(self) -> None:
        """End every open event stream (`shutdown`) and open no new one: a server that is
        stopping calls this first, since uvicorn waits for open responses."""
        if self._streams is not None:
            self._streams.hub.end_all()

    async def stop(self) -> None:
        self._stop.set()
        if self._streams is not None:
            await self._streams.hub.close()
        if self._scheduler_task is not None:
            await self._scheduler_task
        if self._wakeups is not None:
            await self._wakeups.close()
        if self._events is not None:
            await self._events.close()
        if self._publisher is not None and self._given_publisher is None:
            await self._publisher.close()
        if self._store is not None and self._given_store is None:
            await self._store.close()
        self._store = None

    async def ensure_started(self) -> None:
        """Start on the first request when no lifespan did (concurrent first requests start
        it once)."""
        if self._store is not None:
            return
        async with self._starting:
            await self.start()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobsServer]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    @asynccontextmanager
    async def lifespan(self, _: object = None) -> AsyncIterator[None]:
        """`running()` in the shape of a Starlette lifespan: `FastAPI(lifespan=jobs.lifespan)`."""
        async with self.running():
            yield

    def body_limit(self, route_name: str) -> int:
        """The largest request body a route takes, in bytes."""
        if route_name == "enqueue_job":
            return self.settings.max_payload_bytes + _ENVELOPE_SLACK
        return self.settings.max_batch_body_bytes

    def allowed_methods(self, path: str) -> list[str]:
        """The methods our routes serve on `path` (the 405's Allow header)."""
        return sorted(self._methods.get(path, set()))

    def router(self, *, health: bool = False, metrics: bool = False) -> APIRouter:
        """Our API routes (plus health and metrics when asked) in one router whose lifespan
        starts and stops this server; `include_router` composes it with the app's own."""
        # actions: /v1/jobs/count
        routers = [
            actions.router,
            events.router,
            flow.router,
            forecast.router,
            pauses.router,
            public.router,
            schedules.router,
            worker.router,
            webhooks_api.router,
            webhooks_api.worker_router,
            workflows_router,
        ]
        if health:
            routers.append(health_router)
        if metrics and self.metrics is not None:
            routers.append(metrics_router)
        router = APIRouter(lifespan=self.lifespan)
        for child in routers:
            router.include_router(child)
            self._learn_methods(child.routes)
        return router

    def include_in(
        self,
        app: FastAPI,
        *,
        prefix: str = "",
        dashboard: bool = False,
        health: bool = False,
        metrics: bool = False,
    ) -> None:
        """Serve the jobs API from `app` under `prefix`. Only our routes are added: `app`'s
        handlers, error shapes, body sizes and other paths stay as they were. The dashboard
        (`{prefix}/ui`), `/healthz` and `/readyz`, and `/metrics` are each opt-in. The server
        starts and stops with `app`'s lifespan (or on the first request, without one)."""
        current = getattr(app.state, "jobs_server", None)
        if current is not None and current is not self:
            raise ConfigError("this app already serves another JobsServer; include one per app")
        app.state.jobs_server = self
        app.include_router(self.router(health=health, metrics=metrics), prefix=prefix)
        if dashboard:
            app.router.routes.append(_DashboardMount(prefix, self._dashboard_app()))

    def _dashboard_app(self) -> FastAPI:
        ui = FastAPI(
            openapi_url=None, docs_url=None, redoc_url=None, max_body_size=_DASHBOARD_BODY_LIMIT
        )
        ui.state.jobs = ui.state.jobs_server = self
        ui.add_middleware(_StartOnFirstRequest, server=self)
        install_dashboard(ui, self.config)
        return ui

    def _learn_methods(self, routes: Iterable[object]) -> None:
        for route in routes:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            if path is not None and methods:
                self._methods.setdefault(path, set()).update(methods)


def create_app(
    settings: ServerSettings,
    *,
    store: JobStore | None = None,
    publisher: Publisher | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The standalone server: everything on, and our envelope for every path. `tracer_provider`
    turns on the enqueue and dispatch spans (the CLI passes one when JOBS_OTEL_ENABLED; tests
    pass their own). `clock`: every service's and the store's when the server connects it
    (default: the store's, PostgreSQL's clock); a given `store` should be built with it."""
    server = JobsServer(
        settings, store=store, publisher=publisher, tracer_provider=tracer_provider, clock=clock
    )
    app = _offline_app(static_url="/docs/static")
    app.state.jobs = server
    server.include_in(app, dashboard=True, health=True, metrics=True)
    install_error_handlers(app)
    app.add_middleware(_StartOnFirstRequest, server=server)
    if server.tracing.enabled:
        app.add_middleware(TracingMiddleware, tracing=server.tracing)
    if server.metrics is not None:
        app.add_middleware(HttpMetricsMiddleware, metrics=server.metrics)
    return app


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document of the standalone server, the same whatever the settings
    (docs/openapi.json is this; `jobs-server openapi` prints it)."""
    placeholder = ServerSettings(
        use_cases={"example": {"queue": "example"}}, metrics_enabled=True, run_scheduler=False
    )
    return create_app(placeholder).openapi()


def _offline_app(*, static_url: str) -> FastAPI:
    """Swagger UI and ReDoc served from the fastapi-offline package, not from a CDN."""
    return FastAPIOffline(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        static_url=static_url,
        separate_input_output_schemas=True,
    )


class _DashboardMount(Mount):
    """The dashboard app under `{prefix}/ui` only: other paths under the prefix stay the host's."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return match, child
        rest = scope["path"][len(child["root_path"]) :]
        if rest == "/ui" or rest.startswith("/ui/"):
            return match, child
        return Match.NONE, {}


class _StartOnFirstRequest:
    """Start the server before the first request when no lifespan started it."""

    def __init__(self, app: ASGIApp, *, server: JobsServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.server.started:
            try:
                await self.server.ensure_started()
            except JobsServerError as exc:
                await response_for(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None
