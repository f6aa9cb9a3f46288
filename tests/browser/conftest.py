"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium, which
`.ci/browser` installs) against a live jobs-server on loopback, with a scheduler on moto SQS and
a worker in this process, so the jobs on the pages really ran."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from pydantic import BaseModel

from jobs_worker import JobContext, Registry, Worker
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import EMAIL, MakeStack, Stack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

make_stack = harness.make_stack  # the fixture

if not CHROMIUM.exists():  # pragma: no cover - .ci/browser installs it
    pytest.skip("no /usr/bin/chromium: run .ci/browser", allow_module_level=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        await b.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[[], Awaitable[Page]]]:
    contexts = []

    async def make() -> Page:
        context = await browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        return page

    yield make
    for c in contexts:
        await c.close()


async def log_in(page: Page, server_url: str, token: str) -> None:
    await page.goto(server_url + "/ui")
    await page.fill("#token", token)
    await page.click("button:has-text('Log in')")
    await page.wait_for_url(server_url + "/ui")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Email(BaseModel):
    to: str
    body: str = ""


class Switch:
    """Handlers fail while `failing` is on: a job dies, then succeeds after a retry."""

    def __init__(self) -> None:
        self.failing = False


def registry(switch: Switch) -> Registry:
    reg = Registry()

    @reg.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> dict[str, Any]:
        if switch.failing or payload.to.startswith("broken"):
            raise RuntimeError(f"SMTP 451: mailbox {payload.to} is unavailable")
        await asyncio.sleep(0.02)
        return {"sent_to": payload.to, "message_id": f"m-{ctx.attempt}"}

    return reg


@pytest.fixture
async def stack_with_worker(
    make_stack: MakeStack,
) -> AsyncIterator[Callable[..., Awaitable[tuple[Stack, Switch]]]]:
    """Factory: a server with its scheduler, and a worker running in the background."""
    running: list[tuple[Worker, asyncio.Task[Any]]] = []

    async def make(**use_cases: dict[str, Any]) -> tuple[Stack, Switch]:
        stack = await make_stack(use_cases=use_cases or {"notifications": {}})
        switch = Switch()
        worker = await stack.worker(registry(switch), poll_seconds=0.2)
        running.append((worker, asyncio.create_task(worker.run())))
        return stack, switch

    yield make
    for worker, task in running:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
