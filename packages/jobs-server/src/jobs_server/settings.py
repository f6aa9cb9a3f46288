"""ServerSettings: the one place jobs-server reads its environment (JOBS_*)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from jobs_schema import JobsConfig, TenantConfig, UseCaseConfig
from jobs_schema.limits import DEFAULT_MAX_PAYLOAD_BYTES
from jobs_schema.webhooks import parse_networks, with_webhooks
from jobs_server.errors import ConfigError
from jobs_server.logs import LogFormat

__all__ = ["ServerSettings", "load_settings"]


class ServerSettings(BaseSettings):
    """Built once in the CLI and passed down. Use cases and tenants come from JOBS_CONFIG_FILE
    (TOML) and/or JOBS_USE_CASES / JOBS_TENANTS (JSON); the environment wins per name."""

    model_config = SettingsConfigDict(env_prefix="JOBS_", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, description="postgresql://user@host/db")
    config_file: Path | None = None
    use_cases: dict[str, UseCaseConfig] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)

    admin_token: SecretStr | None = None
    readonly_admin_token: SecretStr | None = None
    worker_token: SecretStr | None = None
    default_tenant_quota: int | None = Field(default=100_000, ge=0)

    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1024)
    max_batch_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    sqs_endpoint_url: str | None = Field(default=None, description="default: AWS's endpoint")
    aws_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        validation_alias="AWS_ACCESS_KEY_ID",
        description="default: botocore's credential chain",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    run_scheduler: bool = Field(default=False, description="run the scheduler inside serve")
    enqueue_wakeups: bool = Field(
        default=True, description="NOTIFY the scheduler after enqueues (coalesced)"
    )
    scheduler_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    leader_ttl_seconds: float = Field(default=10.0, gt=0, le=300)
    claim_batch: int = Field(default=500, ge=1, le=10_000)
    reap_every_seconds: float = Field(
        default=0.5, gt=0, le=300, description="how often the leader reaps expired leases"
    )
    expire_every_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="how often the leader ends jobs past their deadline plus grace (claims "
        "pass over them meanwhile)",
    )
    prune_every_seconds: float = Field(
        default=60.0, gt=0, le=86_400, description="how often the leader prunes past retention"
    )
    pause_history_retention_seconds: float = Field(
        default=90 * 86_400,
        ge=3600,
        le=3650 * 86_400,
        description="how long pause history is kept (an hour to 10 years; default 90 days)",
    )
    periodic_every_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often the leader enqueues schedules' due ticks"
    )
    stats_every_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="how often the leader refreshes dashboard stats"
    )
    publish_in_flight: int = Field(default=8, ge=1, le=64)

    dashboard_session_ttl_seconds: float = Field(
        default=12 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="how long a dashboard login lasts (60 s to 30 days)",
    )

    dev_token: SecretStr | None = Field(
        default=None,
        description="`jobs-server dev`'s tenant token; default: made once, kept in the data dir",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    db_pool_min: int = Field(default=0, ge=0)
    db_pool_max: int = Field(default=10, ge=1)

    log_format: LogFormat = Field(
        default=LogFormat.JSON, description="json: one object a line; text: readable (dev)"
    )
    metrics_enabled: bool = Field(default=True, description="count into GET /metrics")
    metrics_token: SecretStr | None = Field(
        default=None, description="when set, GET /metrics wants it as a bearer token"
    )
    metrics_tenant_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="tenants given a `tenant` label (comma-separated); the rest are 'other'",
    )
    metrics_refresh_seconds: float = Field(
        default=15.0, gt=0, le=3600, description="how often the leader counts queue depth"
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="`jobs-server scheduler` serves /metrics here"
    )
    metrics_host: str = Field(default="0.0.0.0", description="where JOBS_METRICS_PORT listens")
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="prometheus-client's multiprocess mode (uvicorn --workers)",
    )
    feasibility: bool = Field(
        default=True,
        description="on: enqueue answers carry expected_start_at and at_risk, kept by the "
        "feasibility triggers; off: neither (set it alike on every process)",
    )
    feasibility_default_duration_seconds: float = Field(
        default=1.0,
        gt=0,
        le=86_400,
        description="the job duration the estimate assumes before one is observed (0-86400)",
    )
    feasibility_scale_out_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="jobs_worker_slots_needed counts slots as arriving this late (an "
        "autoscaler's scale-out delay, 0-3600)",
    )
    feasibility_risk_margin: float = Field(
        default=0.25,
        ge=0,
        le=10,
        description="an enqueue answer is at_risk when its expected start plus this many times "
        "its expected wait falls after the deadline (0-10; 0: the expected start alone)",
    )
    feasibility_fold_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often the leader folds the summary (0-60)"
    )
    webhooks: bool = Field(
        default=False,
        description="webhooks on: the built-in use case jobs.webhooks (its queue "
        "JOBS_WEBHOOKS_QUEUE), the API under /v1/webhooks and the leader's fan-out; a worker "
        "run with --webhooks sends the deliveries",
    )
    webhooks_queue: str = Field(
        default="jobs-webhooks", min_length=1, description="the built-in use case's SQS queue"
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="let webhooks target private, loopback and link-local addresses (off: "
        "refused against server-side request forgery)",
    )
    webhooks_allowed_networks: str = Field(
        default="",
        description="comma-separated CIDRs webhooks may target although private, e.g. 10.1.0.0/16",
    )
    webhooks_fan_out_every_seconds: float = Field(
        default=0.2,
        gt=0,
        le=60,
        description="how often the leader makes outbox events into delivery jobs (0-60)",
    )
    events_notify: bool = Field(
        default=True,
        description="NOTIFY job changes to the event streams (false: no process streams events)",
    )
    events_max_streams: int = Field(
        default=10_000, ge=1, le=1_000_000, description="open event streams per API process"
    )
    events_max_streams_per_tenant: int = Field(
        default=1_000, ge=1, le=1_000_000, description="open event streams per tenant and process"
    )
    events_queue_size: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="events a stream may fall behind before it is ended with `lagged`",
    )
    events_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=300, description="a comment line on idle streams this often"
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="on shutdown, how long open requests may take before they are cut",
    )
    otel_enabled: bool = Field(default=False, description="OpenTelemetry spans (the otel extra)")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )

    @field_validator("metrics_tenant_labels", mode="before")
    @classmethod
    def _split_tenants(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("webhooks_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def tracing_enabled(self) -> bool:
        return self.otel_enabled or bool(self.otel_exporter_otlp_endpoint)

    def jobs_config(self) -> JobsConfig:
        """The file's use cases and tenants, overlaid with the environment's, and the file's
        schedules."""
        base = _read_config_file(self.config_file) if self.config_file else JobsConfig()
        try:
            config = JobsConfig(
                use_cases={**base.use_cases, **self.use_cases},
                tenants={**base.tenants, **self.tenants},
                schedules=base.schedules,
            )
        except ValidationError as exc:
            raise ConfigError(f"JOBS_USE_CASES / JOBS_TENANTS: {exc}") from exc
        if self.webhooks and config.use_cases:
            config = with_webhooks(config, queue=self.webhooks_queue)
        return config

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "JOBS_DATABASE_URL is not set; set it to a PostgreSQL URL such as "
                "postgresql://jobs@db.internal:5432/jobs"
            )
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "JOBS_DATABASE_URL must start with postgresql:// "
                f"(got {self.database_url.split(':', 1)[0]!r}://...)"
            )
        return self.database_url


def _read_config_file(path: Path) -> JobsConfig:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"JOBS_CONFIG_FILE: {path} does not exist") from exc
    try:
        return JobsConfig.from_toml(text, source=str(path))
    except ValueError as exc:
        raise ConfigError(f"JOBS_CONFIG_FILE: {exc}") from exc


def load_settings() -> ServerSettings:
    """Read the environment; a malformed variable raises ConfigError naming it."""
    try:
        return ServerSettings()
    except SettingsError as exc:  # a variable that should hold JSON does not
        field = re.search(r'field "(\w+)"', str(exc))
        name = "JOBS_" + field.group(1).upper() if field else "a JOBS_ variable"
        raise ConfigError(f"{name} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        names = ", ".join(
            "JOBS_" + str(e["loc"][0]).upper() + f" ({e['msg']})" for e in exc.errors()[:5]
        )
        raise ConfigError(f"bad settings: {names}") from exc
