"""`jobs`: the operator's command line over jobs-sdk (`pip install 'jobs-sdk[cli]'`).

    jobs enqueue notifications notifications.send_email '{"to": "ada@example.com"}'
    jobs list --status dead --use-case billing
    jobs retry --status dead --use-case billing      # counts, asks, then retries them all
    jobs get 0193...   jobs cancel 0193...   jobs count --status pending
    jobs pause --use-case billing --reason "ledger migration"   jobs resume --use-case billing

The server and token come from --url/--token, else JOBS_URL/JOBS_TOKEN, else a profile of
~/.config/jobs/profiles.toml (--profile or JOBS_PROFILE; `default` otherwise). Output is for
people; --json prints the API's JSON for scripts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from jobs_schema import (
    BulkAction,
    BulkResult,
    Job,
    JobFilter,
    JobStatus,
    MissedTickPolicy,
    MissPolicy,
    PauseState,
    SchedulePage,
)
from jobs_sdk._profiles import Connection, ProfileError, resolve
from jobs_sdk.client import SyncJobsClient
from jobs_sdk.errors import JobsError
from jobs_sdk.schedules import ScheduleOptions

try:
    import typer
except ImportError:  # pragma: no cover - the base install has no typer
    sys.exit("the jobs command needs its extra: pip install 'jobs-sdk[cli]'")

__all__ = ["app", "main"]

app = typer.Typer(
    name="jobs",
    help="Enqueue, inspect, cancel and retry jobs of a jobs-server; pause and resume queues.",
    no_args_is_help=True,
    add_completion=False,
)

_JOBS = TypeAdapter(list[Job])


class _State:
    """One invocation's global options; resolved only by a command that connects, so that
    `--help` works anywhere."""

    url: str | None = None
    token: str | None = None
    profile: str | None = None
    as_json: bool = False


_state = _State()


@app.callback()
def _options(
    url: Annotated[str | None, typer.Option(help="the server's URL (env JOBS_URL)")] = None,
    token: Annotated[str | None, typer.Option(help="a bearer token (env JOBS_TOKEN)")] = None,
    profile: Annotated[
        str | None, typer.Option(help="a profile of the profiles file (env JOBS_PROFILE)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, for scripts")] = False,
) -> None:
    _state.url, _state.token, _state.profile = url, token, profile
    _state.as_json = as_json


def main() -> None:
    app()


# -- arguments shared by several commands ---------------------------------------------------

Yes = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


def _filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with an option per jobs_schema.JobFilter field (type and help from the model)
    in place of its `filters` parameter, which gets the options given."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "filters"]
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[_parsed_as(field.annotation) | None, _option(field)],
        )
        for name, field in JobFilter.model_fields.items()
    ]

    @functools.wraps(command)
    def with_filters(*args: Any, **values: Any) -> None:
        given = {name: values.pop(name) for name in JobFilter.model_fields}
        command(*args, filters=_filters(**given), **values)

    parameters = own + options
    with_filters.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_filters.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_filters


def _option(field: FieldInfo) -> Any:
    return typer.Option(help=field.description)


def _parsed_as(annotation: Any) -> type:
    """What the command line parses a JobFilter field as: its enum, else text that the model
    checks (times too: ISO 8601 with a zone, which typer's datetime does not take)."""
    for arg in _flattened(annotation):
        if isinstance(arg, type) and issubclass(arg, StrEnum):
            return arg
    return str


def _flattened(annotation: Any) -> Iterator[Any]:
    if get_origin(annotation) is Annotated:
        yield from _flattened(get_args(annotation)[0])
    elif get_args(annotation):
        for arg in get_args(annotation):
            yield from _flattened(arg)
    else:
        yield annotation


def _filters(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# -- commands --------------------------------------------------------------------------------


@app.command()
def enqueue(
    use_case: str,
    job_type: str,
    payload: Annotated[
        str, typer.Argument(help="the payload: JSON, @file.json, or - for stdin")
    ] = "{}",
    delay_tolerance: Annotated[
        float | None, typer.Option(help="seconds after run_at the job may start")
    ] = None,
    run_at: Annotated[datetime | None, typer.Option(help="not before (ISO 8601)")] = None,
    deadline: Annotated[datetime | None, typer.Option(help="start by (ISO 8601)")] = None,
    priority: Annotated[int, typer.Option(help="-1000..1000, higher first")] = 0,
    dedup_key: Annotated[str | None, typer.Option(help="one active job per key")] = None,
    unique: Annotated[
        str | None,
        typer.Option(
            help='a uniqueness rule (JSON), e.g. \'{"key": "k", "window": "enqueued", '
            '"seconds": 3600}\''
        ),
    ] = None,
    concurrency_key: Annotated[
        str | None, typer.Option(help="at most the use case's limit of its jobs run at once")
    ] = None,
    rate_key: Annotated[
        str | None, typer.Option(help="its jobs start at most at the use case's rate")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="1..1000")] = None,
    miss_policy: Annotated[
        MissPolicy | None,
        typer.Option(help="past its deadline: run_late, or expire after the grace"),
    ] = None,
    expire_grace: Annotated[
        float | None,
        typer.Option(help="with expire: seconds past the deadline it may still start, 0..2592000"),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="makes a rerun safe")] = None,
) -> None:
    """Enqueue one job."""
    body = _payload(payload)
    rule = _unique_rule(unique) if unique is not None else None
    with _client() as jobs:
        created = jobs.enqueue(
            use_case,
            job_type,
            body,
            delay_tolerance=delay_tolerance,
            run_at=run_at,
            deadline=deadline,
            priority=priority,
            dedup_key=dedup_key,
            unique=rule,
            concurrency_key=concurrency_key,
            rate_key=rate_key,
            max_attempts=max_attempts,
            miss_policy=miss_policy,
            expire_grace=expire_grace,
            idempotency_key=idempotency_key,
        )
    if _print_json(created):
        return
    job = created.job
    verb = "already enqueued (dedup key)" if created.deduplicated else "enqueued"
    typer.echo(f"{verb} {job.id}: {job.status.value}, deadline {_when(job.deadline)}")


