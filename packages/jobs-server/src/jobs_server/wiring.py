"""The one builder: from settings (and anything a caller injects) the store, the publisher, the
scheduler's services and the Scheduler. `jobs-server serve --scheduler` (JobsServer),
`jobs-server scheduler` and `jobs-server dev` all build through here, and every service they
make reads the same Clock object."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jobs_schema import JobsConfig, UseCaseConfig
from jobs_schema.webhooks import parse_networks
from jobs_server.clock import Clock, DatabaseClock
from jobs_server.errors import ConfigError
from jobs_server.events import EventSender, JobsChanged
from jobs_server.feasibility import Feasibility, FeasibilityFolder
from jobs_server.metrics import QueueDepthRefresher, RateKeysRefresher, ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import Publisher
from jobs_server.scheduler import (
    Dispatcher,
    Elector,
    Every,
    Expirer,
    PeriodicJobs,
    Pruner,
    Reaper,
    Scheduler,
    SchedulerConfig,
)
from jobs_server.schedules import config_schedules
from jobs_server.service import EnqueueListener, JobIds, JobService
from jobs_server.settings import ServerSettings
from jobs_server.stats import DispatchRollup, SchedulerStats, StatsRefresher
from jobs_server.store.base import JobStore
from jobs_server.tracing import Tracing
from jobs_server.webhooks import TargetCheck, WebhookFanOut, fan_out_rules

if TYPE_CHECKING:
    from jobs_server.publisher.sqs import SqsPublisher
    from jobs_server.store.postgres import PostgresJobStore

__all__ = [
    "aws_credentials",
    "build_job_service",
    "build_scheduler",
    "connect_publisher",
    "connect_store",
    "run_scheduler",
    "scheduler_config",
    "target_check",
    "webhook_services",
]


def scheduler_config(settings: ServerSettings) -> SchedulerConfig:
    return SchedulerConfig(
        tick_seconds=settings.scheduler_tick_seconds,
        leader_ttl_seconds=settings.leader_ttl_seconds,
        claim_batch=settings.claim_batch,
        reap_every_seconds=settings.reap_every_seconds,
        expire_every_seconds=settings.expire_every_seconds,
        prune_every_seconds=settings.prune_every_seconds,
        pause_history_retention_seconds=settings.pause_history_retention_seconds,
        stats_every_seconds=settings.stats_every_seconds,
        periodic_every_seconds=settings.periodic_every_seconds,
        metrics_refresh_seconds=settings.metrics_refresh_seconds,
        feasibility_fold_seconds=settings.feasibility_fold_seconds
        if settings.feasibility
        else None,
        feasibility_default_duration_seconds=settings.feasibility_default_duration_seconds,
        feasibility_scale_out_seconds=settings.feasibility_scale_out_seconds,
    )


async def connect_store(
    settings: ServerSettings, *, clock: Clock, min_size: int | None = None
) -> PostgresJobStore:
    """The PostgreSQL store, reading (and keeping in step) `clock`."""
    from jobs_server.store.postgres import PostgresJobStore

    return await PostgresJobStore.connect(
        settings.require_database_url(),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        clock=clock,
        feasibility=settings.feasibility,
        events=settings.events_notify,
    )


async def connect_publisher(
    settings: ServerSettings, *, metrics: ServerMetrics | None = None
) -> SqsPublisher:
    """The SQS publisher: the server's only call of SqsPublisher.connect."""
    from jobs_server.publisher.sqs import SqsPublisher

    return await SqsPublisher.connect(
        region=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        in_flight=settings.publish_in_flight,
        on_error=metrics.sqs_error if metrics else None,
        credentials=aws_credentials(settings),
    )


def aws_credentials(settings: ServerSettings) -> tuple[str, str] | None:
    """Both of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or None: botocore's own chain."""
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if key_id is None or secret is None:
        return None
    return key_id.get_secret_value(), secret.get_secret_value()


