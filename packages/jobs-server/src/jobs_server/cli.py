"""`jobs-server`: migrate, serve, dev. Settings are read here, once, and passed down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from jobs_server.errors import ConfigError, JobsServerError
from jobs_server.settings import ServerSettings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="jobs-server: the control plane of deadline-aware jobs.", no_args_is_help=True
)
logger = logging.getLogger("jobs_server")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _settings() -> ServerSettings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(exc.message)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def migrate(
    target: Annotated[int | None, typer.Option(help="stop after this version")] = None,
) -> None:
    """Apply pending database migrations (idempotent; safe to run from several processes)."""
    from jobs_server.store.migrations import migrate as run_migrations

    _configure_logging("info")
    settings = _settings()
    try:
        applied = asyncio.run(run_migrations(settings.require_database_url(), target=target))
    except JobsServerError as exc:
        _fail(exc.message)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing (up to date)"
    typer.echo(f"applied: {names}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: JOBS_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: JOBS_PORT")] = None,
    with_scheduler: Annotated[
        bool, typer.Option("--scheduler", help="also run the scheduler (JOBS_RUN_SCHEDULER)")
    ] = False,
    log_level: str = "info",
) -> None:
    """Serve the HTTP API. Checks every setting before binding the port."""
    _configure_logging(log_level)
    if with_scheduler:
        os.environ["JOBS_RUN_SCHEDULER"] = "true"
    settings = _settings()
    try:
        settings.require_database_url()
        fastapi_app = _build_app(settings)
    except JobsServerError as exc:
        _fail(exc.message)
    _run_uvicorn(
        fastapi_app, host or settings.host, port if port is not None else settings.port, log_level
    )


queues_app = typer.Typer(help="SQS queues of the configured use cases.", no_args_is_help=True)
app.add_typer(queues_app, name="queues")


@queues_app.command("create")
def queues_create() -> None:
    """Create each use case's queue and its dead-letter queue (idempotent)."""
    _configure_logging("info")
    settings = _settings()
    try:
        urls = asyncio.run(_create_queues(settings))
    except JobsServerError as exc:
        _fail(exc.message)
    for name, url in urls.items():
        typer.echo(f"{name}: {url}")


async def _create_queues(settings: ServerSettings) -> dict[str, str]:
    from jobs_server.publisher.base import QueueSpec
    from jobs_server.publisher.sqs import SqsPublisher

    config = settings.jobs_config()
    if not config.use_cases:
        raise ConfigError("no use cases configured: set JOBS_CONFIG_FILE or JOBS_USE_CASES")
    publisher = await SqsPublisher.connect(
        region=settings.aws_region, endpoint_url=settings.sqs_endpoint_url
    )
    try:
        specs = [
            QueueSpec(uc.queue, visibility_timeout_seconds=int(uc.lease_duration_seconds))
            for uc in config.use_cases.values()
        ]
        return await publisher.ensure_queues(specs)
    finally:
        await publisher.close()


@app.command()
def scheduler(log_level: str = "info") -> None:
    """Run the deadline scheduler (one leader among all running copies; the rest stand by)."""
    _configure_logging(log_level)
    settings = _settings()
    try:
        settings.require_database_url()
        asyncio.run(_run_scheduler(settings))
    except JobsServerError as exc:
        _fail(exc.message)


async def _run_scheduler(settings: ServerSettings) -> None:
    import signal

    from jobs_server.app import scheduler_config
    from jobs_server.publisher.sqs import SqsPublisher
    from jobs_server.scheduler import Scheduler
    from jobs_server.store.postgres import PostgresJobStore

    config = settings.jobs_config()
    if not config.use_cases:
        raise ConfigError("no use cases configured: set JOBS_CONFIG_FILE or JOBS_USE_CASES")
    store = await PostgresJobStore.connect(settings.require_database_url(), min_size=1)
    publisher = await SqsPublisher.connect(
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        in_flight=settings.publish_in_flight,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sched = Scheduler(store, publisher, dict(config.use_cases), config=scheduler_config(settings))
    typer.echo(f"scheduler {sched.holder} running", err=True)
    try:
        await sched.run_forever(stop)
    finally:
        await publisher.close()
        await store.close()


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="embedded PostgreSQL data")] = Path(".jobs-dev"),
    port: int = 8000,
) -> None:
    """Everything on one machine: embedded PostgreSQL (unless JOBS_DATABASE_URL is set),
    migrations, the API with a printed dev token. Never use it in production."""
    _configure_logging("info")
    env_url = os.environ.get("JOBS_DATABASE_URL")
    pg = None
    if not env_url:
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        pg = pgserver.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
        env_url = pg.get_uri()
    token = os.environ.get("JOBS_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(12)
    defaults = {
        "JOBS_DATABASE_URL": env_url,
        "JOBS_ADMIN_TOKEN": "dev-admin-" + token,
        "JOBS_WORKER_TOKEN": "dev-worker-" + token,
        "JOBS_CONFIG_FILE": str(Path(__file__).with_name("dev_config.toml")),
        "JOBS_TENANTS": json.dumps({"dev": {"max_active_jobs": 100_000, "tokens": [token]}}),
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    settings = _settings()
    from jobs_server.store.migrations import migrate as run_migrations

    try:
        asyncio.run(run_migrations(settings.require_database_url()))
        fastapi_app = _build_app(settings)
    except JobsServerError as exc:
        _fail(exc.message)
    base = f"http://127.0.0.1:{port}"
    typer.echo(
        "\n".join(
            [
                "",
                "jobs-server dev is up:",
                f"  API          {base}/v1   (docs: {base}/docs)",
                f"  tenant token {token}   (tenant 'dev')",
                f"  admin token  {os.environ['JOBS_ADMIN_TOKEN']}",
                f"  database     {settings.database_url}",
                "",
                f"  curl -s -X POST {base}/v1/jobs -H 'Authorization: Bearer {token}' \\",
                "       -H 'Content-Type: application/json' \\",
                "       -d '" + _EXAMPLE_JOB + "'",
                "",
            ]
        )
    )
    try:
        _run_uvicorn(fastapi_app, "127.0.0.1", port, "info")
    finally:
        if pg is not None:
            pg.cleanup()


_EXAMPLE_JOB = json.dumps(
    {
        "use_case": "notifications",
        "job_type": "notifications.send_email",
        "payload": {"to": "a@example.com", "subject": "hi"},
    }
)


def _build_app(settings: ServerSettings):  # type: ignore[no-untyped-def]
    from jobs_server.app import create_app

    return create_app(settings)


def _run_uvicorn(fastapi_app: object, host: str, port: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(fastapi_app, host=host, port=port, log_level=log_level, access_log=False)  # type: ignore[arg-type]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
