"""`jobs-worker run MODULE:REGISTRY --use-case NAME`: settings are read here, once, and
passed down; every setting, the registry and the queues are checked before the first receive."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from jobs_schema import UseCaseConfig
from jobs_schema.config import HandlerIsolation
from jobs_schema.webhooks import WEBHOOKS_USE_CASE, IpNetworks, parse_networks
from jobs_worker.consumer.base import Consumer
from jobs_worker.consumer.sqs import SqsConsumer
from jobs_worker.context import LeaseClients
from jobs_worker.errors import ConfigError, JobsWorkerError
from jobs_worker.health import serve_health
from jobs_worker.logs import LogFormat, configure_logging
from jobs_worker.metrics import WorkerMetrics
from jobs_worker.processes import ChildSetup, ProcessPool
from jobs_worker.registry import Registry, load_registry
from jobs_worker.reporter import HttpWorkerApi
from jobs_worker.runtime import Worker, WorkerStats
from jobs_worker.settings import WorkerSettings, load_settings
from jobs_worker.tracing import WorkerTracing, sdk_tracer_provider
from jobs_worker.webhooks import ServerTargets, WebhookSender, webhook_registry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["app", "load_registry", "main"]

app = typer.Typer(help="jobs-worker: run job handlers for jobs-server.", no_args_is_help=True)
logger = logging.getLogger("jobs_worker")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="MODULE:REGISTRY, e.g. myapp.handlers:registry")],
    use_case: Annotated[
        list[str], typer.Option("--use-case", "-u", help="a use case to consume (repeatable)")
    ],
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="handlers at once; default: JOBS_CONCURRENCY")
    ] = None,
    burst: Annotated[bool, typer.Option(help="return once the queues are empty")] = False,
    grace_seconds: Annotated[
        float | None, typer.Option(min=0, help="on SIGTERM; default: JOBS_GRACE_SECONDS")
    ] = None,
    log_level: str = "info",
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="json or text; default: JOBS_LOG_FORMAT (json)"),
    ] = None,
    isolation: Annotated[
        HandlerIsolation | None,
        typer.Option(
            help="thread or process, for every use case; default: JOBS_ISOLATION, else each "
            "use case's `isolation`"
        ),
    ] = None,
    webhooks: Annotated[
        bool,
        typer.Option("--webhooks", help="also send webhook deliveries (use case jobs.webhooks)"),
    ] = False,
) -> None:
    """Consume the use cases' queues and run the registry's handlers until SIGTERM."""
    try:
        settings = load_settings()
    except JobsWorkerError as exc:
        _fail(exc.message)
    fmt = log_format or settings.log_format
    _configure_logging(log_level, fmt, trace_ids=settings.tracing_enabled)
    # a fatal signal (a segfault in a C extension) still leaves every thread's stack in the log
    faulthandler.enable(all_threads=True)
    provider = None
    try:
        registry = load_registry(target)
        overrides = {
            "concurrency": concurrency,
            "grace_seconds": grace_seconds,
            "isolation": isolation,
        }
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        if webhooks:
            settings = settings.model_copy(update={"webhooks": True})
        if settings.webhooks:
            use_case = _with_webhook_sender(settings, registry, use_case)
        use_cases = settings.select_use_cases(use_case)
        if settings.webhooks:  # the sender runs no user code: always in this process
            sender_uc = use_cases[WEBHOOKS_USE_CASE]
            use_cases[WEBHOOKS_USE_CASE] = sender_uc.model_copy(
                update={"isolation": HandlerIsolation.THREAD}
            )
        settings.require_server()
        provider = _tracer_provider(settings)
        pool = _process_pool(settings, use_cases, target=target, log=(fmt, log_level))
        asyncio.run(
            _serve(settings, registry, use_cases, burst=burst, provider=provider, processes=pool)
        )
    except JobsWorkerError as exc:
        _fail(exc.message)
    finally:
        if provider is not None:
            provider.shutdown()
    _exit_despite_stuck_threads()


def _freeze_start_up() -> None:
    """Once started (botocore's SQS model and the handlers' modules loaded), what start-up
    made leaves the collector's sight: each full collection walked it all and stopped every
    handler for 40-90 ms (bench/e2e.py). Young objects keep the default threshold: at 20,000
    (the API server's) their collections took 8-48 ms here."""
    gc.collect()
    gc.freeze()


def _with_webhook_sender(
    settings: WorkerSettings, registry: Registry, use_cases: list[str]
) -> list[str]:
    """The webhook sender added to `registry`, its use case to those consumed."""
    url, token = settings.require_server()
    sender = WebhookSender(
        ServerTargets(url, token, timeout=settings.request_timeout_seconds),
        allow_private=settings.webhooks_allow_private,
        networks=_networks(settings.webhooks_allowed_networks),
    )
    registry.include(webhook_registry(sender))
    return use_cases if WEBHOOKS_USE_CASE in use_cases else [*use_cases, WEBHOOKS_USE_CASE]


def _networks(text: str) -> IpNetworks:
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise ConfigError(f"JOBS_WEBHOOKS_ALLOWED_NETWORKS: {exc}") from exc


def _tracer_provider(settings: WorkerSettings) -> TracerProvider | None:
    """The OpenTelemetry SDK's provider when tracing is on, made the global one so that the
    handlers' own spans nest under `jobs.run`."""
    if not settings.tracing_enabled:
        return None
    provider = sdk_tracer_provider("jobs-worker")
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    return provider


@app.command()
def check(target: Annotated[str, typer.Argument(help="MODULE:REGISTRY")]) -> None:
    """Import the registry (running every registration check) and list its handlers."""
    try:
        registry = load_registry(target)
    except JobsWorkerError as exc:
        _fail(exc.message)
    for h in registry:
        kind = "async" if h.is_async else "sync"
        typer.echo(
            f"{h.name}: {h.func.__module__}.{h.func.__qualname__} "
            f"({h.payload_model.__name__}, {kind})"
        )


async def _serve(
    settings: WorkerSettings,
    registry: Registry,
    use_cases: dict[str, UseCaseConfig],
    *,
    burst: bool,
    provider: TracerProvider | None = None,
    processes: ProcessPool | None = None,
) -> WorkerStats:
    url, token = settings.require_server()
    api = HttpWorkerApi(url, token, timeout=settings.request_timeout_seconds)
    clients = LeaseClients(url)  # follow-up enqueues authenticate with the attempt's lease
    consumer = await SqsConsumer.connect(
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        max_connections=len(use_cases) + 8,
    )
    try:
        worker = _worker(
            settings,
            registry,
            use_cases,
            consumer=consumer,
            api=api,
            clients=clients,
            tracing=WorkerTracing(provider),
            processes=processes,
        )
        _on_signals(worker)
        async with _health_port(worker, settings):
            if not await _wait_until_ready(worker, api, consumer, use_cases):
                return worker.stats  # stopped while waiting
            _freeze_start_up()
            return await worker.run(burst=burst)
    finally:
        await clients.aclose()
        await api.close()
        await consumer.close()


def _worker(
    settings: WorkerSettings,
    registry: Registry,
    use_cases: dict[str, UseCaseConfig],
    *,
    consumer: Consumer,
    api: HttpWorkerApi,
    clients: LeaseClients,
    tracing: WorkerTracing,
    processes: ProcessPool | None,
) -> Worker:
    return Worker(
        registry,
        consumer=consumer,
        api=api,
        use_cases=use_cases,
        concurrency=settings.concurrency,
        grace_seconds=settings.grace_seconds,
        clients=clients,
        poll_seconds=settings.poll_seconds,
        burst_idle_seconds=settings.burst_idle_seconds,
        report_batch=settings.report_batch,
        report_linger=settings.report_linger_seconds,
        delete_linger=settings.delete_linger_seconds,
        report_retry_seconds=settings.report_retry_seconds,
        metrics=WorkerMetrics() if settings.metrics_enabled else None,
        tracing=tracing,
        processes=processes,
        block_warn_seconds=settings.block_warn_seconds,
        spare_loops=settings.spare_loops,
        cancel_poll_seconds=settings.cancel_poll_seconds,
    )


def _process_pool(
    settings: WorkerSettings,
    use_cases: dict[str, UseCaseConfig],
    *,
    target: str,
    log: tuple[str, str],
) -> ProcessPool | None:
    if all(uc.isolation is not HandlerIsolation.PROCESS for uc in use_cases.values()):
        return None
    size = settings.processes or min(settings.concurrency, os.cpu_count() or 1)
    setup = ChildSetup(
        registry=target,
        server_url=settings.server_url,
        log_format=log[0],
        log_level=log[1],
    )
    return ProcessPool(setup, size=size)


_READY_BACKOFF = (0.5, 10.0)


async def _wait_until_ready(
    worker: Worker, api: HttpWorkerApi, consumer: Consumer, use_cases: dict[str, UseCaseConfig]
) -> bool:
    """Wait, with backoff, for the server and each queue (a dependency restarting is not a
    reason to exit); a refused token still fails at once. False if stopped meanwhile."""
    checks: list[tuple[str, Callable[[], Awaitable[object]]]] = [("server", api.check)]
    checks += [(f"queue {uc.queue}", _queue_check(consumer, uc.queue)) for uc in use_cases.values()]
    for what, check in checks:
        failures = 0
        while True:
            try:
                await check()
                break
            except ConfigError:
                raise
            except JobsWorkerError as exc:
                failures += 1
                low, high = _READY_BACKOFF
                delay = min(high, low * 2 ** (failures - 1))
                worker.waiting_for(what, exc.message)
                logger.warning(
                    "waiting for a dependency before starting",
                    extra={"waiting_for": what, "error": exc.message, "retry_in": delay},
                )
                if await worker.wait_stopping(delay):
                    return False
        worker.waiting_for(what, None)
        if failures:
            logger.info("dependency available", extra={"waiting_for": what})
    return True


def _queue_check(consumer: Consumer, queue: str) -> Callable[[], Awaitable[None]]:
    return lambda: consumer.check_queue(queue)


@asynccontextmanager
async def _health_port(worker: Worker, settings: WorkerSettings) -> AsyncIterator[None]:
    if settings.health_port is None:
        yield
        return
    try:
        server = await serve_health(worker, host=settings.health_host, port=settings.health_port)
    except OSError as exc:
        port = settings.health_port
        raise ConfigError(f"JOBS_HEALTH_PORT: cannot listen on {port}: {exc}") from exc
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


def _on_signals(worker: Worker) -> None:
    """First SIGTERM/SIGINT: graceful stop; a second: release what runs and exit now."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        hurry = worker.stopping
        logger.info("signal received", extra={"signal": signum, "hurry": hurry})
        worker.stop(now=hurry)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)


def _exit_despite_stuck_threads() -> None:
    # a sync handler past its timeout cannot be interrupted; interpreter exit would wait for it
    stuck = [t for t in threading.enumerate() if t.name.startswith("jobs-handler")]
    for thread in stuck:
        thread.join(timeout=0.2)  # idle pool threads are on their way out
    stuck = [t for t in stuck if t.is_alive()]
    if stuck:
        logger.warning("exiting with sync handlers still running", extra={"count": len(stuck)})
        logging.shutdown()
        os._exit(0)


def _configure_logging(level: str, fmt: LogFormat, *, trace_ids: bool) -> None:
    configure_logging(fmt, level, trace_ids=trace_ids)
    # one line per request would drown the worker's own lines
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def main() -> None:
    app()
