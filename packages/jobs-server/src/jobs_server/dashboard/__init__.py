"""The dashboard: see and steer jobs in a browser, under /ui, served by jobs-server itself.

Server-rendered pages (Jinja2, autoescaped), one stylesheet and one small script shipped in the
package (no CDN, no build step), charts as inline SVG drawn on the server."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from jobs_schema import JobsConfig
from jobs_server.dashboard.routes import LoginRequired, Refused, login_required, refused, router
from jobs_server.dashboard.templating import Templates
from jobs_server.dashboard.webhooks import router as webhooks_router

__all__ = ["install_dashboard"]

_VERSION = "1"


def install_dashboard(app: FastAPI, config: JobsConfig) -> None:
    """Add the /ui pages and their static files to `app`."""
    app.state.dashboard = Templates(config, version=_VERSION)
    app.include_router(router)
    app.include_router(webhooks_router)
    app.mount(
        "/ui/static",
        StaticFiles(packages=[("jobs_server.dashboard", "static")]),
        name="dashboard-static",
    )
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(Refused, refused)
