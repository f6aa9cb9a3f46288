"""Wiring: JobsServer owns the store and service; create_app makes a FastAPI app around it,
and `JobsServer.mount` adds the jobs API to a user's own FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jobs_server.api import public
from jobs_server.api.errors import install_error_handlers
from jobs_server.api.limits import BodyLimitMiddleware
from jobs_server.auth import Authenticator
from jobs_server.errors import ConfigError
from jobs_server.service import JobService
from jobs_server.settings import ServerSettings
from jobs_server.store.base import JobStore
from jobs_server.store.postgres import PostgresJobStore

__all__ = ["JobsServer", "create_app"]

logger = logging.getLogger(__name__)

# Room for the JSON around a payload of the maximum size.
_ENVELOPE_SLACK = 16 * 1024


class JobsServer:
    """Everything one jobs-server process runs, started and stopped together."""

    def __init__(self, settings: ServerSettings, *, store: JobStore | None = None) -> None:
        self.settings = settings
        self.config = settings.jobs_config()
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
        self._store = store
        self._owns_store = store is None
        self._service: JobService | None = None

    @property
    def service(self) -> JobService:
        if self._service is None:
            raise RuntimeError("JobsServer.start() has not run")
        return self._service

    async def start(self) -> None:
        if self._store is None:
            self._store = await PostgresJobStore.connect(
                self.settings.require_database_url(),
                min_size=self.settings.db_pool_min,
                max_size=self.settings.db_pool_max,
            )
        self._service = JobService(
            self._store,
            self.config,
            default_quota=self.settings.default_tenant_quota,
            max_payload_bytes=self.settings.max_payload_bytes,
        )

    async def stop(self) -> None:
        if self._store is not None and self._owns_store:
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
        app.include_router(public.router)
        install_error_handlers(app)
        single = self.settings.max_payload_bytes + _ENVELOPE_SLACK
        batch = self.settings.max_batch_body_bytes
        app.add_middleware(
            BodyLimitMiddleware,
            limit_for=lambda path: batch if path.endswith("/batch") else single,
        )


def create_app(settings: ServerSettings, *, store: JobStore | None = None) -> FastAPI:
    server = JobsServer(settings, store=store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with server.running():
            yield

    app = FastAPI(
        title="jobs-server",
        version="0.1.0",
        description="Deadline-aware jobs: enqueue, query and cancel.",
        lifespan=lifespan,
    )
    server.mount(app)
    return app


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None
