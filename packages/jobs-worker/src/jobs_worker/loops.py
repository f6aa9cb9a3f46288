"""Event loops of their own for async handlers, apart from the runtime's loop.

A handler that blocks its loop (`time.sleep`, CPU-bound work, a blocking client) then stalls
only the handlers on that loop, never the runtime's receives, heartbeats, timeouts, reports or
health port. Each handler loop runs a tick; a loop whose tick is late is blocked, and the task
it is running names the job.

Handlers run on one home loop, because handlers keep loop-bound clients (an asyncpg pool, an
httpx client) in module globals, made on the loop they first ran on. While the home loop is
blocked for `block_warn_seconds`, new handlers wait for it (the worker takes no new work
meanwhile: `stalled`), and an attempt that times out waiting is given back, not charged.

With `spares`, new handlers go to a spare loop instead, and back home as soon as it is free
again; spares stop once idle. That keeps a worker's other handlers running through a block,
but only handlers whose clients are made per running loop may run there: a handler on a
spare that touches a client bound to the home loop does not just fail. asyncio's queues and
futures hand out what they hold across loops before they check, so it can take a pooled
connection, leave it mid-operation and break the client for every later handler, the home
loop's too, for the life of the process."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from jobs_worker.errors import JobsWorkerError

__all__ = ["BLAME_AFTER", "Blocked", "HandlerExit", "HandlerLoop", "HandlerLoops"]

logger = logging.getLogger(__name__)

_TICK = 0.1
# a loop late by this much at a handler's timeout is blocked, for deciding who is to blame
BLAME_AFTER = 3 * _TICK


class HandlerExit(JobsWorkerError):
    """A handler raised SystemExit or KeyboardInterrupt: a failure of its attempt, not an
    order for the worker to exit."""


@dataclass(frozen=True, slots=True)
class Blocked:
    loop: HandlerLoop
    job: str | None  # the blocking task's name: the job id, or None between tasks
    seconds: float
    at: float = field(default_factory=time.monotonic)


class _Mailbox:
    """Calls into one event loop from other threads, with one wake-up per batch: under load a
    handler's start and its result cost no self-pipe write each (call_soon_threadsafe does)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._armed = False

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._calls.append((fn, args))
            if self._armed:
                return
            self._armed = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        for fn, args in self.take():
            fn(*args)

    def take(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        with self._lock:
            calls, self._calls, self._armed = list(self._calls), deque(), False
        return calls


@dataclass(eq=False)
class _Submitted:
    coro: Coroutine[Any, Any, Any]
    name: str
    context: contextvars.Context
    out: asyncio.Future[Any]  # on the caller's loop
    back: _Mailbox  # into the caller's loop
    task: asyncio.Task[Any] | None = None


class HandlerLoop:
    """One event loop on a daemon thread (a loop blocked for good must not keep the process
    alive at exit)."""

    def __init__(self, name: str, *, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self._on_stop = on_stop
        self.loop = asyncio.new_event_loop()
        self._inbox = _Mailbox(self.loop)
        self._backs: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        self.pending: set[asyncio.Future[Any]] = set()  # read and written on the caller's loop
        self.last_tick = time.monotonic()
        self.warned: Blocked | None = None  # the current block, once logged
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._tick)
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))  # let the cancellations land
            for _, args in self._inbox.take():
                if args and isinstance(args[0], _Submitted) and args[0].task is None:
                    args[0].coro.close()  # submitted, never started: the loop stopped first
            self.loop.close()

    def _tick(self) -> None:
        self.last_tick = time.monotonic()
        self.loop.call_later(_TICK, self._tick)

    def blocked_for(self) -> float:
        """Seconds the loop has not run its tick for, beyond the tick's own period."""
        return max(0.0, time.monotonic() - self.last_tick - _TICK)

    def running_job(self) -> str | None:
        # read from another thread: the loop's current task, set while a task's step runs
        task = asyncio.current_task(self.loop)
        return task.get_name() if task is not None else None

    def where(self, frames: int = 3) -> str:
        """The innermost frames of the loop's thread: where a blocking handler is."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        if frame is None:
            return ""
        return "".join(traceback.format_stack(frame)[-frames:]).strip()

    def submit(
        self, coro: Coroutine[Any, Any, Any], *, name: str, context: contextvars.Context
    ) -> asyncio.Future[Any]:
        """Run `coro` on this loop as a task named `name`, in `context` (the caller's
        contextvars, e.g. the tracing span). Returns a future of the caller's loop; cancelling
        it cancels the task."""
        caller = asyncio.get_running_loop()
        back = self._backs.get(caller) or self._backs.setdefault(caller, _Mailbox(caller))
        job = _Submitted(coro, name, context, caller.create_future(), back)
        self.pending.add(job.out)
        job.out.add_done_callback(lambda f: self._done(f, job))
        self._inbox.post(self._start, job)
        return job.out

    def _done(self, future: asyncio.Future[Any], job: _Submitted) -> None:
        self.pending.discard(future)
        if future.cancelled():
            self._inbox.post(self._cancel, job)  # after its start: the inbox keeps order

    def _start(self, job: _Submitted) -> None:
        if job.out.cancelled():  # given up on before it started (read across threads: a flag)
            job.coro.close()
            return
        job.task = self.loop.create_task(_contained(job.coro), name=job.name, context=job.context)
        job.task.add_done_callback(lambda t: job.back.post(_settle, t, job.out))

    def _cancel(self, job: _Submitted) -> None:
        if job.task is not None:
            job.task.cancel()

    def stop(self) -> None:
        """Run `on_stop` on the loop (e.g. close the clients opened there), then stop it."""
        if not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._final(), self.loop)

    async def _final(self) -> None:
        try:
            if self._on_stop is not None:
                await self._on_stop()
        except Exception:
            logger.exception("closing a handler loop failed", extra={"loop": self.name})
        finally:
            self.loop.stop()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


async def _contained(coro: Coroutine[Any, Any, Any]) -> Any:
    # SystemExit and KeyboardInterrupt escape asyncio's tasks and would end the loop's thread
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerExit(f"handler raised {type(exc).__name__}({exc})") from exc


def _settle(task: asyncio.Task[Any], out: asyncio.Future[Any]) -> None:
    """On the caller's loop: the finished task's result, unless the caller gave up first."""
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif (exc := task.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(task.result())


class HandlerLoops:
    """The loop new async handlers go to (`current`): the home loop, or with `spares`, while
    it is blocked, a spare one; and the spares still busy."""

    def __init__(
        self,
        *,
        block_warn_seconds: float = 2.0,
        spares: bool = False,
        max_loops: int = 8,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.block_warn_seconds = block_warn_seconds
        self.spares = spares
        self._on_stop = on_stop
        self._max_loops = max(1, max_loops)
        self._made = 0
        self.home = self._new()
        self.current = self.home
        self._spares: list[HandlerLoop] = []

    def _new(self) -> HandlerLoop:
        self._made += 1
        return HandlerLoop(f"jobs-handler-loop-{self._made}", on_stop=self._on_stop)

    @property
    def loops(self) -> list[HandlerLoop]:
        return [self.home, *self._spares]

    def submit(
        self, coro: Coroutine[Any, Any, Any], *, name: str, context: contextvars.Context
    ) -> tuple[HandlerLoop, asyncio.Future[Any]]:
        loop = self.current
        return loop, loop.submit(coro, name=name, context=context)

    def blocked(self, loop: HandlerLoop, *, at_least: float | None = None) -> Blocked | None:
        """The loop's block if it has lasted `at_least` seconds (default: block_warn_seconds)."""
        seconds = loop.blocked_for()
        if seconds < (self.block_warn_seconds if at_least is None else at_least):
            return None
        return Blocked(loop=loop, job=loop.running_job(), seconds=seconds)

    @property
    def stalled(self) -> bool:
        """The loop new handlers go to is blocked (without spares: the home loop; with them:
        every loop, and no room for another): the worker should take no new work."""
        return self.current.warned is not None

    def check(self) -> list[Blocked]:
        """The watchdog's round: log blocked loops (once per block); with spares, send new
        handlers to the first loop that is not blocked (home first; a new spare when every loop
        is blocked and there is room), and stop idle spares."""
        found = [b for loop in self.loops if (b := self.blocked(loop)) is not None]
        for b in found:
            self._warn(b)
        for loop in self.loops:
            if loop.warned is not None and loop.blocked_for() < self.block_warn_seconds:
                self._recovered(loop, loop.warned)
        if not self.spares:
            return found
        blocked = {id(b.loop) for b in found}
        free = next((loop for loop in self.loops if id(loop) not in blocked), None)
        if free is None and len(self.loops) < self._max_loops:
            free = self._new()
            self._spares.append(free)
        if free is not None:
            self.current = free
        self._stop_idle_spares()
        return found

    def _recovered(self, loop: HandlerLoop, block: Blocked) -> None:
        loop.warned = None
        # the tick that ran again ends the block; it began `block.seconds` before it was seen
        seconds = loop.last_tick - (block.at - block.seconds)
        logger.info(
            "handler event loop runs again",
            extra={"job_id": block.job, "blocked_seconds": round(seconds, 1), "loop": loop.name},
        )

    def _warn(self, b: Blocked) -> None:
        if b.loop.warned is not None:
            return
        b.loop.warned = b
        logger.warning(
            "handler is blocking its event loop",
            extra={
                "job_id": b.job,
                "blocked_seconds": round(b.seconds, 1),
                "loop": b.loop.name,
                "where": b.loop.where(),
                "meanwhile": "new handlers go to a spare loop"
                if self.spares
                else "new handlers wait for it; no new work is taken",
            },
        )

    def _stop_idle_spares(self) -> None:
        for loop in list(self._spares):
            if loop is not self.current and not loop.pending and loop.blocked_for() == 0.0:
                loop.stop()
                self._spares.remove(loop)

    def close(self, timeout: float = 1.0) -> None:
        for loop in self.loops:
            loop.stop()
        for loop in self.loops:
            loop.join(timeout)
