"""`jobs-server`: migrate, serve, dev. Settings are read here, once, and passed down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import SecretStr, ValidationError

from jobs_schema import JobsConfig
from jobs_server.errors import ConfigError, JobsServerError
from jobs_server.logs import LogFormat, configure_logging, logging_config
from jobs_server.metrics import ServerMetrics
from jobs_server.settings import ServerSettings, load_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

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


LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option("--log-format", help="json or text; default: JOBS_LOG_FORMAT (json)"),
]


def _configure_logging(
    level: str, fmt: LogFormat = LogFormat.TEXT, *, trace_ids: bool = False
) -> None:
    configure_logging(fmt, level, trace_ids=trace_ids)


def _tracer_provider(settings: ServerSettings) -> TracerProvider | None:
    """The OpenTelemetry SDK's provider when tracing is on (JOBS_OTEL_ENABLED or
    OTEL_EXPORTER_OTLP_ENDPOINT), made the global one so libraries' spans join ours."""
    if not settings.tracing_enabled:
        return None
    from jobs_server.tracing import sdk_tracer_provider

    provider = sdk_tracer_provider("jobs-server")
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    return provider


def _observed_settings(log_level: str, log_format: LogFormat | None) -> ServerSettings:
    """Settings, then logging in their format, then tracing: a bad setting fails first."""
    settings = _settings()
    _configure_logging(
        log_level, log_format or settings.log_format, trace_ids=settings.tracing_enabled
    )
    return settings


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
    log_format: LogFormatOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes; metrics then need PROMETHEUS_MULTIPROC_DIR")
    ] = 1,
) -> None:
    """Serve the HTTP API. Checks every setting before binding the port."""
    settings = _observed_settings(log_level, log_format)
    if with_scheduler:
        settings = settings.model_copy(update={"run_scheduler": True})
    provider = None
    try:
        settings.require_database_url()
        if workers > 1:
            _check_workers(settings)
        provider = _tracer_provider(settings) if workers == 1 else None
        fastapi_app = _build_app(settings, provider)
    except JobsServerError as exc:
        _fail(exc.message)
    log_config = logging_config(
        log_format or settings.log_format, log_level, trace_ids=settings.tracing_enabled
    )
    where = (host or settings.host, port if port is not None else settings.port)
    try:
        if workers == 1:
            _run_uvicorn(
                fastapi_app, *where, log_level, log_config, grace=settings.shutdown_grace_seconds
            )
        else:  # each process builds its app from the environment (app_from_env)
            _run_uvicorn(
                f"{__name__}:app_from_env",
                *where,
                log_level,
                log_config,
                workers,
                grace=settings.shutdown_grace_seconds,
            )
    finally:
        if provider is not None:
            provider.shutdown()


def _check_workers(settings: ServerSettings) -> None:
    if settings.run_scheduler:
        raise ConfigError(
            "--workers runs several API processes: run the scheduler as its own "
            "`jobs-server scheduler` service instead of --scheduler / JOBS_RUN_SCHEDULER"
        )
    directory = settings.prometheus_multiproc_dir
    if settings.metrics_enabled and directory is None:
        raise ConfigError(
            "--workers with metrics needs PROMETHEUS_MULTIPROC_DIR, a directory the API "
            "processes share (or JOBS_METRICS_ENABLED=false)"
        )
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # counts of an earlier run
            stale.unlink()


def app_from_env():  # type: ignore[no-untyped-def]
    """The app of one `serve --workers` process, built from the environment it inherited."""
    settings = load_settings()
    return _build_app(settings, _tracer_provider(settings))


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
    from jobs_server.wiring import connect_publisher

    config = settings.jobs_config()
    if not config.use_cases:
        raise ConfigError("no use cases configured: set JOBS_CONFIG_FILE or JOBS_USE_CASES")
    publisher = await connect_publisher(settings)
    try:
        specs = [
            QueueSpec(uc.queue, visibility_timeout_seconds=uc.queue_visibility_seconds)
            for uc in config.use_cases.values()
        ]
        return await publisher.ensure_queues(specs)
    finally:
        await publisher.close()


@app.command()
def openapi() -> None:
    """Print the OpenAPI document (docs/openapi.json: `jobs-server openapi > docs/openapi.json`)."""
    from jobs_server.app import openapi_schema

    typer.echo(json.dumps(openapi_schema(), indent=2, sort_keys=False))


