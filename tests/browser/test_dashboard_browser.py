"""The dashboard in Chromium, with jobs that really ran: find a dead job and bring it back,
cancel and bulk-retry, tenants and the read-only token, escaping, and screenshots."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
from playwright.async_api import Page, expect

from jobs_schema import JobStatus
from tests.browser.conftest import log_in
from tests.integration.test_worker_harness import EMAIL, Stack


async def wait_status(stack: Stack, job_id: UUID, status: JobStatus, timeout: float = 30) -> None:
    await stack.wait_for(job_id, lambda j: j.status is status, timeout=timeout)


async def reload_until(page: Page, selector: str, text: str, timeout: float = 30) -> None:
    """Reload until `selector` shows `text` (the pages are server-rendered)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = await page.locator(selector).first.inner_text()
        if text in shown:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never showed {text!r}; last shown: {shown!r}")
        await asyncio.sleep(0.3)
        await page.reload()


async def test_tenant_finds_a_dead_job_retries_it_and_watches_it_succeed(
    stack_with_worker, new_page, artifacts: Path
):
    stack, switch = await stack_with_worker(notifications={"max_attempts": 2})
    switch.failing = True
    ok = await stack.enqueue({"to": "ada@example.com", "body": "fine"})
    doomed = await stack.enqueue({"to": "grace@example.com", "body": "your receipt"})
    await wait_status(stack, ok, JobStatus.DEAD)
    await wait_status(stack, doomed, JobStatus.DEAD)
    switch.failing = False
    # one that succeeds, so the list has more than dead jobs
    await wait_status(stack, await stack.enqueue({"to": "linus@example.com"}), JobStatus.SUCCEEDED)

    page = await new_page()
    await log_in(page, stack.server.url, stack.server.tenant_token("acme"))
    await page.click("nav >> text=Jobs")
    await page.select_option("select[name=status]", "dead")
    await page.click("button:has-text('Filter')")
    await expect(page.locator("tr[data-job]")).to_have_count(2)
    await page.click(f"tr[data-job='{doomed}'] td a")
    await page.wait_for_url(re.compile(f"/ui/jobs/{doomed}$"))

    timeline = page.locator(".timeline")
    await expect(timeline.locator(".ev-attempt-failed")).to_have_count(2)
    await expect(timeline).to_contain_text("Attempt 1 of 2: failed")
    await expect(timeline).to_contain_text("SMTP 451: mailbox grace@example.com is unavailable")
    await expect(timeline.locator(".ev-attempt-failed .mono").first).to_contain_text(":")  # worker
    await expect(page.locator("h1 .status")).to_have_text("dead")

    await page.click("button:has-text('Retry now')")
    await expect(page.locator(".alert-ok")).to_contain_text("You retried this job")
    await expect(timeline).to_contain_text("Retried, with a new deadline")
    await reload_until(page, "h1 .status", "succeeded")
    await expect(timeline.locator(".ev-attempt-succeeded")).to_have_count(1)
    await expect(timeline).to_contain_text("Attempt 3 of 3: succeeded")
    await expect(page.locator("[data-test=result]")).to_contain_text("grace@example.com")
    # each attempt's slack is against the deadline it ran under, not the retry's new one
    slacks = await timeline.locator(".ev-attempt-failed .slack").all_inner_texts()
    assert all(s.startswith("+") and "s" in s for s in slacks), slacks
    await page.screenshot(path=str(artifacts / "dashboard-job.png"), full_page=True)


async def test_cancel_from_the_list_then_bulk_retry_after_confirming(
    stack_with_worker, new_page, artifacts: Path
):
    stack, switch = await stack_with_worker(notifications={"max_attempts": 1})
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = await stack.enqueue({"to": "later@example.com"}, run_at=later)
    switch.failing = True
    dead = [await stack.enqueue({"to": f"user{i}@example.com"}) for i in range(3)]
    for job_id in dead:
        await wait_status(stack, job_id, JobStatus.DEAD)
    switch.failing = False

    page = await new_page()
    await log_in(page, stack.server.url, stack.server.tenant_token("acme"))
    await page.goto(stack.server.url + "/ui/jobs?status=pending")
    row = page.locator(f"tr[data-job='{waiting}']")
    await row.locator("button:has-text('Cancel')").click()  # the confirm dialog is accepted
    await expect(page.locator(".alert-ok")).to_contain_text("Cancelled 1 job")
    assert (await stack.client.get(waiting)).status is JobStatus.CANCELLED

    await page.goto(stack.server.url + "/ui/jobs?status=dead")
    await expect(page.locator("tr[data-job]")).to_have_count(3)
    await page.click("[data-test=bulk-retry]")
    await expect(page.locator("h1")).to_have_text("Retry 3 jobs?")
    await page.screenshot(path=str(artifacts / "dashboard-confirm.png"))
    await page.click("[data-test=confirm]")
    await expect(page.locator(".alert-ok")).to_contain_text("Retried 3 jobs")
    for job_id in dead:
        await wait_status(stack, job_id, JobStatus.SUCCEEDED)
    await page.goto(stack.server.url + "/ui/jobs?status=succeeded")
    await expect(page.locator("tr[data-job]")).to_have_count(3)
    await page.goto(stack.server.url + "/ui/jobs")
    await page.screenshot(path=str(artifacts / "dashboard-jobs.png"), full_page=True)