@app.command()
def get(job_id: str) -> None:
    """Show one job with its attempts."""
    with _client() as jobs:
        job = jobs.get(job_id)
    if not _print_json(job):
        typer.echo(_job_details(job))


@app.command()
def wait(
    job_id: str,
    timeout: Annotated[float, typer.Option(min=0, max=86_400, help="seconds")] = 60.0,
) -> None:
    """Wait until the job has finished (following its event stream), then show it."""
    with _client() as jobs:
        job = jobs.wait(job_id, timeout=timeout)
    if not _print_json(job):
        typer.echo(_job_details(job))


@app.command()
def events(
    use_case: Annotated[str | None, typer.Option(help="only this use case")] = None,
    job_type: Annotated[str | None, typer.Option(help="only this job type")] = None,
    status: Annotated[
        list[JobStatus] | None, typer.Option(help="only these statuses (repeatable)")
    ] = None,
) -> None:
    """Print the changes of the tenant's jobs as they happen, a line each (Ctrl-C stops)."""
    with _client() as jobs:
        stream = jobs.events(use_case=use_case, job_type=job_type, status=status or ())
        for event in stream:
            if _state.as_json:
                typer.echo(event.model_dump_json())
            elif event.job is not None:
                j = event.job
                typer.echo(f"{j.updated_at.isoformat()} {j.id} {j.status.value} {j.job_type}")
            elif event.notice is not None:
                typer.echo(f"{event.kind.value}: {event.notice.message}")


@app.command("list")
@_filter_options
def list_jobs(
    filters: dict[str, Any],
    limit: Annotated[int, typer.Option(min=1, help="show at most this many")] = 20,
) -> None:
    """List jobs, newest first."""
    with _client() as jobs:
        found = list(islice(jobs.list(page_size=min(limit, 500), **filters), limit))
    if _state.as_json:
        typer.echo(_JOBS.dump_json(found, indent=2).decode())
        return
    typer.echo(_table(found) if found else "no jobs match")


@app.command()
@_filter_options
def count(
    filters: dict[str, Any],
    action: Annotated[
        BulkAction | None, typer.Option(help="count only the jobs this action would change")
    ] = None,
) -> None:
    """Count the jobs matching the filters."""
    with _client() as jobs:
        counted = jobs.count(action=action, **filters)
    if not _print_json(counted):
        typer.echo(str(counted.count))


def _bulk_command(action: BulkAction, doc: str) -> Callable[..., None]:
    """The `cancel` or `retry` command: one job by id, or every job the filters match."""

    def command(
        filters: dict[str, Any],
        job_id: Annotated[
            str | None, typer.Argument(help="one job; or filter with the options")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, help="touch at most this many")] = 10_000,
        yes: Yes = False,
    ) -> None:
        _act(action, job_id, filters, limit=limit, yes=yes)

    command.__doc__ = doc
    return _filter_options(command)


