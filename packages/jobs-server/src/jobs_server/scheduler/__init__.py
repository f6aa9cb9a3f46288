"""The deadline scheduler: one leader among the running copies claims due jobs
earliest-deadline-first within each use case's capacity and publishes them, reaps expired
leases, prunes what has outlived its retention and keeps the dashboard's statistics.

Each of those is a small service with `async def run_once(now) -> result` and no loop of its
own, each tested alone with a chosen `now`:

- `Elector` takes and renews the leader lease (every third of its TTL) and resigns it;
- `Dispatcher` claims and publishes (claims of the next batch pipelined with publishing the
  last), gives back the claims of a failed publish, adds to the dashboard's rollup; a payload
  that would not fit the publisher's `max_message_bytes` is left out of the message;
- `Reaper` fails expired leases through the server's one OutcomeService;
- `Expirer` ends expired (miss policy expire) the pending jobs past their deadline plus grace,
  on every pass right before the dispatcher's claims;
- `PeriodicJobs` turns schedules' due ticks into jobs, each in the transaction that moves its
  schedule on, through the enqueue rules;
- `Pruner` deletes finished jobs, idempotency keys and old statistics;
- `StatsRefresher` (jobs_server.stats) and `QueueDepthRefresher` (jobs_server.metrics) write
  the dashboard's tables and the queue-depth gauges.

`Scheduler` is the thin loop around them. While the elector holds the lease, each step runs
the expirer and dispatches (on every wake-up or tick), then runs every service whose period
has passed, judged by the injected `Clock`: a test moves a `ManualClock` and calls
`await scheduler.step()` (or `run_due(now)`) without sleeping. Between steps the leader sleeps
until a wake-up (NOTIFY), the tick or the next known run_at, and goes again at once after a
full batch; a standby only tries to take the lease, once per election period (a third of the
TTL, jittered), and ignores wake-ups. A failed step backs off, with jitter, up to a cap;
wake-ups do not cut that short. On stop, the leader resigns.

A new service plugs in as one more entry, built in `jobs_server.wiring.build_scheduler` (the
builder `serve`, `scheduler` and `dev` share) or added to a built scheduler::

    scheduler.add(PeriodicJobs(store, config), every=1.0)  # foreground: awaited in the step
    scheduler.add(Report(store), every=60.0, background=True)  # a task of its own

A foreground service's failure fails the step (and backs off); a background one's is logged.
"""

from jobs_server.stats import SchedulerStats

from .dispatcher import (
    Dispatched,
    Dispatcher,
    Pack,
    PublishFailed,
    embed_limit,
    message_body,
    pack_messages,
)
from .elector import Elector, new_holder_id
from .expirer import Expired, Expirer
from .loop import DispatchService, Every, Scheduler, SchedulerConfig, Service
from .periodic import PeriodicJobs, Ticked
from .pruner import Pruned, Pruner
from .reaper import Reaped, Reaper

__all__ = [
    "DispatchService",
    "Dispatched",
    "Dispatcher",
    "Elector",
    "Every",
    "Expired",
    "Expirer",
    "Pack",
    "PeriodicJobs",
    "Pruned",
    "Pruner",
    "PublishFailed",
    "Reaped",
    "Reaper",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
    "Service",
    "Ticked",
    "embed_limit",
    "message_body",
    "new_holder_id",
    "pack_messages",
]
