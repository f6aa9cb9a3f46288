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
from jobs_server.auth import BEARER, Authenticator, Principal, Role
from jobs_server.service import JobService

__all__ = ["Producer", "Reader", "Service", "Worker", "principal", "producer_of", "service_of"]

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
    auth: Authenticator = server_in(request.scope).authenticator
    who = auth.authenticate(token.strip())
    if who is None:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "unknown token")
    return who


async def _reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role is Role.WORKER:
        raise ApiError(403, ErrorCode.FORBIDDEN, "worker tokens may use the worker API only")
    return who


async def _producer(who: Annotated[Principal, Depends(_reader)]) -> Principal:
    if not who.can_write:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this token is read-only")
    return who


async def _worker(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role is not Role.WORKER:
        raise ApiError(403, ErrorCode.FORBIDDEN, "the worker API needs the worker token")
    return who


async def producer_of(request: Request) -> Principal:
    """`Producer` without FastAPI's dependency solving, for routes that skip it."""
    return await _producer(await _reader(await principal(request)))


Service = Annotated[JobService, Depends(service_of)]
Reader = Annotated[Principal, Depends(_reader)]
Producer = Annotated[Principal, Depends(_producer)]
Worker = Annotated[Principal, Depends(_worker)]
