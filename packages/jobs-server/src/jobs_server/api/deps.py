"""Authentication dependencies shared by the routers.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in the
thread pool, and that hand-off cost more than all the rest of a small enqueue request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from jobs_schema import ErrorCode
from jobs_server.api.errors import ApiError
from jobs_server.api.route import server_in
from jobs_server.auth import (
    BEARER,
    Authenticator,
    Principal,
    Role,
    is_lease_credential,
    lease_principal,
)
from jobs_server.service import JobService

__all__ = [
    "Enqueuer",
    "Producer",
    "Reader",
    "Service",
    "Worker",
    "enqueuer_of",
    "principal",
    "producer_of",
    "service_of",
]

_LEASE_USAGE = (
    "send 'Authorization: Bearer lease.<job id>.<attempt>.<lease token>' from the attempt's "
    "handler while it runs (ctx.jobs does)"
)

# Declares bearer auth in the OpenAPI (the Authorize button, generated clients); the token itself
# is checked by `principal`, with our own 401.
_Declared = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def service_of(request: Request) -> JobService:
    return server_in(request.scope).service


async def principal(request: Request, _declared: _Declared = None) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            ErrorCode.UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
        )
    token = token.strip()
    if is_lease_credential(token):
        return await _lease(request, token)
    auth: Authenticator = server_in(request.scope).authenticator
    who = auth.authenticate(token)
    if who is None:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "unknown token")
    return who


async def _lease(request: Request, credential: str) -> Principal:
    try:
        who = await lease_principal(server_in(request.scope).store, credential)
    except ValueError as exc:
        raise ApiError(
            401, ErrorCode.UNAUTHORIZED, f"malformed lease credential ({exc}): {_LEASE_USAGE}"
        ) from None
    if who is None:
        raise ApiError(
            401,
            ErrorCode.UNAUTHORIZED,
            "lease credential refused: that attempt no longer holds the job's lease (it "
            f"finished, expired, was taken over or cancelled); {_LEASE_USAGE}",
        )
    return who


async def _reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role is Role.WORKER:
        raise ApiError(403, ErrorCode.FORBIDDEN, "worker tokens may use the worker API only")
    if who.role is Role.LEASE:
        raise ApiError(
            403,
            ErrorCode.FORBIDDEN,
            "a lease credential may only enqueue (POST /v1/jobs, POST /v1/jobs/batch); "
            "use a tenant token for anything else",
        )
    return who


async def _producer(who: Annotated[Principal, Depends(_reader)]) -> Principal:
    if not who.can_write:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this token is read-only")
    return who


async def _worker(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role is not Role.WORKER:
        raise ApiError(403, ErrorCode.FORBIDDEN, "the worker API needs the worker token")
    return who


async def _enqueuer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A producer, or a running attempt enqueuing follow-up jobs with its lease credential."""
    if who.role is Role.LEASE:
        return who
    return await _producer(await _reader(who))


async def producer_of(request: Request) -> Principal:
    """`Producer` without FastAPI's dependency solving, for routes that skip it."""
    return await _producer(await _reader(await principal(request)))


async def enqueuer_of(request: Request) -> Principal:
    """`Enqueuer` without FastAPI's dependency solving, for routes that skip it."""
    return await _enqueuer(await principal(request))


Service = Annotated[JobService, Depends(service_of)]
Reader = Annotated[Principal, Depends(_reader)]
Producer = Annotated[Principal, Depends(_producer)]
Enqueuer = Annotated[Principal, Depends(_enqueuer)]
Worker = Annotated[Principal, Depends(_worker)]
