"""The jobs API inside a user's own FastAPI app, both ways: `JobsServer.include_in(app, ...)`
and `app.mount("/jobs", create_app(...))`. The host has its own routes, its own error shapes
(HTTPException, RequestValidationError, a custom 418 with headers) and its own upload route; none
of that may change, and our routes keep ours. Real HTTP through uvicorn, with lifespans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs_server.app import JobsServer, create_app
from tests.conftest import free_port, make_settings
from tests.integration.requests import ACME, job

UPLOAD = 40 * 1024 * 1024
JSON = {"Content-Type": "application/json"}


class Teapot(Exception):
    pass


def host_app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        events.append("host up")
        yield
        events.append("host down")

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"host_error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"host_invalid": len(exc.errors())}, status_code=400)

    @app.exception_handler(Teapot)
    async def teapot(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"teapot": True}, status_code=418, headers={"X-Teapot": "short"})

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "no item 0")
        if item_id == 418:
            raise Teapot
        return {"item": item_id}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"bytes": size}

    return app


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the host app did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def assert_host_untouched(c: httpx.AsyncClient) -> None:
    assert (await c.get("/items/7")).json() == {"item": 7}
    r = await c.get("/items/0")
    assert (r.status_code, r.json()) == (404, {"host_error": "no item 0"})
    r = await c.get("/items/abc")
    assert (r.status_code, r.json()) == (400, {"host_invalid": 1})
    r = await c.get("/items/418")
    assert (r.status_code, r.json(), r.headers["x-teapot"]) == (418, {"teapot": True}, "short")
    r = await c.get("/nothing/here")
    assert (r.status_code, r.json()) == (404, {"host_error": "Not Found"})
    r = await c.post("/upload", content=b"x" * UPLOAD)
    assert (r.status_code, r.json()) == (200, {"bytes": UPLOAD})


async def assert_jobs_served(c: httpx.AsyncClient, prefix: str) -> None:
    r = await c.post(f"{prefix}/v1/jobs", json=job(), headers=ACME)
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    assert (await c.get(f"{prefix}/v1/jobs/{job_id}", headers=ACME)).json()["id"] == job_id
    r = await c.get(f"{prefix}/v1/jobs/{uuid4()}", headers=ACME)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await c.get(f"{prefix}/v1/jobs?limit=0", headers=ACME)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error")
    r = await c.post(f"{prefix}/v1/jobs", content=b"{", headers=ACME | JSON)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
    r = await c.post(f"{prefix}/v1/jobs", content=b"x" * UPLOAD, headers=ACME | JSON)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
    r = await c.get(f"{prefix}/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")


async def test_included_router_touches_only_its_own_routes(database_url):
    events: list[str] = []
    app = host_app(events)
    jobs = JobsServer(make_settings(database_url))
    jobs.include_in(app, prefix="/jobs")
    async with serving(app) as url:
        assert jobs.started, "the host's lifespan starts the server"
        assert events == ["host up"]
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            await assert_host_untouched(c)
            await assert_jobs_served(c, "/jobs")
            for opt_in in ("/ui", "/jobs/ui", "/healthz", "/jobs/healthz", "/readyz", "/metrics"):
                r = await c.get(opt_in)
                assert (r.status_code, r.json()) == (404, {"host_error": "Not Found"}), opt_in
            assert (await c.get("/v1/jobs", headers=ACME)).json() == {"host_error": "Not Found"}
            r = await c.request("TRACE", "/jobs/v1/jobs", headers=ACME)
            assert (r.status_code, r.headers["allow"]) == (405, "GET, POST")
            spec = (await c.get("/openapi.json")).json()
    assert not jobs.started, "the host's lifespan stops the server"
    assert events == ["host up", "host down"]
    operations = {
        op["operationId"]: path for path, item in spec["paths"].items() for op in item.values()
    }
    assert operations["enqueue_job"] == "/jobs/v1/jobs"
    assert operations["item_items__item_id__get"] == "/items/{item_id}"
    assert "bearer" in spec["components"]["securitySchemes"]


async def test_included_router_opt_ins(database_url):
    app = host_app([])
    jobs = JobsServer(make_settings(database_url))
    jobs.include_in(app, prefix="/jobs", dashboard=True, health=True, metrics=True)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as c:
        assert (await c.get("/jobs/healthz")).json() == {"status": "ok"}
        assert (await c.get("/jobs/readyz")).json()["status"] == "ready"
        assert "jobs_" in (await c.get("/jobs/metrics")).text
        login = await c.get("/jobs/ui/login")
        assert login.status_code == 200
        assert 'action="/jobs/ui/login"' in login.text
        assert (await c.get("/jobs/ui/static/dashboard.css")).status_code == 200
        r = await c.get("/jobs/elsewhere")
        assert (r.status_code, r.json()) == (404, {"host_error": "Not Found"})
        await assert_host_untouched(c)


async def test_a_dashboard_session_under_a_prefix_is_kept_and_ended(database_url):
    app = host_app([])
    jobs = JobsServer(make_settings(database_url))
    jobs.include_in(app, prefix="/jobs", dashboard=True)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers={"Origin": url}) as c,
    ):
        r = await c.post("/jobs/ui/login", data={"token": "tok-acme", "next": "/jobs/ui/jobs"})
        assert r.status_code == 303, r.text
        cookie = next(k for k in c.cookies.jar)
        assert cookie.path == "/jobs/ui", "the browser sends the cookie back under the prefix"
        page = await c.get("/jobs/ui/jobs")
        assert page.status_code == 200, "signed in: the job list, not the login page"
        assert 'action="/jobs/ui/login"' not in page.text
        out = await c.post("/jobs/ui/logout", data={"csrf": _csrf(page.text)})
        assert out.status_code == 303
        assert not list(c.cookies.jar), "logout removes the cookie at the same path"


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


async def test_one_server_per_app(database_url):
    app = FastAPI()
    JobsServer(make_settings(database_url)).include_in(app)
    with pytest.raises(Exception, match="one per app"):
        JobsServer(make_settings(database_url)).include_in(app, prefix="/other")


async def test_mounted_app_starts_on_its_first_request(database_url):
    app = host_app([])
    jobs_app = create_app(make_settings(database_url))
    app.mount("/jobs", jobs_app)
    server: JobsServer = jobs_app.state.jobs_server
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as c:
            assert not server.started, "Starlette runs no lifespan of a mounted app"
            await assert_jobs_served(c, "/jobs")
            assert (await c.get("/jobs/healthz")).json() == {"status": "ok"}
            assert (await c.get("/jobs/ui/login")).status_code == 200
            docs = await c.get("/jobs/docs")
            assert docs.status_code == 200
            assert "/jobs/openapi.json" in docs.text
            r = await c.get("/jobs/nothing")
            assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
            await assert_host_untouched(c)
    finally:
        await server.stop()


async def test_without_any_lifespan_the_server_starts_on_first_request(database_url):
    """In-process clients (httpx's ASGITransport) run no lifespan at all."""
    app = host_app([])
    jobs = JobsServer(make_settings(database_url))
    jobs.include_in(app, prefix="/jobs")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            r = await c.post("/jobs/v1/jobs", json=job(), headers=ACME)
            assert r.status_code == 201, r.text
    finally:
        await jobs.stop()


async def test_mounted_app_lifespan_composes_into_the_hosts(database_url):
    jobs_app = create_app(make_settings(database_url))
    app = FastAPI(lifespan=jobs_app.router.lifespan_context)
    app.mount("/jobs", jobs_app)
    server: JobsServer = jobs_app.state.jobs_server
    async with serving(app) as url:
        assert server.started, "the host's lifespan starts the mounted app's server"
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            assert (await c.post("/jobs/v1/jobs", json=job(), headers=ACME)).status_code == 201
    assert not server.started
