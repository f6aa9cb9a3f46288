"""The dashboard over real HTTP: login and its cookie, CSRF and origin checks, tenant scoping of
pages and counts, the read-only token, escaping, search and bulk actions. The browser tests
(tests/browser) drive the same pages in Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import subprocess
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from jobs_server.store.postgres import PostgresJobStore
from tests.conftest import TENANTS, LiveServer
from tests.integration.proxy import start_database_proxy
from tests.integration.requests import ACME, GLOBEX, job

EVIL = "<script>alert('pwned')</script>"


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


async def browser(server: LiveServer, token: str) -> httpx.AsyncClient:
    """A client holding a dashboard session, sending the Origin a browser sends."""
    c = httpx.AsyncClient(base_url=server.url, timeout=30, headers={"Origin": server.url})
    r = await c.post("/ui/login", data={"token": token, "next": "/ui/jobs"})
    assert r.status_code == 303, r.text
    return c


@pytest.fixture
async def sessions(live_server: LiveServer) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {
        "acme": await browser(live_server, "tok-acme"),
        "globex": await browser(live_server, "tok-globex"),
        "admin": await browser(live_server, "tok-admin"),
        "readonly": await browser(live_server, "tok-readonly"),
    }
    yield clients
    for c in clients.values():
        await c.aclose()


async def enqueue(api: httpx.AsyncClient, headers: dict[str, str], **kw: Any) -> str:
    r = await api.post("/v1/jobs", json=job(**kw), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["job"]["id"])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def counts(html: str, name: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(rf'data-count="{name}">([\d,]+)<', html)]


# -- login --------------------------------------------------------------------------------------


async def test_login_sets_a_strict_httponly_cookie(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get("/ui/jobs?status=dead")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Ddead"
        page = await c.get("/ui/login")
        assert page.status_code == 200 and 'type="password"' in page.text
        # a login posted from another site is refused
        r = await c.post("/ui/login", data={"token": "tok-acme"}, headers={"Origin": "http://evil"})
        assert r.status_code == 403
        origin = {"Origin": live_server.url}
        r = await c.post("/ui/login", data={"token": "nope"}, headers=origin)
        assert r.status_code == 401 and "not one this server knows" in r.text
        r = await c.post("/ui/login", data={"token": "tok-worker"}, headers=origin)
        assert r.status_code == 401
        r = await c.post(
            "/ui/login", data={"token": "tok-acme", "next": "https://evil/"}, headers=origin
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui"  # no open redirect
        cookie = r.headers["set-cookie"].lower()
        for part in ("jobs_session=", "httponly", "samesite=strict", "path=/ui"):
            assert part in cookie
        assert "secure" not in cookie  # plain http on loopback
        assert "tok-acme" not in r.headers["set-cookie"]
        page = await c.get("/ui")
        assert page.status_code == 200 and "tenant acme" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        r = await c.post("/ui/logout", data={"csrf": csrf_of(page.text)}, headers=origin)
        assert r.status_code == 303
        assert (await c.get("/ui")).status_code == 303


async def test_pages_accept_a_bearer_header_too(api, live_server):
    job_id = await enqueue(api, ACME)
    r = await api.get("/ui/jobs", headers=ACME)
    assert r.status_code == 200 and job_id in r.text
    # no cookie, no CSRF needed: a browser never sends this header cross-site by itself
    r = await api.post(f"/ui/jobs/{job_id}/cancel", headers=ACME)
    assert r.status_code == 303
    assert (await api.get(f"/v1/jobs/{job_id}", headers=ACME)).json()["status"] == "cancelled"
    assert (await api.get("/ui", headers={"Authorization": "Bearer tok-worker"})).status_code == 303


# -- sessions -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def logged_in(server: LiveServer, token: str) -> AsyncIterator[httpx.AsyncClient]:
    c = await browser(server, token)
    try:
        yield c
    finally:
        await c.aclose()


def session_cookie(client: httpx.AsyncClient) -> str:
    value = client.cookies.get("jobs_session")
    assert value, "no session cookie"
    return value


def replay(server: LiveServer, cookie: str) -> httpx.AsyncClient:
    """Another client presenting a copied cookie, as a thief (or a second browser) would."""
    return httpx.AsyncClient(
        base_url=server.url,
        timeout=30,
        headers={"Origin": server.url},
        cookies={"jobs_session": cookie},
    )


async def test_the_cookie_names_a_stored_session_not_the_token(start_server, db):
    server = await start_server(dashboard_session_ttl_seconds=3600)
    async with logged_in(server, "tok-acme") as c:
        cookie = session_cookie(c)
        assert "tok-acme" not in cookie
        assert base64.urlsafe_b64encode(b"tok-acme").decode().rstrip("=") not in cookie
        row = await db.fetchrow(
            "SELECT id_hash, role, tenant, token_check, expires_at - created_at AS ttl "
            "FROM dashboard_sessions"
        )
        assert bytes(row["id_hash"]) == hashlib.sha256(cookie.encode()).digest()
        assert (row["role"], row["tenant"]) == ("tenant", "acme")
        assert row["ttl"] == timedelta(seconds=3600)
        for value in row.values():
            assert b"tok-acme" not in (value if isinstance(value, bytes) else str(value).encode())
        assert (await c.get("/ui")).status_code == 200


async def test_a_cookie_replayed_after_logout_is_refused(live_server, db):
    async with logged_in(live_server, "tok-acme") as c:
        cookie = session_cookie(c)
        page = await c.get("/ui")
        assert page.status_code == 200
        r = await c.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM dashboard_sessions") == 0
    async with replay(live_server, cookie) as thief:
        r = await thief.get("/ui/jobs")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        r = await thief.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 401


async def test_an_expired_session_is_refused_and_pruned_at_the_next_login(live_server, db):
    async with logged_in(live_server, "tok-acme") as c:
        assert (await c.get("/ui")).status_code == 200
        await db.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'")
        r = await c.get("/ui")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    async with logged_in(live_server, "tok-globex"):
        rows = await db.fetch("SELECT tenant FROM dashboard_sessions")
        assert [r["tenant"] for r in rows] == ["globex"]  # the expired one is gone


async def test_logging_in_again_replaces_the_browsers_session(live_server, db):
    async with logged_in(live_server, "tok-acme") as c:
        before = session_cookie(c)
        r = await c.post("/ui/login", data={"token": "tok-globex"})
        assert r.status_code == 303
        assert session_cookie(c) != before
        rows = await db.fetch("SELECT tenant FROM dashboard_sessions")
        assert [r["tenant"] for r in rows] == ["globex"]
        assert "tenant globex" in (await c.get("/ui")).text


async def test_removing_the_token_ends_its_sessions_in_every_process(start_server):
    first = await start_server()
    # a second process on the same database where acme's token was rotated
    rotated = TENANTS | {"acme": {"max_active_jobs": 10, "tokens": ["tok-acme-rotated"]}}
    second = await start_server(tenants=rotated)
    same = await start_server()
    async with logged_in(first, "tok-acme") as c:
        cookie = session_cookie(c)
    for server, status in ((same, 200), (second, 303), (first, 200)):
        async with replay(server, cookie) as other:
            assert (await other.get("/ui")).status_code == status, server.url


async def test_a_session_is_refused_when_its_token_now_means_someone_else(start_server):
    first = await start_server()
    moved = TENANTS | {
        "acme": {"max_active_jobs": 10, "tokens": ["tok-acme-2"]},
        "globex": {"max_active_jobs": 10, "tokens": ["tok-globex", "tok-acme"]},
    }
    second = await start_server(tenants=moved)
    async with logged_in(first, "tok-acme") as c:
        cookie = session_cookie(c)
    async with replay(second, cookie) as other:
        assert (await other.get("/ui")).status_code == 303


async def test_database_down_shows_a_503_page_and_recovers(start_server, database_url):
    proxy, proxied = await start_database_proxy(database_url)
    server = await start_server(database_url=proxied)
    try:
        async with logged_in(server, "tok-acme") as c:
            assert (await c.get("/ui/jobs")).status_code == 200
            await proxy.stop()
            for headers in ({}, ACME):  # the session's lookup fails; the listing fails
                r = await c.get("/ui/jobs", headers=headers)
                assert r.status_code == 503, r.text
                assert "database cannot be reached" in r.text
                assert r.headers["retry-after"]
                assert r.headers["content-type"].startswith("text/html")
            await proxy.start()
            for _ in range(50):
                r = await c.get("/ui/jobs")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200
    finally:
        await proxy.stop()


# -- CSRF -----------------------------------------------------------------------------------------


async def test_actions_need_the_csrf_token_and_our_origin(api, sessions, live_server):
    job_id = await enqueue(api, ACME)
    acme = sessions["acme"]
    page = await acme.get(f"/ui/jobs/{job_id}")
    token = csrf_of(page.text)
    url = f"/ui/jobs/{job_id}/cancel"
    assert (await acme.post(url, data={})).status_code == 403
    assert (await acme.post(url, data={"csrf": "0" * 64})).status_code == 403
    # another session's token is not this one's
    other = csrf_of((await sessions["globex"].get("/ui/jobs")).text)
    assert (await acme.post(url, data={"csrf": other})).status_code == 403
    evil = {"Origin": "http://evil.example"}
    assert (await acme.post(url, data={"csrf": token}, headers=evil)).status_code == 403
    assert (await api.get(f"/v1/jobs/{job_id}", headers=ACME)).json()["status"] == "pending"
    r = await acme.post(url, data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=cancelled")
    assert (await api.get(f"/v1/jobs/{job_id}", headers=ACME)).json()["status"] == "cancelled"


# -- read-only ------------------------------------------------------------------------------------


async def test_read_only_token_sees_no_action_and_every_action_is_refused(api, db, sessions):
    job_id = await enqueue(api, ACME)
    dead_id = await enqueue(api, ACME)
    await db.execute("UPDATE jobs SET status = 'dead', finished_at = now() WHERE id = $1", dead_id)
    ro = sessions["readonly"]
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{dead_id}", "/ui/jobs"):
        html = (await ro.get(path)).text
        assert "read-only" in html
        assert "/cancel" not in html and "/retry" not in html and "Retry all" not in html
    token = csrf_of((await ro.get("/ui/jobs")).text)  # the logout form's
    assert (await ro.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token})).status_code == 403
    assert (await ro.post(f"/ui/jobs/{dead_id}/retry", data={"csrf": token})).status_code == 403
    bulk = {"csrf": token, "action": "cancel", "expected": "5"}
    assert (await ro.post("/ui/jobs/bulk", data=bulk)).status_code == 403
    readonly = {"Authorization": "Bearer tok-readonly"}
    assert (await api.post(f"/v1/jobs/{job_id}/cancel", headers=readonly)).status_code == 403
    assert (await api.post(f"/v1/jobs/{dead_id}/retry", headers=readonly)).status_code == 403
    statuses = {r[0] for r in await db.fetch("SELECT status::text FROM jobs")}
    assert statuses == {"pending", "dead"}


# -- tenants --------------------------------------------------------------------------------------


async def test_a_tenant_sees_only_its_own_jobs_and_counts(api, db, sessions, live_server):
    mine = [await enqueue(api, ACME, payload={"i": i}) for i in range(2)]
    theirs = [await enqueue(api, GLOBEX, payload={"i": i}) for i in range(5)]
    store = await PostgresJobStore.connect(live_server.database_url)
    try:
        await store.refresh_job_counts("default")
    finally:
        await store.close()
    acme, admin = sessions["acme"], sessions["admin"]
    listing = (await acme.get("/ui/jobs")).text
    assert all(i in listing for i in mine) and not any(i in listing for i in theirs)
    assert "globex" not in listing
    assert (await acme.get("/ui/jobs?tenant=globex")).text.count("data-job=") == 2
    assert (await acme.get(f"/ui/jobs/{theirs[0]}")).status_code == 404
    assert counts((await acme.get("/ui")).text, "pending") == [2, 0]  # notifications, labeling
    assert counts((await sessions["globex"].get("/ui")).text, "pending") == [5, 0]
    assert counts((await admin.get("/ui")).text, "pending") == [7, 0]
    admin_list = (await admin.get("/ui/jobs?tenant=globex")).text
    assert admin_list.count("data-job=") == 5


# -- escaping -------------------------------------------------------------------------------------


async def test_user_supplied_text_is_escaped(api, db, sessions):
    job_id = await enqueue(
        api, ACME, payload={"html": EVIL}, dedup_key=EVIL, use_case="labeling", job_type=EVIL
    )
    await db.execute(
        "UPDATE jobs SET status = 'dead', attempts = 1, finished_at = now(), last_error = $2 "
        "WHERE id = $1",
        job_id,
        f"ValueError: {EVIL}",
    )
    await db.execute(
        "INSERT INTO job_attempts (job_id, attempt, outcome, worker_id, error_type, "
        "error_message, traceback, finished_at) VALUES ($1, 1, 'failed', $2, $2, $2, $2, now())",
        job_id,
        EVIL,
    )
    for path in (f"/ui/jobs/{job_id}", "/ui/jobs", f"/ui/jobs?q={EVIL}"):
        html = (await sessions["acme"].get(path)).text
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(" in html
    html = (await sessions["acme"].get(f"/ui/jobs/bulk?action=retry&job_type={EVIL}")).text
    assert "<script>alert" not in html and "&lt;script&gt;" in html


# -- search, filters and bulk ---------------------------------------------------------------------


async def test_search_by_id_or_dedup_key(api, db, sessions):
    wanted = await enqueue(api, ACME, dedup_key="order-1234")
    await enqueue(api, ACME, dedup_key="order-9")
    acme = sessions["acme"]
    r = await acme.get(f"/ui/jobs?q={wanted}")
    assert r.status_code == 303 and r.headers["location"] == f"/ui/jobs/{wanted}"
    html = (await acme.get("/ui/jobs?q=order-1234")).text
    assert html.count("data-job=") == 1 and wanted in html
    theirs = await enqueue(api, GLOBEX)
    html = (await acme.get(f"/ui/jobs?q={theirs}")).text
    assert "No job has the id" in html


async def test_filters_and_keyset_pages(api, db, sessions):
    ids = [await enqueue(api, ACME, payload={"i": i}) for i in range(55)]
    await enqueue(api, ACME, use_case="labeling", job_type="t")
    acme = sessions["acme"]
    first = (await acme.get("/ui/jobs?use_case=notifications")).text
    assert first.count("data-job=") == 50
    older = re.search(r'href="(/ui/jobs\?[^"]*cursor=[^"]+)"', first)
    assert older
    second = (await acme.get(older.group(1).replace("&amp;", "&"))).text
    assert second.count("data-job=") == 5
    assert ids[0] in second and ids[-1] in first
    html = (await acme.get("/ui/jobs?job_type=t")).text
    assert html.count("data-job=") == 1
    html = (await acme.get("/ui/jobs?created_after=2999-01-01T00:00")).text
    assert "No jobs match" in html
    assert (await acme.get("/ui/jobs?created_after=yesterday")).status_code == 400


async def test_bulk_retry_states_the_count_then_acts(api, db, sessions):
    ids = [await enqueue(api, ACME, payload={"i": i}) for i in range(4)]
    await db.execute(
        "UPDATE jobs SET status = 'dead', attempts = 3, finished_at = now() "
        "WHERE id = ANY ($1::uuid[])",
        ids[:3],
    )
    await enqueue(api, GLOBEX)
    acme = sessions["acme"]
    page = await acme.get("/ui/jobs/bulk?action=retry&status=dead")
    assert "Retry 3 jobs?" in page.text
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert form["expected"] == "3" and form["status"] == "dead"
    await enqueue(api, ACME)  # created after the count: left alone whatever happens
    r = await acme.post("/ui/jobs/bulk", data=form)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/jobs?status=dead&done=retry&n=3&skipped=0"
    assert "Retried 3 jobs" in (await acme.get(r.headers["location"])).text
    rows = await db.fetch("SELECT status::text, count(*) FROM jobs GROUP BY 1")
    assert dict((r[0], r[1]) for r in rows) == {"pending": 6}


async def test_stats_tables_feed_the_overview(api, db, live_server):
    """The refresher's statements: finished jobs roll up past a watermark, once each; dispatch
    stats add up; the snapshot follows the active jobs; the overview shows it all."""
    store = await PostgresJobStore.connect(live_server.database_url)
    try:
        ids = [await enqueue(api, ACME, payload={"i": i}) for i in range(3)]
        await db.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = now() - interval '2 minutes' "
            "WHERE id = ANY ($1::uuid[])",
            ids[:2],
        )
        name = "default"
        rolled = await store.roll_up_finished(
            name, use_cases=["notifications"], lag_seconds=0, max_window_seconds=7200
        )
        assert rolled == 1
        again = await store.roll_up_finished(
            name, use_cases=["notifications"], lag_seconds=0, max_window_seconds=7200
        )
        assert again == 0  # nothing counted twice
        await store.refresh_job_counts(name)
        [c] = await store.get_job_counts(tenant="acme")
        assert (c.pending, c.due, c.running) == (1, 1, 0)
        assert await store.get_job_counts(tenant="globex") == []
        html = (await live_server_get(live_server, "/ui")).text
        assert counts(html, "succeeded")[0] == 2
        assert counts(html, "pending")[0] == 1
    finally:
        await store.close()


async def live_server_get(server: LiveServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return await c.get(path, headers=ACME)


async def test_unknown_job_pages(sessions):
    acme = sessions["acme"]
    assert (await acme.get("/ui/jobs/not-a-uuid")).status_code == 404
    r = await acme.get("/ui/jobs/0190a0b0-0000-7000-8000-000000000000")
    assert r.status_code == 404 and "not found" in r.text


async def test_assets_ship_in_the_wheel_and_need_no_network(live_server, repo_root, tmp_path):
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        css = await c.get("/ui/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await c.get("/ui/static/dashboard.js")).status_code == 200
    package = repo_root / "packages/jobs-server/src/jobs_server/dashboard"
    for path in [*package.glob("templates/*.html"), *package.glob("static/*")]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path  # no CDN, no fetches
    done = subprocess.run(
        ["uv", "build", "--package", "jobs-server", "--wheel", "--out-dir", str(tmp_path)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("jobs_server-*.whl"))).namelist()
    for wanted in (
        "jobs_server/dashboard/templates/overview.html",
        "jobs_server/dashboard/static/dashboard.css",
        "jobs_server/dashboard/static/dashboard.js",
        "jobs_server/store/migrations/0002_dashboard.sql",
    ):
        assert wanted in names
