"""Webhooks: tenants subscribe URLs to job events; deliveries are jobs of the built-in use case
`jobs.webhooks`, POSTed by a worker and signed with the subscription's secret.

What crosses a process boundary lives here: the subscription models of the API, the event body
a receiver gets, the delivery job's payload (no secret in it: the worker asks the server for
the subscription's url and secret at send time), the built-in use case's default config, and
the address rule against server-side request forgery, shared by the server (at creation) and
the worker (at every delivery, after resolving the host again)."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from jobs_schema.config import BackoffKind, BackoffPolicy, JobsConfig, UseCaseConfig
from jobs_schema.limits import Text

__all__ = [
    "MAX_WEBHOOKS_PER_TENANT",
    "MAX_WEBHOOK_DESCRIPTION",
    "MAX_WEBHOOK_URL_LENGTH",
    "SIGNATURE_HEADER",
    "WEBHOOKS_USE_CASE",
    "WEBHOOK_JOB_TYPE",
    "IpNetworks",
    "Webhook",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookDelivery",
    "WebhookDeliveryPage",
    "WebhookDeliveryPayload",
    "WebhookEvent",
    "WebhookEventType",
    "WebhookPage",
    "WebhookTarget",
    "address_refused",
    "check_webhook_url",
    "default_webhooks_use_case",
    "parse_networks",
    "with_webhooks",
]

WEBHOOKS_USE_CASE = "jobs.webhooks"
WEBHOOK_JOB_TYPE = "jobs.webhooks.deliver"
SIGNATURE_HEADER = "Jobs-Signature"
MAX_WEBHOOK_URL_LENGTH = 2048
MAX_WEBHOOKS_PER_TENANT = 25
MAX_WEBHOOK_DESCRIPTION = 200

IpNetworks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]


class WebhookEventType(StrEnum):
    """What a subscription may ask for. `succeeded`, `dead`, `cancelled` and `expired`: a job
    ended so; `deadline_missed`: a job was dispatched after its deadline; `batch_finished`:
    every job of a batch ended (sent once batches exist; subscribing to it is allowed now)."""

    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DEADLINE_MISSED = "deadline_missed"
    BATCH_FINISHED = "batch_finished"


def check_webhook_url(url: str) -> str:
    """http or https, a host, no credentials, at most MAX_WEBHOOK_URL_LENGTH characters:
    ValueError saying what is wrong otherwise. (Where the host points is checked apart, by
    resolving it: `address_refused`.)"""
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"at most {MAX_WEBHOOK_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("no spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https, e.g. https://example.com/hooks")
    if not parts.hostname:
        raise ValueError("the URL names no host, e.g. https://example.com/hooks")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not allowed; the signature authenticates")
    if parts.fragment:
        raise ValueError("a fragment (#...) is not sent; remove it")
    return url


WebhookUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH, description="http(s) URL to POST to"),
    AfterValidator(check_webhook_url),
]


def address_refused(
    address: str, *, allow_private: bool = False, allowed: IpNetworks | None = None
) -> str | None:
    """Why a delivery may not go to `address` (an IP address as text), or None when it may.
    Private, loopback, link-local, multicast, reserved and unspecified addresses (an
    IPv4-mapped IPv6 address judged as its IPv4 one) are refused unless `allow_private`, or
    the address lies in one of the `allowed` networks."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in allowed or ()):
        return None
    if allow_private:
        return None
    for kind, flag in (
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("an unspecified", ip.is_unspecified),
        ("a reserved", ip.is_reserved),
        ("a private", ip.is_private),
        ("a not globally routable", not ip.is_global),
    ):
        if flag:
            return f"{ip} is {kind} address"
    return None


def parse_networks(text: str) -> IpNetworks:
    """Comma-separated CIDRs (`127.0.0.0/8,::1/128`); ValueError naming a bad one."""
    nets: IpNetworks = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a CIDR network ({exc})") from None
    return nets


class WebhookCreate(BaseModel):
    """A subscription of the token's tenant. The secret is made by the server and shown once,
    in the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: WebhookUrl
    event_types: list[WebhookEventType] = Field(
        min_length=1, max_length=len(WebhookEventType), description="the events to send, 1-6"
    )
    use_case: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="only events of this use case's jobs; null: every use case"
    )
    description: Annotated[Text, Field(max_length=MAX_WEBHOOK_DESCRIPTION)] = ""


class Webhook(BaseModel):
    """A subscription as the API shows it (never its secret)."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    tenant: str
    url: str
    event_types: list[WebhookEventType]
    use_case: str | None
    description: str
    paused: bool
    created_at: datetime


class WebhookCreated(Webhook):
    """The creation's answer: the subscription and its signing secret, shown this once."""

    secret: str = Field(description="HMAC-SHA256 key of the Jobs-Signature header; keep it")


class WebhookPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[Webhook]


class WebhookTarget(BaseModel):
    """What the worker asks the server for at send time (worker API): where and how to sign."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    url: str
    secret: str
    paused: bool


class WebhookEvent(BaseModel):
    """The body a receiver gets (JSON), signed as sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID = Field(description="the event's id: the same on every retry of its delivery")
    type: WebhookEventType
    occurred_at: datetime
    tenant: str
    job_id: UUID | None = None
    use_case: str | None = None
    job_type: str | None = None
    status: str | None = Field(default=None, description="the job's status after the event")
    attempts: int | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)


class WebhookDeliveryPayload(BaseModel):
    """The payload of a delivery job: the event, and whose subscription it goes to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subscription_id: UUID
    event: WebhookEvent


class WebhookDelivery(BaseModel):
    """One event's delivery to one subscription, read from its delivery job."""

    model_config = ConfigDict(frozen=True)

    job_id: UUID = Field(description="the delivery job (use case jobs.webhooks)")
    event_id: UUID
    event_type: WebhookEventType
    status: str = Field(description="the delivery job's status: pending, running, succeeded, dead")
    attempts: int
    response_code: int | None = Field(description="the receiver's last HTTP status, if any")
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class WebhookDeliveryPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[WebhookDelivery]
    next_cursor: str | None = None


def default_webhooks_use_case(queue: str = "jobs-webhooks") -> UseCaseConfig:
    """The built-in use case: 8 attempts over about 40 minutes (exponential from 5 s, capped at
    15 min), 15 s per request, 50 deliveries at once, at most 10 per tenant (one tenant's slow
    receiver does not hold up the others')."""
    return UseCaseConfig(
        queue=queue,
        capacity=50,
        per_tenant_running_cap=10,
        default_delay_tolerance_seconds=60.0,
        max_attempts=8,
        backoff=BackoffPolicy(kind=BackoffKind.EXPONENTIAL, base_seconds=5.0, cap_seconds=900.0),
        timeout_seconds=15.0,
        job_types=[WEBHOOK_JOB_TYPE],
        pack_max_jobs=10,
    )


def with_webhooks(config: JobsConfig, *, queue: str = "jobs-webhooks") -> JobsConfig:
    """`config` with the built-in use case added, unless it configures `jobs.webhooks` itself
    (its own queue, capacity or retries: a use case of that name is taken as is)."""
    if WEBHOOKS_USE_CASE in config.use_cases:
        return config
    use_cases = {**config.use_cases, WEBHOOKS_USE_CASE: default_webhooks_use_case(queue)}
    return config.model_copy(update={"use_cases": use_cases})