app.command("cancel")(
    _bulk_command(
        BulkAction.CANCEL,
        "Cancel one job (pending: at once; running: marked), or every job matching filters.",
    )
)
app.command("retry")(
    _bulk_command(
        BulkAction.RETRY,
        "Retry one dead, cancelled or expired job now, or every one matching filters.",
    )
)


# -- pauses ----------------------------------------------------------------------------------

UseCaseOption = Annotated[str | None, typer.Option(help="a use case (omitted: every use case)")]
TenantOption = Annotated[
    str | None, typer.Option(help="a tenant (omitted: every tenant; a tenant token: its own)")
]
ReasonOption = Annotated[str | None, typer.Option(help="why, recorded with the change")]


@app.command()
def pause(
    use_case: UseCaseOption = None, tenant: TenantOption = None, reason: ReasonOption = None
) -> None:
    """Stop claiming a use case's, a tenant's, or a tenant's jobs in one use case; running ones
    finish. Pausing a paused scope changes nothing."""
    with _client() as jobs:
        state = jobs.pauses.pause(use_case=use_case, tenant=tenant, reason=reason)
    if not _print_json(state):
        typer.echo(_pause_summary(state))


@app.command()
def resume(
    use_case: UseCaseOption = None, tenant: TenantOption = None, reason: ReasonOption = None
) -> None:
    """Claim a paused scope's jobs again, earliest deadline first."""
    with _client() as jobs:
        state = jobs.pauses.resume(use_case=use_case, tenant=tenant, reason=reason)
    if not _print_json(state):
        typer.echo(_pause_summary(state))


@app.command()
def pauses() -> None:
    """List what is paused (a tenant token: what stops its jobs)."""
    with _client() as jobs:
        found = jobs.pauses.list()
    if _print_json(found):
        return
    if not found.pauses:
        typer.echo("nothing is paused")
    for p in found.pauses:
        typer.echo(f"{_scope(p)}: paused by {p.changed_by} at {_when(p.changed_at)}{_why(p)}")


def _scope(p: PauseState) -> str:
    use_case = f"use case {p.use_case}" if p.use_case else "every use case"
    return f"{use_case}, {f'tenant {p.tenant}' if p.tenant else 'every tenant'}"


def _why(p: PauseState) -> str:
    return f" ({p.reason})" if p.reason else ""


def _pause_summary(p: PauseState) -> str:
    state = "paused" if p.paused else "running"
    if not p.changed:
        return f"{_scope(p)}: already {state}"
    return f"{_scope(p)}: {state} (by {p.changed_by} at {_when(p.changed_at)}){_why(p)}"


# -- schedules -------------------------------------------------------------------------------

schedules_app = typer.Typer(
    help="Periodic jobs: list, create, pause, resume and delete schedules.", no_args_is_help=True
)
app.add_typer(schedules_app, name="schedules")


@schedules_app.command("list")
def list_schedules() -> None:
    """List the schedules with their last and next run."""
    with _client() as jobs:
        found = jobs.schedules.list()
    if _state.as_json:
        typer.echo(SchedulePage(items=found).model_dump_json(indent=2))
        return
    for s in found:
        when = s.cron + f" ({s.timezone})" if s.cron else f"every {s.interval_seconds}s"
        nxt = "paused" if s.paused else _when(s.next_run_at)
        typer.echo(
            f"{s.name}\t{when}\t{s.use_case}/{s.job_type}\tlast {_when(s.last_run_at)}\tnext {nxt}"
        )
    if not found:
        typer.echo("no schedules")


@schedules_app.command("create")
def create_schedule(
    name: str,
    use_case: Annotated[str, typer.Option(help="a configured use case")],
    job_type: Annotated[str, typer.Option(help="one of the use case's job types")],
    cron: Annotated[str | None, typer.Option(help="e.g. '30 2 * * *'")] = None,
    interval: Annotated[int | None, typer.Option(help="seconds between ticks")] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone of the cron expression")] = "UTC",
    payload: Annotated[str, typer.Option(help="JSON object, @file or - for stdin")] = "{}",
    missed: Annotated[MissedTickPolicy, typer.Option(help="what missed ticks become")] = (
        MissedTickPolicy.SKIP
    ),
) -> None:
    """Create a schedule for the token's tenant: give --cron or --interval."""
    options: ScheduleOptions = {"timezone": timezone, "payload": _payload(payload)}
    options["missed"] = missed
    if cron is not None:
        options["cron"] = cron
    if interval is not None:
        options["interval_seconds"] = interval
    with _client() as jobs:
        created = jobs.schedules.create(name, use_case=use_case, job_type=job_type, **options)
    if not _print_json(created):
        typer.echo(f"created {created.name}: next run {_when(created.next_run_at)}")


