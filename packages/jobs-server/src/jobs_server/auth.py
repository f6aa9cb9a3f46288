"""Bearer tokens: tenant, admin (read-write or read-only) and worker, compared in constant time;
and lease credentials, with which a running attempt enqueues follow-up jobs as its job's tenant.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum
from hashlib import sha256
from typing import Protocol

from fastapi.security import HTTPBearer

from jobs_schema import LEASE_CREDENTIAL_PREFIX, JobsConfig, LeaseRef

__all__ = [
    "BEARER",
    "Authenticator",
    "LeaseLookup",
    "Principal",
    "Role",
    "is_lease_credential",
    "lease_principal",
]

# The scheme the OpenAPI declares; `Authenticator` does the checking.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A tenant token, the admin (or read-only admin) token, or the worker token.",
)


class Role(StrEnum):
    TENANT = "tenant"
    ADMIN = "admin"
    READONLY_ADMIN = "readonly_admin"
    WORKER = "worker"
    LEASE = "lease"  # a running attempt's credential: enqueue only, as the job's tenant


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    tenant: str | None = None

    @property
    def tenant_scope(self) -> str | None:
        """The tenant whose jobs this principal may see; None: every tenant."""
        return self.tenant if self.role in (Role.TENANT, Role.LEASE) else None

    @property
    def can_write(self) -> bool:
        return self.role in (Role.TENANT, Role.ADMIN)


class Authenticator:
    def __init__(
        self,
        config: JobsConfig,
        *,
        admin_token: str | None,
        readonly_admin_token: str | None = None,
        worker_token: str | None = None,
    ) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for tenant, cfg in config.tenants.items():
            entries += [
                (t.get_secret_value().encode(), Principal(Role.TENANT, tenant)) for t in cfg.tokens
            ]
        for token, role in (
            (admin_token, Role.ADMIN),
            (readonly_admin_token, Role.READONLY_ADMIN),
            (worker_token, Role.WORKER),
        ):
            if token:
                entries.append((token.encode(), Principal(role)))
        self._entries = entries

    def authenticate(self, token: str) -> Principal | None:
        """Compare against every known token, so timing does not tell which one was close."""
        presented = token.encode()
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, presented) and found is None:
                found = principal
        return found

    def authenticate_keyed(self, key: bytes, digest: bytes) -> Principal | None:
        """The principal of the known token whose HMAC-SHA256 under `key` is `digest`: whether a
        token held only as such a digest (a dashboard session's) is still configured."""
        found = None
        for known, principal in self._entries:
            mac = hmac.new(key, known, sha256).digest()
            if hmac.compare_digest(mac, digest) and found is None:
                found = principal
        return found


class LeaseLookup(Protocol):
    async def get_lease_tenant(self, lease: LeaseRef) -> str | None: ...


def is_lease_credential(token: str) -> bool:
    return token.startswith(LEASE_CREDENTIAL_PREFIX)


async def lease_principal(store: LeaseLookup, credential: str) -> Principal | None:
    """The LEASE principal of a live lease's credential; None when the attempt no longer holds
    its lease (finished, expired, taken over, cancelled). ValueError when it is malformed.
    The lease token is a random UUID only that attempt's message carried."""
    lease = LeaseRef.from_credential(credential)
    tenant = await store.get_lease_tenant(lease)
    return Principal(Role.LEASE, tenant) if tenant is not None else None
