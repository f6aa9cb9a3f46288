"""WorkerSettings: the one place jobs-worker reads its environment (JOBS_*). Use cases come
from JOBS_CONFIG_FILE (the TOML file the server reads) and/or JOBS_USE_CASES (JSON)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from jobs_schema import JobsConfig, TenantConfig, UseCaseConfig
from jobs_schema.config import HandlerIsolation, describe_errors
from jobs_schema.webhooks import with_webhooks
from jobs_worker.errors import ConfigError
from jobs_worker.logs import LogFormat

__all__ = ["WorkerSettings", "load_settings"]


class WorkerSettings(BaseSettings):
    """Built once in the CLI and passed down; the environment wins over the file per name."""

    model_config = SettingsConfigDict(env_prefix="JOBS_", extra="ignore", frozen=True)

    server_url: str | None = Field(
        default=None, description="the jobs server, e.g. http://jobs:8000"
    )
    worker_token: SecretStr | None = None
    sqs_endpoint_url: str | None = Field(default=None, description="default: AWS's endpoint")
    aws_region: str = "us-east-1"

    config_file: Path | None = None
    use_cases: dict[str, UseCaseConfig] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(
        default_factory=dict, description="tenant tokens, for handlers' follow-up enqueues"
    )

    concurrency: int = Field(default=10, ge=1, le=10_000, description="handlers run at once")
    grace_seconds: float = Field(
        default=30.0, ge=0, description="on SIGTERM, how long running handlers may still take"
    )
    poll_seconds: float = Field(default=20.0, ge=0, le=20, description="SQS long-poll wait")
    burst_idle_seconds: float = Field(
        default=1.0, ge=0, description="burst mode returns after its queues were empty this long"
    )
    isolation: HandlerIsolation | None = Field(
        default=None,
        description="thread or process for every use case consumed; None: each "
        "use case's own `isolation` setting",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="handler processes under process isolation; default min(concurrency, CPUs)",
    )
    cancel_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="while handlers run, ask the server this often which were cancelled "
        "(over 0, at most 60); a handler sees its cancellation about this long after it",
    )
    block_warn_seconds: float = Field(
        default=2.0,
        gt=0,
        description="an async handler that blocks its loop this long is logged, and the "
        "worker takes no new work until the loop is free (or, with spare_loops, new "
        "handlers go to a spare loop)",
    )
    spare_loops: bool = Field(
        default=False,
        description="while a handler blocks the home loop, run new async handlers on a "
        "spare loop; only for handlers whose loop-bound clients (an asyncpg pool, an httpx "
        "client) are made per running loop, never kept in a module global",
    )
    report_batch: int = Field(default=100, ge=1, le=1000)
    report_linger_seconds: float = Field(
        default=0.02,
        ge=0,
        le=5,
        description="outcome reports go at most once this many seconds, together; an "
        "outcome after a quiet period this long goes at once (0-5)",
    )
    delete_linger_seconds: float = Field(
        default=0.2,
        ge=0,
        le=5,
        description="how long a received message's delete waits for others to share its "
        "DeleteMessageBatch call (0-5): nobody waits on a delete, and a message stays invisible "
        "for a lease and a half, so the wait only saves calls",
    )
    report_retry_seconds: float = Field(
        default=60.0, ge=0, description="how long to keep offering an outcome to a server down"
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    health_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve GET /healthz and /metrics here"
    )
    health_host: str = Field(default="0.0.0.0", description="where the health port listens")

    webhooks: bool = Field(
        default=False,
        description="send webhook deliveries: consume the built-in use case jobs.webhooks "
        "(as `run --webhooks`)",
    )
    webhooks_queue: str = Field(
        default="jobs-webhooks", min_length=1, description="the built-in use case's SQS queue"
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="let deliveries go to private, loopback and link-local addresses",
    )
    webhooks_allowed_networks: str = Field(
        default="", description="comma-separated CIDRs deliveries may go to although private"
    )
    log_format: LogFormat = Field(
        default=LogFormat.JSON, description="json: one object a line; text: readable"
    )
    metrics_enabled: bool = Field(
        default=True, description="handler histograms and outcomes on the health port's /metrics"
    )
    otel_enabled: bool = Field(default=False, description="OpenTelemetry spans (the otel extra)")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )

    @property
    def tracing_enabled(self) -> bool:
        return self.otel_enabled or bool(self.otel_exporter_otlp_endpoint)

    def jobs_config(self) -> JobsConfig:
        base = _read_config_file(self.config_file) if self.config_file else JobsConfig()
        try:
            config = JobsConfig(
                use_cases={**base.use_cases, **self.use_cases},
                tenants={**base.tenants, **self.tenants},
            )
        except ValidationError as exc:
            raise ConfigError(f"JOBS_USE_CASES / JOBS_TENANTS: {describe_errors(exc)}") from exc
        return with_webhooks(config, queue=self.webhooks_queue) if self.webhooks else config

    def select_use_cases(self, names: list[str]) -> dict[str, UseCaseConfig]:
        """The named use cases' configs; an unknown name is a ConfigError listing the known."""
        known = self.jobs_config().use_cases
        if not names:
            raise ConfigError("name at least one use case to consume (--use-case NAME)")
        missing = [n for n in names if n not in known]
        if missing:
            where = "JOBS_USE_CASES / JOBS_CONFIG_FILE"
            raise ConfigError(
                f"unknown use case {', '.join(map(repr, missing))}: {where} defines "
                f"{', '.join(map(repr, sorted(known))) or 'none'}"
            )
        chosen = {n: known[n] for n in names}
        if self.isolation is not None:
            update = {"isolation": self.isolation}
            chosen = {n: uc.model_copy(update=update) for n, uc in chosen.items()}
        return chosen

    def require_server(self) -> tuple[str, str]:
        """JOBS_SERVER_URL and JOBS_WORKER_TOKEN, or a ConfigError naming the missing one."""
        if not self.server_url:
            raise ConfigError("JOBS_SERVER_URL is not set; set it to the jobs server's URL")
        if not self.server_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"JOBS_SERVER_URL must start with http:// or https:// (got {self.server_url!r})"
            )
        if self.worker_token is None or not self.worker_token.get_secret_value():
            raise ConfigError("JOBS_WORKER_TOKEN is not set; set it to the server's worker token")
        return self.server_url, self.worker_token.get_secret_value()


def _read_config_file(path: Path) -> JobsConfig:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"JOBS_CONFIG_FILE: {path} does not exist") from exc
    try:
        return JobsConfig.from_toml(text, source=str(path))
    except ValueError as exc:
        raise ConfigError(f"JOBS_CONFIG_FILE: {exc}") from exc


def load_settings() -> WorkerSettings:
    """Read the environment; a malformed variable raises ConfigError naming it."""
    try:
        return WorkerSettings()
    except ValidationError as exc:
        names = ", ".join(
            "JOBS_" + str(e["loc"][0]).upper() + f" ({e['msg']})" for e in exc.errors()[:5]
        )
        raise ConfigError(f"bad settings: {names}") from exc
    except SettingsError as exc:  # e.g. JOBS_USE_CASES is not JSON
        raise ConfigError(f"bad settings: {exc}") from exc
