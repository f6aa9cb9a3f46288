"""Use-case and tenant configuration, shared by the server (rules) and the worker (timeouts)."""

from __future__ import annotations

import math
import tomllib
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from jobs_schema.limits import MAX_EXPIRE_GRACE_SECONDS
from jobs_schema.schedules import ScheduleConfig

__all__ = [
    "BackoffKind",
    "BackoffPolicy",
    "HandlerIsolation",
    "JobsConfig",
    "MissPolicy",
    "RateLimit",
    "TenantConfig",
    "UseCaseConfig",
    "describe_errors",
]

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class BackoffKind(StrEnum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    CONSTANT = "constant"


class HandlerIsolation(StrEnum):
    """Where a worker runs a use case's handlers: `thread` in the worker's process (async
    handlers on an event loop of their own, sync ones on a thread pool), `process` in child
    processes, so that a crash or a hard block costs only its own attempt."""

    THREAD = "thread"
    PROCESS = "process"


class MissPolicy(StrEnum):
    """What becomes of a job still pending once its deadline has passed: `run_late` dispatches
    it anyway (counted as a miss: `deadline_missed`); `expire` ends it `expired`, never
    dispatched, once the deadline plus the grace (`expire_grace_seconds`) has passed. A job
    whose time is exactly the deadline plus the grace is still dispatched: it expires only
    after it, as a job dispatched exactly at its deadline is not a miss."""

    RUN_LATE = "run_late"
    EXPIRE = "expire"


class BackoffPolicy(BaseModel):
    """Delay before retry n (n = 1 after the first failure).

    exponential: base * 2**(n-1); linear: base * n; constant: base. Capped at `cap_seconds`,
    then shortened by up to `jitter` (a fraction of the delay, drawn at random) so retries of a
    burst do not align: the delay lies in [d * (1 - jitter), d], d = min(raw, cap), and never
    exceeds the cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base_seconds: float = Field(default=1.0, ge=0, le=86_400, strict=True)
    cap_seconds: float = Field(default=300.0, ge=0, le=7 * 86_400, strict=True)
    jitter: float = Field(default=0.1, ge=0, le=1, strict=True)


class RateLimit(BaseModel):
    """At most `starts` jobs with one rate key start in any `per_seconds` interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    starts: int = Field(ge=1, le=10_000, strict=True, description="starts per interval, 1-10000")
    per_seconds: float = Field(
        ge=0.001, le=86_400, strict=True, description="the interval, 0.001 s to a day"
    )


class UseCaseConfig(BaseModel):
    """One use case: a class of jobs with its own SQS queue, capacity and retry rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str = Field(min_length=1, description="SQS queue name or URL")
    capacity: int = Field(default=10, ge=1, le=100_000, description="max running jobs")
    per_tenant_running_cap: int | None = Field(
        default=None, ge=1, description="max running jobs of one tenant (fairness); None: no cap"
    )
    concurrency_limit_per_key: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        strict=True,
        description="max running jobs of one concurrency_key (1-100000); None: no limit",
    )
    rate_limit: RateLimit | None = Field(
        default=None, description="max starts per interval of one rate_key; None: no limit"
    )
    default_delay_tolerance_seconds: float = Field(default=60.0, ge=0)
    miss_policy: MissPolicy = Field(
        default=MissPolicy.RUN_LATE,
        description="a job pending past its deadline: run_late (dispatch it, a miss) or expire "
        "(end it expired once the deadline plus expire_grace_seconds has passed)",
    )
    expire_grace_seconds: float = Field(
        default=0.0,
        ge=0,
        le=MAX_EXPIRE_GRACE_SECONDS,
        description="how long past its deadline a job that expires (by miss_policy expire, "
        "the use case's or its own) may still be dispatched: 0 to 2592000 (30 days)",
    )
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff: BackoffPolicy = Field(default_factory=BackoffPolicy)
    timeout_seconds: float = Field(default=60.0, gt=0, le=12 * 3600)
    lease_seconds: float | None = Field(
        default=None, gt=0, description="lease per attempt; default timeout + 30 s"
    )
    retention_seconds: float = Field(default=7 * 86_400, ge=0)
    isolation: HandlerIsolation = Field(
        default=HandlerIsolation.THREAD, description="worker side: thread or process"
    )
    job_types: list[str] = Field(
        default_factory=list, description="allowed job types; empty: any job type"
    )
    pack_max_jobs: int = Field(
        default=10,
        ge=1,
        le=100,
        strict=True,
        description="most jobs sent in one SQS message (1-100); 1: one message per job",
    )

    @property
    def lease_duration_seconds(self) -> float:
        return self.lease_seconds if self.lease_seconds is not None else self.timeout_seconds + 30

    @property
    def queue_visibility_seconds(self) -> int:
        """The queue's visibility timeout: half a lease longer than the lease, so a message
        whose worker died comes back after the server has already taken the lease back (the
        redelivery is then a fresh attempt's, or refused as stale). SQS allows 12 h at most."""
        return min(43_200, math.ceil(1.5 * self.lease_duration_seconds))


class TenantConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_active_jobs: int | None = Field(
        default=None, ge=0, description="quota on pending + running jobs; None: the default"
    )
    tokens: list[SecretStr] = Field(default_factory=list)


class JobsConfig(BaseModel):
    """The contents of the TOML file named by JOBS_CONFIG_FILE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    use_cases: dict[Name, UseCaseConfig] = Field(default_factory=dict)
    tenants: dict[Name, TenantConfig] = Field(default_factory=dict)
    schedules: dict[Name, ScheduleConfig] = Field(
        default_factory=dict, description="periodic jobs, read-only through the API"
    )

    @model_validator(mode="after")
    def _tokens_are_unique(self) -> JobsConfig:
        seen: dict[str, str] = {}
        for tenant, cfg in self.tenants.items():
            for token in cfg.tokens:
                owner = seen.setdefault(token.get_secret_value(), tenant)
                if owner != tenant:
                    raise ValueError(f"tenants {owner!r} and {tenant!r} share a token")
        return self

    @classmethod
    def from_toml(cls, text: str, *, source: str) -> JobsConfig:
        """Parse the config file's text; ValueError names `source` and what is wrong in it."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{source} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{source}: {describe_errors(exc)}") from exc


def describe_errors(exc: ValidationError, *, limit: int = 5) -> str:
    """`use_cases.n.max_attempts: Input should be a valid integer; ...`"""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()[:limit]
    )
