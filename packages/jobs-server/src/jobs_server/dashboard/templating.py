"""Jinja2 templates of the package, with autoescape on for everything, and the headers every
page carries: a strict Content-Security-Policy (scripts and styles from /ui/static only, no
inline script), no caching of pages that show jobs, no framing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from jobs_schema import JobsConfig
from jobs_server.dashboard import format as fmt

__all__ = ["Templates"]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ui_path(request: Request) -> str:
    """Where the dashboard answers: /ui below the prefix the app is mounted or included at."""
    return str(request.scope.get("root_path", "")) + "/ui"


class Templates:
    def __init__(self, config: JobsConfig, *, version: str) -> None:
        self.env = Environment(
            loader=PackageLoader("jobs_server.dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            duration=fmt.duration,
            signed=fmt.signed,
            timestamp=fmt.timestamp,
            pretty_json=fmt.pretty_json,
            uniqueness=fmt.uniqueness,
        )
        self._config = config
        self._version = version

    def page(
        self, request: Request, name: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        ui = ui_path(request)
        # the server's clock, which stamped every time the page shows
        now: datetime = context.pop("now", None) or request.app.state.jobs.clock.now()
        html = self.env.get_template(name).render(
            ui=ui,
            static=f"{ui}/static",
            version=self._version,
            config=self._config,
            now=now,
            ago=lambda at, base=now: fmt.ago(at, base),
            path=request.url.path,
            current=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)
