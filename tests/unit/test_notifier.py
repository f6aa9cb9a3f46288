"""One NOTIFY statement for what a process announces at once: a commit's wake-up and its
events go together, and what arrives while a statement is in flight goes in the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

from jobs_server.clock import ManualClock
from jobs_server.events import EventSender
from jobs_server.notify import Notifier
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.wakeups import WakeupSender


class CountingStore(InMemoryJobStore):
    def __init__(self) -> None:
        super().__init__(ManualClock(datetime(2030, 1, 1, tzinfo=UTC)))
        self.statements: list[list[tuple[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def notify_all(self, notes: Sequence[tuple[str, str]]) -> None:
        self.statements.append(list(notes))
        if self.gate is not None:
            await self.gate.wait()
        await super().notify_all(notes)


async def test_a_commits_wake_up_and_events_go_in_one_statement() -> None:
    store = CountingStore()
    notifier = Notifier(store)
    wakeups = WakeupSender(store, notifier=notifier)
    events = EventSender(store, notifier=notifier)
    job = uuid4()
    # what the enqueue path does after its commit
    wakeups.enqueued({"uc"}, store.clock.now())
    events.changed([job])
    await wakeups.close()
    await events.close()
    await notifier.close()
    assert len(store.statements) == 1
    assert sorted(c for c, _ in store.statements[0]) == ["jobs_events", "jobs_wakeup"]
    assert (await _ids(store.statements[0])) == [job]


async def test_notes_arriving_during_a_statement_go_together_in_the_next() -> None:
    store = CountingStore()
    store.gate = asyncio.Event()
    notifier = Notifier(store)
    first = asyncio.create_task(notifier.notify("a", "1"))
    while not store.statements:
        await asyncio.sleep(0)
    later = [asyncio.create_task(notifier.notify("a", str(i))) for i in (2, 3)]
    await asyncio.sleep(0)
    assert len(store.statements) == 1  # the others wait for the one in flight
    store.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), timeout=30)
    assert store.statements == [[("a", "1")], [("a", "2"), ("a", "3")]]


async def test_a_failed_statement_reaches_each_sender() -> None:
    class Down(CountingStore):
        async def notify_all(self, notes: Sequence[tuple[str, str]]) -> None:
            raise ConnectionError("database down")

    notifier = Notifier(Down())
    results = await asyncio.gather(
        notifier.notify("a", "1"), notifier.notify("b", "2"), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)


async def _ids(notes: list[tuple[str, str]]) -> list[object]:
    from jobs_server.events import parse_ids

    return [i for c, p in notes if c == "jobs_events" for i in parse_ids(p)]