def build_job_service(
    settings: ServerSettings,
    store: JobStore,
    *,
    clock: Clock,
    config: JobsConfig | None = None,
    on_enqueued: EnqueueListener | None = None,
    metrics: ServerMetrics | None = None,
    tracing: Tracing | None = None,
    on_changed: JobsChanged | None = None,
) -> JobService:
    """The one JobService of a process: the API's and the scheduler's periodic jobs'. A bad
    schedule in the config file is a ConfigError here, before anything runs."""
    config = config or settings.jobs_config()
    config_schedules(config, now=clock.now())
    feasibility = (
        Feasibility(
            store,
            config,
            default_duration=settings.feasibility_default_duration_seconds,
            risk_margin=settings.feasibility_risk_margin,
        )
        if settings.feasibility
        else None
    )
    return JobService(
        store,
        config,
        default_quota=settings.default_tenant_quota,
        max_payload_bytes=settings.max_payload_bytes,
        clock=clock,
        ids=JobIds(clock),
        on_enqueued=on_enqueued,
        metrics=metrics,
        tracing=tracing,
        feasibility=feasibility,
        on_changed=on_changed,
    )


def build_scheduler(
    store: JobStore,
    publisher: Publisher,
    use_cases: Mapping[str, UseCaseConfig],
    *,
    outcomes: OutcomeService,
    clock: Clock,
    config: SchedulerConfig | None = None,
    metrics: ServerMetrics | None = None,
    tracing: Tracing | None = None,
    holder: str | None = None,
    rng: random.Random | None = None,
    jobs: JobService | None = None,
    extra: Sequence[Every] = (),
    on_changed: JobsChanged | None = None,
) -> Scheduler:
    """The elector, the dispatcher and the maintenance services (the expirer first), each on
    its period, and
    with `jobs` the periodic jobs of the store's schedules (and of `jobs.config`'s); `extra`
    entries run after them."""
    cfg = config or SchedulerConfig()
    names = list(use_cases)
    stats, rollup = SchedulerStats(), DispatchRollup()
    depth = QueueDepthRefresher(metrics, store, names) if metrics is not None else None
    elector = Elector(
        store,
        name=cfg.name,
        ttl_seconds=cfg.leader_ttl_seconds,
        holder=holder,
        on_change=depth.leading if depth is not None else None,
    )
    dispatcher = Dispatcher(
        store,
        publisher,
        use_cases,
        elector=elector,
        clock=clock,
        claim_batch=cfg.claim_batch,
        stats=stats,
        rollup=rollup,
        metrics=metrics,
        tracing=tracing,
        on_changed=on_changed,
    )
    expirer = Expirer(
        store, use_cases, batch=cfg.expire_batch, metrics=metrics, on_changed=on_changed
    )
    services = [
        Every(expirer, cfg.expire_every_seconds),
        *_maintenance(store, use_cases, cfg, outcomes, elector, stats, rollup),
    ]
    if jobs is not None:
        periodic = PeriodicJobs(store, jobs, config=jobs.config)
        # in the background: writing a pass's ticks (a job each) never delays dispatch
        services.append(Every(periodic, cfg.periodic_every_seconds, background=True))
    if cfg.feasibility_fold_seconds is not None:
        folder = FeasibilityFolder(
            store,
            use_cases,
            default_duration=cfg.feasibility_default_duration_seconds,
            metrics=metrics,
            lead=cfg.feasibility_scale_out_seconds,
        )
        services.append(Every(folder, cfg.feasibility_fold_seconds, background=True))
    if depth is not None:
        services.append(Every(depth, cfg.metrics_refresh_seconds, background=True))
    if metrics is not None and any(uc.rate_limit for uc in use_cases.values()):
        rates = RateKeysRefresher(
            metrics, store, use_cases, leading=lambda: elector.lease is not None
        )
        services.append(Every(rates, cfg.metrics_refresh_seconds, background=True))
    return Scheduler(
        elector,
        dispatcher,
        listener=store,
        clock=clock,
        config=cfg,
        services=[*services, *extra],
        stats=stats,
        rng=rng,
    )


