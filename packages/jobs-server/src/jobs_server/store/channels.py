"""What the database announces, and on which channel: the NOTIFY channels the server's
processes LISTEN on, and the payload that carries job ids. They live with the store because
statements and triggers send on them too (jobs_follow_ends, migration 0018), and both stores
keep the same rules; jobs_server.events and jobs_server.wakeups send on them after commits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from uuid import UUID

__all__ = ["EVENTS_CHANNEL", "MAX_PAYLOAD_BYTES", "WAKEUP_CHANNEL", "id_payloads", "parse_ids"]

EVENTS_CHANNEL = "jobs_events"  # job ids whose status changed (the event streams)
WAKEUP_CHANNEL = "jobs_wakeup"  # the scheduler: jobs to claim, or slots freed
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999
_ID_CHARS = 32  # a UUID as hex, no dashes


def id_payloads(ids: Iterable[UUID], *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Iterator[str]:
    """The ids as NOTIFY payloads of at most `max_bytes`: hex ids separated by commas."""
    per = max(1, (max_bytes + 1) // (_ID_CHARS + 1))
    batch: list[str] = []
    for job_id in ids:
        batch.append(job_id.hex)
        if len(batch) == per:
            yield ",".join(batch)
            batch = []
    if batch:
        yield ",".join(batch)


def parse_ids(payload: str) -> list[UUID]:
    """The ids of one payload; anything that is not an id is skipped (a NOTIFY on our channel
    from elsewhere must not break the listener)."""
    out = []
    for part in payload.split(","):
        try:
            out.append(UUID(hex=part))
        except ValueError:
            continue
    return out
