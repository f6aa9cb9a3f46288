"""Who is looking: the dashboard's session cookie, its CSRF token and the same-origin check.

The cookie holds the bearer token the operator pasted (HttpOnly, SameSite=Strict, Secure over
https), with a random nonce per login; every request authenticates it again with the server's
Authenticator, so a token removed from the configuration stops working at once. A script may
send `Authorization: Bearer` instead of the cookie.

CSRF: every form carries HMAC-SHA256(key=token, nonce). Only someone who can read the HttpOnly
cookie can compute it, no server secret is needed (so it holds across restarts and replicas),
and each login has its own. Cookie-authenticated POSTs must also come from this origin (Origin,
else Referer). Requests with an Authorization header need neither: browsers never attach that
header to a cross-site request by themselves."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from hashlib import sha256
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from jobs_server.auth import Authenticator, Principal, Role

__all__ = [
    "COOKIE",
    "Viewer",
    "clear_session",
    "csrf_token",
    "same_origin",
    "start_session",
    "viewer_of",
]

COOKIE = "jobs_session"
_MAX_AGE = 12 * 3600


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


def csrf_token(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), b"jobs-dashboard-csrf:" + nonce.encode(), sha256).hexdigest()


def _label(who: Principal) -> str:
    if who.role is Role.TENANT:
        return f"tenant {who.tenant}"
    return "read-only admin" if who.role is Role.READONLY_ADMIN else "admin"


def dashboard_principal(auth: Authenticator, token: str) -> Principal | None:
    """The token's principal, if it may use the dashboard (worker tokens may not)."""
    who = auth.authenticate(token)
    return None if who is None or who.role is Role.WORKER else who


def viewer_of(request: Request, auth: Authenticator) -> Viewer | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        who = dashboard_principal(auth, token.strip())
        return Viewer(who, None, _label(who)) if who else None
    nonce, _, encoded = request.cookies.get(COOKIE, "").partition(".")
    if not nonce or not encoded:
        return None
    try:
        token = base64.urlsafe_b64decode(encoded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    who = dashboard_principal(auth, token)
    return Viewer(who, csrf_token(token, nonce), _label(who)) if who else None


def start_session(request: Request, response: Response, token: str) -> None:
    nonce = secrets.token_hex(16)
    encoded = base64.urlsafe_b64encode(token.encode()).decode()
    response.set_cookie(
        COOKIE,
        f"{nonce}.{encoded}",
        max_age=_MAX_AGE,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == request.headers.get("host", "").lower()
