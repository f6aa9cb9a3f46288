"""Who is looking: the dashboard's sessions, their CSRF token and the same-origin check.

Logging in with a token opens a session: a random id in an HttpOnly, SameSite=Strict cookie
scoped to /ui (Secure over https). PostgreSQL keeps only the id's SHA-256, the principal, the
expiry (JOBS_DASHBOARD_SESSION_TTL_SECONDS) and HMAC(key=id, token); the token itself is kept
nowhere. Every request looks the session up, so any API process of `serve --workers N` knows
it, and checks that its token is still configured, so removing a token ends its sessions.
Logging out deletes the row. A script may send `Authorization: Bearer` instead of the cookie.

CSRF: every form carries HMAC-SHA256(key=session id, "csrf"). Only the holder of the HttpOnly
cookie can compute it, and it needs no server secret. Cookie-authenticated POSTs must also come
from this origin (Origin, else Referer). Requests with an Authorization header need neither:
browsers never attach that header to a cross-site request by themselves."""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from hashlib import sha256
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from jobs_server.auth import Authenticator, Principal, Role
from jobs_server.dashboard.templating import ui_path
from jobs_server.store.base import JobStore

__all__ = [
    "COOKIE",
    "Viewer",
    "dashboard_principal",
    "end_session",
    "same_origin",
    "start_session",
    "viewer_of",
]

COOKIE = "jobs_session"
# secrets.token_urlsafe(32): anything else is not one of ours and is not looked up
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    csrf: str | None  # None: authenticated by header, no form token needed
    label: str

    @property
    def can_write(self) -> bool:
        return self.principal.can_write

    @property
    def is_admin(self) -> bool:
        return self.principal.tenant_scope is None

    def csrf_ok(self, presented: str | None) -> bool:
        if self.csrf is None:
            return True
        return presented is not None and hmac.compare_digest(self.csrf, presented)


def _id_hash(session_id: str) -> bytes:
    return sha256(session_id.encode()).digest()


def _keyed(session_id: str, message: bytes) -> bytes:
    return hmac.new(session_id.encode(), message, sha256).digest()


def _csrf_token(session_id: str) -> str:
    return _keyed(session_id, b"jobs-dashboard-csrf").hex()


def _label(who: Principal) -> str:
    if who.role is Role.TENANT:
        return f"tenant {who.tenant}"
    return "read-only admin" if who.role is Role.READONLY_ADMIN else "admin"


def dashboard_principal(auth: Authenticator, token: str) -> Principal | None:
    """The token's principal, if it may use the dashboard (worker tokens may not)."""
    who = auth.authenticate(token)
    return None if who is None or who.role is Role.WORKER else who


def _session_id(request: Request) -> str | None:
    value = request.cookies.get(COOKIE, "")
    return value if _SESSION_ID.match(value) else None


async def viewer_of(request: Request, auth: Authenticator, store: JobStore) -> Viewer | None:
    """The bearer header's principal, else the session cookie's; None: log in first."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        who = dashboard_principal(auth, token.strip())
        return Viewer(who, None, _label(who)) if who else None
    session_id = _session_id(request)
    if session_id is None:
        return None
    found = await store.get_dashboard_session(_id_hash(session_id))
    if found is None:
        return None
    # the token it was opened with must still be configured, for the same principal
    who = auth.authenticate_keyed(session_id.encode(), found.token_check)
    if who is None or who != found.principal or who.role is Role.WORKER:
        return None
    return Viewer(who, _csrf_token(session_id), _label(who))


async def start_session(
    request: Request,
    response: Response,
    *,
    store: JobStore,
    token: str,
    principal: Principal,
    ttl_seconds: float,
) -> None:
    """Open a session for `principal` (whose token is `token`); the cookie names it."""
    await _forget(request, store)  # a new login replaces the browser's older one
    session_id = secrets.token_urlsafe(32)
    await store.create_dashboard_session(
        _id_hash(session_id),
        principal=principal,
        token_check=_keyed(session_id, token.encode()),
        ttl_seconds=ttl_seconds,
    )
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(ttl_seconds),
        path=ui_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def end_session(request: Request, response: Response, *, store: JobStore) -> None:
    """Delete the request's session, so its cookie is refused even if replayed."""
    await _forget(request, store)
    response.delete_cookie(COOKIE, path=ui_path(request), httponly=True, samesite="strict")


async def _forget(request: Request, store: JobStore) -> None:
    session_id = _session_id(request)
    if session_id is not None:
        await store.delete_dashboard_session(_id_hash(session_id))


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == request.headers.get("host", "").lower()
