"""The dashboard's workflow pages: a job's parents and children with their states, the layered
graph of its workflow, and a batch's progress; another tenant's are not found."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.integration.requests import ACME, GLOBEX, job

EVIL = "<script>alert('pwned')</script>"


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


async def test_job_page_graph_and_batch_pages(api):
    graph = [
        job(ref="a"),
        job(ref="b", depends_on=["a"], job_type="notifications.send_email"),
        job(ref="c", depends_on=["a"]),
        job(ref="d", depends_on=["b", "c"], payload={"to": EVIL}),
    ]
    r = await api.post("/v1/jobs/batch", json={"jobs": graph}, headers=ACME)
    assert r.status_code == 200, r.text
    a, b, c, d = (x["job"]["id"] for x in r.json()["results"])
    page = await api.get(f"/ui/jobs/{b}", headers=ACME)
    assert page.status_code == 200
    section = page.text.split('data-test="workflow"')[1]
    assert a in section and d in section and "status-waiting" in section
    assert f"/ui/jobs/{b}/graph" in page.text
    graph_page = await api.get(f"/ui/jobs/{d}/graph", headers=ACME)
    assert graph_page.status_code == 200
    layers = graph_page.text.split('data-test="layer"')[1:]
    assert len(layers) == 3
    assert a in layers[0] and b in layers[1] and c in layers[1] and d in layers[2]
    assert EVIL not in graph_page.text and EVIL not in page.text
    assert (await api.get(f"/ui/jobs/{d}/graph", headers=GLOBEX)).status_code == 404
    plain = await api.get(f"/ui/jobs/{a}", headers=ACME)
    assert plain.status_code == 200

    body = {"jobs": [job(), job()], "callback": job(job_type="notifications.send_push")}
    made = await api.post("/v1/batches", json=body, headers=ACME)
    assert made.status_code == 201, made.text
    batch_id = made.json()["id"]
    page = await api.get(f"/ui/batches/{batch_id}", headers=ACME)
    assert page.status_code == 200
    progress = page.text.split('data-test="progress"')[1]
    assert "0 of 2 ended" in progress and "enqueued once every job has ended" in progress
    assert (await api.get(f"/ui/batches/{batch_id}", headers=GLOBEX)).status_code == 404
    assert (await api.get("/ui/batches/not-an-id", headers=ACME)).status_code == 404
    r = await api.get(f"/v1/batches/{batch_id}", headers=ACME)
    assert r.json()["counts"] == {
        "total": 2,
        "unfinished": 2,
        "succeeded": 0,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
    }
    assert (await api.get(f"/v1/batches/{batch_id}", headers=GLOBEX)).status_code == 404