def _schedule_command(verb: str, doc: str) -> Callable[[str], None]:
    def command(name: str) -> None:
        with _client() as jobs:
            if verb == "delete":
                jobs.schedules.delete(name)
                typer.echo(f"deleted {name}")
                return
            done = jobs.schedules.pause(name) if verb == "pause" else jobs.schedules.resume(name)
        if not _print_json(done):
            state = "paused" if done.paused else f"next run {_when(done.next_run_at)}"
            typer.echo(f"{name}: {state}")

    command.__doc__ = doc
    return command


schedules_app.command("pause")(_schedule_command("pause", "Pause a schedule."))
schedules_app.command("resume")(_schedule_command("resume", "Resume a schedule at its next tick."))
schedules_app.command("delete")(_schedule_command("delete", "Delete a schedule."))


# -- the outbox ------------------------------------------------------------------------------

outbox_app = typer.Typer(
    help="The transactional outbox (jobs_sdk.outbox): create its table, run its relay.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")

DatabaseUrl = Annotated[
    str,
    typer.Option(
        envvar="JOBS_OUTBOX_DATABASE_URL",
        help="your PostgreSQL database, where the outbox table is (env JOBS_OUTBOX_DATABASE_URL)",
    ),
]
Table = Annotated[str, typer.Option(help="the outbox table, optionally schema.table")]


@outbox_app.command("init")
def outbox_init(database_url: DatabaseUrl, table: Table = "jobs_outbox") -> None:
    """Create the outbox table and its indexes if they are missing."""
    from jobs_sdk.outbox.run import create_table

    asyncio.run(create_table(database_url, table))
    typer.echo(f"outbox table {table} is ready")


@outbox_app.command("relay")
def outbox_relay(
    database_url: DatabaseUrl,
    table: Table = "jobs_outbox",
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="rows a request")] = 500,
    orphan_after: Annotated[
        float, typer.Option(min=0, help="seconds before another relay's unfinished batch is resent")
    ] = 30.0,
    once: Annotated[bool, typer.Option(help="drain the outbox once, then exit")] = False,
) -> None:
    """Send the outbox's rows to the server until SIGTERM (or, with --once, until empty)."""
    from jobs_sdk.outbox.run import relay

    connection = _connection()
    options = {"batch_size": batch_size, "orphan_after": orphan_after}
    try:
        done = asyncio.run(relay(database_url, table, connection, once=once, **options))
    except JobsError as exc:
        _fail(str(exc))
    if done is None:
        return
    if _state.as_json:
        typer.echo(json.dumps(dataclasses.asdict(done)))
    else:
        typer.echo(f"{done.sent} sent, {done.requeued} put back, {done.failed} refused for good")


# -- actions ---------------------------------------------------------------------------------


def _act(
    action: BulkAction, job_id: str | None, filters: dict[str, Any], *, limit: int, yes: bool
) -> None:
    if job_id is not None:
        if filters:
            _fail("give a job id or filters, not both", code=2)
        _act_on_one(action, job_id)
        return
    if not filters:
        _fail(f"{action.value} what? give a job id, or filters such as --status", code=2)
    with _client() as jobs:
        result = _act_on_many(jobs, action, filters, limit=limit, yes=yes)
    if result is not None and not _print_json(result):
        typer.echo(_bulk_summary(result))


def _act_on_one(action: BulkAction, job_id: str) -> None:
    with _client() as jobs:
        job = jobs.cancel(job_id) if action is BulkAction.CANCEL else jobs.retry(job_id)
    if _print_json(job):
        return
    marked = " (marked: it ends cancelled when its worker stops)" if job.cancel_requested else ""
    typer.echo(f"{job.id}: {job.status.value}{marked}")


def _act_on_many(
    jobs: SyncJobsClient, action: BulkAction, filters: dict[str, Any], *, limit: int, yes: bool
) -> BulkResult | None:
    """Count first, confirm, then act on the jobs counted (max_id keeps newer ones out)."""
    counted = jobs.count(action=action, **filters)
    if counted.count == 0:
        if not _print_json(BulkResult(action=action, touched=0, more=False)):
            typer.echo(f"no job matches that {action.value} can change")
        return None
    if not yes:
        shown = min(counted.count, limit)
        typer.confirm(f"{action.value} {shown} of {counted.count} matching jobs?", abort=True)
    selection = {**filters, "max_id": counted.max_id, "limit": limit}
    bulk = jobs.cancel_where if action is BulkAction.CANCEL else jobs.retry_where
    return bulk(**selection)