def _maintenance(
    store: JobStore,
    use_cases: Mapping[str, UseCaseConfig],
    cfg: SchedulerConfig,
    outcomes: OutcomeService,
    elector: Elector,
    stats: SchedulerStats,
    rollup: DispatchRollup,
) -> list[Every]:
    """The reaper, the pruner and the stats refresher, each on its period."""
    retention = {name: uc.retention_seconds for name, uc in use_cases.items()}
    pruner = Pruner(
        store,
        retention,
        batch=cfg.prune_batch,
        idempotency_retention_seconds=cfg.idempotency_retention_seconds,
        stats=stats,
        rate_windows={
            name: uc.rate_limit.per_seconds for name, uc in use_cases.items() if uc.rate_limit
        },
        pause_history_retention_seconds=cfg.pause_history_retention_seconds,
    )
    refresher = StatsRefresher(
        store, list(use_cases), name=cfg.name, lease=elector, stats=stats, rollup=rollup
    )
    return [
        # passes run on every wake-up under load; leases expire on a scale of seconds
        Every(Reaper(outcomes, batch=cfg.reap_batch, stats=stats), cfg.reap_every_seconds),
        Every(pruner, cfg.prune_every_seconds),
        Every(refresher, cfg.stats_every_seconds, background=True),
    ]


async def run_scheduler(
    settings: ServerSettings,
    stop: asyncio.Event,
    *,
    metrics: ServerMetrics | None = None,
    tracing: Tracing | None = None,
    clock: Clock | None = None,
    store: JobStore | None = None,
    publisher: Publisher | None = None,
    started: asyncio.Future[Scheduler] | None = None,
) -> None:
    """`jobs-server scheduler`: connect what was not given, run until `stop`, close what was
    opened here. `started` gets the scheduler once it is built."""
    config = settings.jobs_config()
    if not config.use_cases:
        raise ConfigError("no use cases configured: set JOBS_CONFIG_FILE or JOBS_USE_CASES")
    own_store = store is None
    the_store = store or await connect_store(settings, clock=clock or DatabaseClock(), min_size=1)
    clock = clock or the_store.clock
    try:
        the_publisher = publisher or await connect_publisher(settings, metrics=metrics)
        try:
            sched = _standalone(settings, the_store, the_publisher, clock, metrics, tracing)
            if started is not None:
                started.set_result(sched)
            await sched.run_forever(stop)
        finally:
            if publisher is None:
                await the_publisher.close()
    finally:
        if own_store:
            await the_store.close()


def _standalone(
    settings: ServerSettings,
    store: JobStore,
    publisher: Publisher,
    clock: Clock,
    metrics: ServerMetrics | None,
    tracing: Tracing | None,
) -> Scheduler:
    """A scheduler with no API beside it: slots freed by its reaper wake it directly."""
    sched: Scheduler | None = None

    def slots_freed() -> None:
        if sched is not None:
            sched.wake()

    events = EventSender(store, enabled=settings.events_notify)
    outcomes = OutcomeService(
        store,
        clock=clock,
        on_slots_freed=slots_freed,
        metrics=metrics,
        on_changed=events.changed,
    )
    jobs = build_job_service(
        settings,
        store,
        clock=clock,
        on_enqueued=lambda _uc, _at: slots_freed(),
        metrics=metrics,
        on_changed=events.changed,
    )
    config = settings.jobs_config()
    sched = build_scheduler(
        store,
        publisher,
        config.use_cases,
        outcomes=outcomes,
        clock=clock,
        config=scheduler_config(settings),
        metrics=metrics,
        tracing=tracing,
        jobs=jobs,
        extra=webhook_services(settings, config, store, on_enqueued=lambda _uc, _at: slots_freed()),
        on_changed=events.changed,
    )
    return sched


def target_check(settings: ServerSettings) -> TargetCheck:
    """Where webhooks may point, by JOBS_WEBHOOKS_ALLOW_PRIVATE and _ALLOWED_NETWORKS."""
    return TargetCheck(
        allow_private=settings.webhooks_allow_private,
        networks=parse_networks(settings.webhooks_allowed_networks),
    )


def webhook_services(
    settings: ServerSettings,
    config: JobsConfig,
    store: JobStore,
    *,
    on_enqueued: EnqueueListener | None = None,
) -> list[Every]:
    """The leader's webhook fan-out when webhooks are on (none otherwise)."""
    rules = fan_out_rules(config)
    if rules is None:
        return []
    fan_out = WebhookFanOut(store, rules, on_enqueued=on_enqueued)
    return [Every(fan_out, settings.webhooks_fan_out_every_seconds)]