@app.command()
def check() -> None:
    """Check settings, database, migrations and queues; print a report, exit 1 on a problem."""
    _configure_logging("warning")
    report: list[tuple[bool, str, str]] = []
    try:
        settings = load_settings()
        config = settings.jobs_config()
    except ConfigError as exc:
        report.append((False, "settings", exc.message))
    else:
        report += _check_settings(settings, config)
        if settings.database_url:
            report += asyncio.run(_check_database(settings.require_database_url()))
        if config.use_cases:
            report += asyncio.run(_check_queues(settings, config))
    for ok, what, detail in report:
        typer.echo(f"{'ok  ' if ok else 'FAIL'}  {what:<12} {detail}")
    if not all(ok for ok, _, _ in report):
        raise typer.Exit(code=1)


def _check_settings(settings: ServerSettings, config: JobsConfig) -> list[tuple[bool, str, str]]:
    out = [(True, "settings", "environment and config file parse")]
    if not settings.database_url:
        out.append((False, "settings", "JOBS_DATABASE_URL is not set"))
    else:
        try:
            settings.require_database_url()
        except ConfigError as exc:
            out.append((False, "settings", exc.message))
    names = ", ".join(config.use_cases) or "none: set JOBS_CONFIG_FILE or JOBS_USE_CASES"
    out.append((bool(config.use_cases), "use cases", names))
    if not settings.worker_token:
        out.append((False, "tokens", "JOBS_WORKER_TOKEN is not set: workers cannot report"))
    if not any(t.tokens for t in config.tenants.values()):
        out.append((False, "tokens", "no tenant has a token (JOBS_TENANTS): nobody can enqueue"))
    return out


async def _check_database(url: str) -> list[tuple[bool, str, str]]:
    from jobs_server.store.postgres import PostgresJobStore

    try:
        store = await PostgresJobStore.connect(url, min_size=0, max_size=1)
    except JobsServerError as exc:
        return [(False, "database", exc.message)]
    try:
        pending = await store.pending_migrations()
    except JobsServerError as exc:
        return [(False, "database", exc.message)]
    finally:
        await store.close()
    if pending:
        versions = ", ".join(f"{v:04d}" for v in pending)
        return [
            (True, "database", "reachable"),
            (False, "migrations", f"pending: {versions}; run `jobs-server migrate`"),
        ]
    return [(True, "database", "reachable"), (True, "migrations", "current")]


async def _check_queues(
    settings: ServerSettings, config: JobsConfig
) -> list[tuple[bool, str, str]]:
    from jobs_server.wiring import connect_publisher

    publisher = await connect_publisher(settings)
    out = []
    try:
        for name, uc in config.use_cases.items():
            try:
                url = await publisher.queue_url(uc.queue)
                out.append((True, "queue", f"{name}: {url}"))
            except JobsServerError as exc:
                out.append(
                    (False, "queue", f"{name}: {exc.message}; run `jobs-server queues create`")
                )
    finally:
        await publisher.close()
    return out


@app.command()
def scheduler(
    log_level: str = "info",
    log_format: LogFormatOption = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve GET /metrics here; default: JOBS_METRICS_PORT")
    ] = None,
) -> None:
    """Run the deadline scheduler (one leader among all running copies; the rest stand by)."""
    settings = _observed_settings(log_level, log_format)
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    provider = None
    try:
        settings.require_database_url()
        provider = _tracer_provider(settings)
        asyncio.run(_run_scheduler(settings, provider))
    except JobsServerError as exc:
        _fail(exc.message)
    finally:
        if provider is not None:
            provider.shutdown()


async def _run_scheduler(settings: ServerSettings, provider: TracerProvider | None) -> None:
    from jobs_server.app import server_metrics
    from jobs_server.scheduler import Scheduler
    from jobs_server.tracing import Tracing
    from jobs_server.wiring import run_scheduler

    metrics = server_metrics(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: asyncio.Future[Scheduler] = loop.create_future()
    started.add_done_callback(
        lambda f: typer.echo(f"scheduler {f.result().holder} running", err=True)
    )
    started.add_done_callback(lambda _: _tune_gc(young=None))  # built: its clients are loaded
    with _metrics_port(settings, metrics):
        await run_scheduler(
            settings, stop, metrics=metrics, tracing=Tracing(provider), started=started
        )


@contextlib.contextmanager
def _metrics_port(settings: ServerSettings, metrics: ServerMetrics | None) -> Iterator[None]:
    """`jobs-server scheduler` has no API: its /metrics gets a port of its own."""
    if metrics is None or settings.metrics_port is None:
        yield
        return
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
        )
    except OSError as exc:
        port = settings.metrics_port
        raise ConfigError(f"JOBS_METRICS_PORT: cannot listen on {port}: {exc}") from exc
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)