def _bulk_summary(result: BulkResult) -> str:
    done = "cancelled or marked" if result.action is BulkAction.CANCEL else "retried"
    lines = [f"{result.touched} jobs {done}"]
    if result.skipped:
        lines.append(f"{result.skipped} skipped (over the quota, or their dedup key is taken)")
    if result.more:
        lines.append("more match: run it again, or raise --limit")
    return "\n".join(lines)


# -- input and output ------------------------------------------------------------------------


@contextmanager
def _client() -> Iterator[SyncJobsClient]:
    connection = _connection()
    try:
        with SyncJobsClient(connection.url, connection.token) as jobs:
            yield jobs
    except JobsError as exc:
        _fail(str(exc))


def _connection() -> Connection:
    try:
        return resolve(url=_state.url, token=_state.token, profile=_state.profile)
    except ProfileError as exc:
        _fail(str(exc), code=2)


def _payload(text: str) -> dict[str, Any]:
    raw = _read_payload(text)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f'the payload is not JSON ({exc}); pass an object, e.g. \'{{"to": "a@b.c"}}\'')
    if not isinstance(value, dict):
        _fail(f"the payload must be a JSON object, not {type(value).__name__}")
    return value


def _rule(job: Job) -> str:
    """The job's uniqueness window past active, as JSON without its key (the dedup key)."""
    if job.unique is None:
        return "-"
    return job.unique.model_dump_json(exclude={"key"}, exclude_none=True)


def _unique_rule(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f'--unique is not JSON ({exc}); pass an object, e.g. \'{{"key": "k"}}\'')
    if not isinstance(value, dict):
        _fail(f"--unique must be a JSON object, not {type(value).__name__}")
    return value


def _read_payload(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text()
        except OSError as exc:
            _fail(f"cannot read the payload file: {exc}")
    return text


def _print_json(model: BaseModel) -> bool:
    if _state.as_json:
        typer.echo(model.model_dump_json(indent=2))
    return _state.as_json


def _fail(message: str, *, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


_COLUMNS: Sequence[tuple[str, Callable[[Job], str]]] = (
    ("ID", lambda j: str(j.id)),
    ("STATUS", lambda j: j.status.value + ("*" if j.cancel_requested else "")),
    ("USE CASE", lambda j: j.use_case),
    ("JOB TYPE", lambda j: j.job_type),
    ("ATTEMPTS", lambda j: f"{j.attempts}/{j.max_attempts}"),
    ("DEADLINE", lambda j: _when(j.deadline) + (" missed" if j.deadline_missed else "")),
    ("CREATED", lambda j: _when(j.created_at)),
)


def _table(jobs: Sequence[Job]) -> str:
    rows = [[name for name, _ in _COLUMNS]] + [[cell(j) for _, cell in _COLUMNS] for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _job_details(job: Job) -> str:
    fields = [
        ("id", str(job.id)),
        ("status", job.status.value + (" (cancel requested)" if job.cancel_requested else "")),
        ("tenant", job.tenant),
        ("use case", job.use_case),
        ("job type", job.job_type),
        ("priority", str(job.priority)),
        ("run at", _when(job.run_at)),
        ("deadline", _when(job.deadline) + (" (missed)" if job.deadline_missed else "")),
        ("expires at", _when(job.expires_at) if job.expires_at else "- (runs late)"),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("dedup key", job.dedup_key or "-"),
        (
            "unique",
            job.unique.model_dump_json(exclude={"key"}, exclude_none=True) if job.unique else "-",
        ),
        ("concurrency key", job.concurrency_key or "-"),
        ("rate key", job.rate_key or "-"),
        ("created", _when(job.created_at)),
        ("finished", _when(job.finished_at)),
        ("payload", json.dumps(job.payload)),
        ("result", json.dumps(job.result)),
        ("last error", job.last_error or "-"),
    ]
    lines = [f"{name:<11} {value}" for name, value in fields]
    for a in job.history or []:
        error = f" {a.error_type}: {a.error_message}" if a.error_type else ""
        worker = a.worker_id or "-"
        lines.append(f"attempt {a.attempt}: {a.outcome.value} on {worker}{error}")
    return "\n".join(lines)
