"""One NOTIFY statement for what a process has to announce at once.

After a commit the server announces on two channels (jobs_server.wakeups for the scheduler,
jobs_server.events for the event streams): an enqueue, a report or a claim would cost two
autocommit statements, each a round trip and a transaction of its own. The senders hand their
payloads to one Notifier: those handed over in the same turn of the event loop, and those that
arrive while a statement is in flight, go together in the next statement (store.notify_all).
At low load that halves the NOTIFY transactions a job costs."""

from __future__ import annotations

import asyncio

from jobs_server.store.base import EnqueueStore

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, store: EnqueueStore) -> None:
        self._store = store
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def notify(self, channel: str, payload: str) -> None:
        """Sent with whatever else is pending; raises what the statement raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((channel, payload, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the other senders of this turn join
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.notify_all([(c, p) for c, p, _ in batch])
            except Exception as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