@app.command()
def dev(
    data_dir: Annotated[
        Path, typer.Option(help="embedded PostgreSQL's data and the dev token")
    ] = Path(".jobs-dev"),
    port: Annotated[int, typer.Option(min=0, max=65535, help="the API's port")] = 8000,
    worker: Annotated[
        str, typer.Option(help="handlers for the dev worker, MODULE:REGISTRY ('' for none)")
    ] = "examples.handlers:registry",
) -> None:
    """Everything on one machine: embedded PostgreSQL (unless JOBS_DATABASE_URL is set), an SQS
    endpoint on loopback (moto, unless JOBS_SQS_ENDPOINT_URL is set), migrations, queues, the
    API, the scheduler and a worker. Ctrl-C or SIGTERM stops all of it. Never use it in
    production."""
    from jobs_server import dev as embedded

    _configure_logging("info")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.ExitStack() as stack:
        try:
            data = stack.enter_context(embedded.locked_data_dir(data_dir))
            settings, token = _dev_settings(stack, data)
            asyncio.run(_dev_prepare(settings))
            fastapi_app = _build_app(settings)
            if worker:
                use_cases = list(settings.jobs_config().use_cases)
                env = _dev_worker_env(settings, server_url=f"http://127.0.0.1:{port}")
                stack.enter_context(embedded.worker_process(worker, use_cases=use_cases, env=env))
            typer.echo(_dev_banner(settings, token, port, data))
            _run_uvicorn(
                fastapi_app,
                "127.0.0.1",
                port,
                "info",
                logging_config(settings.log_format, "info"),
                grace=settings.shutdown_grace_seconds,
            )
        except JobsServerError as exc:
            _fail(exc.message)
        finally:
            # a second Ctrl-C must not interrupt the stopping of what was started
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds `dev` like Ctrl-C does, so what it started is stopped. (uvicorn handles
    the signal first, then raises it again once it has shut down, which lands here.)"""
    raise SystemExit(128 + signum)


def _dev_settings(stack: contextlib.ExitStack, data_dir: Path) -> tuple[ServerSettings, str]:
    """The environment's settings, with a default for every one `dev` needs that it does not
    set (embedded services started for the database and SQS); and the dev tenant's token."""
    from jobs_server import dev as embedded

    given = _settings()
    override = given.dev_token.get_secret_value() if given.dev_token else None
    token = embedded.dev_token(data_dir, override=override)
    defaults: dict[str, Any] = {
        "admin_token": "dev-admin-" + token,
        "worker_token": "dev-worker-" + token,
        "config_file": Path(__file__).with_name("dev_config.toml"),
        "tenants": {"dev": {"max_active_jobs": 100_000, "tokens": [token]}},
        "run_scheduler": True,
        "scheduler_tick_seconds": 0.5,
        # webhooks on, to receivers on this machine too (dev only: production refuses them)
        "webhooks": True,
        "webhooks_allow_private": True,
        "log_format": LogFormat.TEXT,
        "AWS_ACCESS_KEY_ID": "dev",  # moto takes any
        "AWS_SECRET_ACCESS_KEY": "dev",
    }
    aliases = {
        "AWS_ACCESS_KEY_ID": "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    }
    chosen = {k: v for k, v in defaults.items() if aliases.get(k, k) not in given.model_fields_set}
    if not given.database_url:
        chosen["database_url"] = embedded.embedded_postgres(stack, data_dir / "pg")
    if not given.sqs_endpoint_url:
        chosen["sqs_endpoint_url"] = stack.enter_context(embedded.moto_server())
    try:
        return ServerSettings(**chosen), token
    except ValidationError as exc:
        raise ConfigError(f"bad settings: {exc}") from exc


def _dev_worker_env(settings: ServerSettings, *, server_url: str) -> dict[str, str]:
    """What the dev worker is told beyond its inherited environment: the server, its SQS and
    the settings `dev` chose (the worker reads them from JOBS_* as in production)."""
    env = {
        "JOBS_SERVER_URL": server_url,
        "JOBS_LOG_FORMAT": settings.log_format.value,
        "JOBS_TENANTS": json.dumps(
            {
                name: {
                    "max_active_jobs": t.max_active_jobs,
                    "tokens": [tok.get_secret_value() for tok in t.tokens],
                }
                for name, t in settings.tenants.items()
            }
        ),
    }
    secrets = {
        "JOBS_WORKER_TOKEN": settings.worker_token,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
    }
    env |= {k: v.get_secret_value() for k, v in secrets.items() if v is not None}
    if settings.webhooks:
        env |= {
            "JOBS_WEBHOOKS": "true",
            "JOBS_WEBHOOKS_QUEUE": settings.webhooks_queue,
            "JOBS_WEBHOOKS_ALLOW_PRIVATE": str(settings.webhooks_allow_private).lower(),
            "JOBS_WEBHOOKS_ALLOWED_NETWORKS": settings.webhooks_allowed_networks,
        }
    if settings.config_file is not None:
        env["JOBS_CONFIG_FILE"] = str(settings.config_file)
    if settings.sqs_endpoint_url is not None:
        env["JOBS_SQS_ENDPOINT_URL"] = settings.sqs_endpoint_url
    return env


async def _dev_prepare(settings: ServerSettings) -> None:
    from jobs_server.store.migrations import migrate as run_migrations

    await run_migrations(settings.require_database_url())
    await _create_queues(settings)


def _dev_banner(settings: ServerSettings, token: str, port: int, data_dir: Path) -> str:
    base = f"http://127.0.0.1:{port}"
    kept = "JOBS_DEV_TOKEN" if settings.dev_token else f"kept in {data_dir / 'token'}"
    return "\n".join(
        [
            "",
            "jobs-server dev is up:",
            f"  API          {base}/v1   (docs: {base}/docs)",
            f"  dashboard    {base}/ui   (log in with a token below)",
            f"  tenant token {token}   (tenant 'dev'; {kept})",
            f"  admin token  {_reveal(settings.admin_token)}",
            f"  database     {settings.database_url}",
            f"  SQS          {settings.sqs_endpoint_url}",
            "",
            "  enqueue a job, then read it back until it has succeeded:",
            f"  curl -s -X POST {base}/v1/jobs -H 'Authorization: Bearer {token}' \\",
            "       -H 'Content-Type: application/json' \\",
            "       -d '" + _EXAMPLE_JOB + "'",
            f"  curl -s {base}/v1/jobs/<id> -H 'Authorization: Bearer {token}'",
            "",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else "(not set)"


_EXAMPLE_JOB = json.dumps(
    {
        "use_case": "notifications",
        "job_type": "notifications.send_email",
        "payload": {"to": "a@example.com", "subject": "hi"},
    }
)


def _build_app(settings: ServerSettings, provider: TracerProvider | None = None):  # type: ignore[no-untyped-def]
    from jobs_server.app import create_app

    return create_app(settings, tracer_provider=provider)


def _tune_gc(*, young: int | None = 20_000) -> None:
    """Move what start-up created out of the collector's sight, and with `young` collect young
    objects less often: full collections walking ~80,000 start-up objects were a fifth of the
    server's CPU under batch enqueues (bench/enqueue.py). In the scheduler, whose SQS client
    loads botocore's service model, each stopped the loop for 40-75 ms (bench/e2e.py); there
    young objects keep the default threshold, whose collections are short."""
    import gc

    gc.collect()
    gc.freeze()
    if young is not None:
        gc.set_threshold(young, 20, 20)


def _run_uvicorn(
    fastapi_app: object,
    host: str,
    port: int,
    log_level: str,
    log_config: dict[str, object],
    workers: int = 1,
    *,
    grace: float = 5.0,
) -> None:
    """Serve `fastapi_app` (with several workers, an import string of a factory). One process
    ends its event streams as it starts to stop (jobs_server.serving); with several, open
    streams are cut after `grace` seconds like any request still open."""
    import uvicorn

    from jobs_server.serving import JobsUvicornServer, jobs_server_of

    _tune_gc()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "log_config": log_config,
        "access_log": False,
        "timeout_graceful_shutdown": math.ceil(grace),
    }
    if workers > 1:
        uvicorn.run(fastapi_app, workers=workers, factory=True, **options)  # type: ignore[arg-type]
        return
    server = JobsUvicornServer(
        uvicorn.Config(fastapi_app, **options),  # type: ignore[arg-type]
        jobs=jobs_server_of(fastapi_app),
    )
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