async def test_tenants_see_only_their_own_and_read_only_cannot_act(stack_with_worker, new_page):
    stack, _ = await stack_with_worker()
    url = stack.server.url
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    mine = await stack.enqueue({"to": "mine@example.com"}, run_at=in_an_hour)
    async with httpx.AsyncClient(base_url=url) as api:
        globex = {"Authorization": f"Bearer {stack.server.tenant_token('globex')}"}
        theirs = []
        for i in range(3):
            r = await api.post(
                "/v1/jobs",
                json={
                    "use_case": "notifications",
                    "job_type": EMAIL,
                    "payload": {"to": f"g{i}@x"},
                    "run_at": in_an_hour.isoformat(),
                },
                headers=globex,
            )
            theirs.append(r.json()["job"]["id"])

        page = await new_page()
        await log_in(page, url, stack.server.tenant_token("acme"))
        await reload_until(page, "[data-count=pending]", "1")  # the leader refreshes the counts
        await page.goto(url + "/ui/jobs")
        await expect(page.locator("tr[data-job]")).to_have_count(1)
        await expect(page.locator(f"tr[data-job='{mine}']")).to_have_count(1)
        await page.goto(url + "/ui/jobs?tenant=globex")
        await expect(page.locator("tr[data-job]")).to_have_count(1)  # the filter is not theirs
        response = await page.goto(url + f"/ui/jobs/{theirs[0]}")
        assert response is not None and response.status == 404
        await page.goto(url + "/ui/jobs?q=" + theirs[0])
        await expect(page.locator(".empty-state")).to_contain_text("No job has the id")

        admin = await new_page()
        await log_in(admin, url, stack.server.admin_token)
        await reload_until(admin, "[data-count=pending]", "4")

        ro = await new_page()
        await log_in(ro, url, stack.server.readonly_token)
        await expect(ro.locator(".pill-readonly")).to_be_visible()
        await ro.goto(url + "/ui/jobs")
        await expect(ro.locator("tr[data-job]")).to_have_count(4)
        await expect(ro.locator("button:has-text('Cancel')")).to_have_count(0)
        await expect(ro.locator("[data-test=bulk-cancel]")).to_have_count(0)
        await ro.goto(url + f"/ui/jobs/{mine}")
        await expect(ro.locator(".actions")).to_have_count(0)
        # the page offers nothing, and neither the dashboard nor the API lets it act
        csrf = await ro.locator("input[name=csrf]").first.get_attribute("value")
        refused = await ro.request.post(
            url + f"/ui/jobs/{mine}/cancel", form={"csrf": csrf or ""}, headers={"Origin": url}
        )
        assert refused.status == 403
        readonly = {"Authorization": f"Bearer {stack.server.readonly_token}"}
        r = await api.post(f"/v1/jobs/{mine}/cancel", headers=readonly)
        assert r.status_code == 403
        r = await api.post("/v1/jobs/cancel", json={}, headers=readonly)
        assert r.status_code == 403
    assert (await stack.client.get(mine)).status is JobStatus.PENDING


async def test_a_script_in_a_payload_renders_as_text(stack_with_worker, new_page):
    stack, _ = await stack_with_worker()
    evil = "<script>window.pwned = true; alert('pwned')</script>"
    job_id = await stack.enqueue({"to": "x@example.com", "body": evil}, dedup_key=evil)
    await wait_status(stack, job_id, JobStatus.SUCCEEDED)
    page = await new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, stack.server.url, stack.server.tenant_token("acme"))
    await page.goto(stack.server.url + f"/ui/jobs/{job_id}")
    await expect(page.locator("[data-test=payload]")).to_contain_text(evil)
    await page.goto(stack.server.url + "/ui/jobs")
    await expect(page.locator(f"tr[data-job='{job_id}']")).to_contain_text("<script>")
    assert await page.evaluate("window.pwned") is None
    assert dialogs == []


async def test_overview_screenshot_of_jobs_that_ran(stack_with_worker, new_page, artifacts):
    stack, _ = await stack_with_worker(
        notifications={"capacity": 20, "max_attempts": 2},
        billing={"capacity": 5, "max_attempts": 1},
    )
    now = datetime.now(UTC)
    ids = [await stack.enqueue({"to": f"user{i}@example.com"}) for i in range(40)]
    # behind their deadlines before they start: run_at in the past, a short tolerance
    ids += [
        await stack.enqueue(
            {"to": f"late{i}@example.com"}, run_at=now - timedelta(seconds=20), delay_tolerance=5
        )
        for i in range(5)
    ]
    ids += [await stack.enqueue({"to": f"broken{i}@example.com"}) for i in range(4)]
    billing = [
        (await stack.client.enqueue("billing", EMAIL, {"to": f"inv{i}@example.com"})).job.id
        for i in range(12)
    ]
    await stack.wait_all(ids + billing, timeout=60)
    waiting = datetime.now(UTC) + timedelta(minutes=30)
    for i in range(6):
        await stack.enqueue({"to": f"digest{i}@example.com"}, run_at=waiting)

    page = await new_page()
    await log_in(page, stack.server.url, stack.server.admin_token)
    # the leader rolls finished jobs up a few seconds after they finish; on a loaded machine
    # a slow refresh puts the next one off by ten times its duration (StatsRefresher)
    await reload_until(page, "#uc-notifications [data-count=succeeded]", "45", timeout=90)
    await expect(page.locator("#uc-notifications [data-count=dead]")).to_have_text("4")
    await expect(page.locator("#uc-notifications [data-count=missed]")).not_to_have_text("0")
    await expect(page.locator("#uc-billing [data-count=succeeded]")).to_have_text("12")
    await expect(page.locator(".scheduler-title")).to_contain_text("Scheduler running")
    await page.screenshot(path=str(artifacts / "dashboard-overview.png"), full_page=True)
