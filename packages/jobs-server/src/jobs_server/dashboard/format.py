"""How times, durations and slack read on the pages (Jinja filters)."""

from __future__ import annotations

import json
from datetime import datetime

from jobs_schema import Job, UniqueWindow

__all__ = ["DASH", "MINUS", "ago", "duration", "pretty_json", "signed", "timestamp", "uniqueness"]

MINUS = "\u2212"  # a real minus sign, as wide as the plus
DASH = "\u2013"  # for a value there is none of


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = abs(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 36 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def signed(seconds: float | None) -> str:
    """Slack: +12 s ahead of the deadline, minus 3 s behind it."""
    if seconds is None:
        return DASH
    return ("+" if seconds >= 0 else MINUS) + duration(seconds)


def ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return DASH
    delta = (now - at).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(delta)}"


def timestamp(at: datetime | None) -> str:
    if at is None:
        return DASH
    return at.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def pretty_json(value: object) -> str:
    """Indented JSON text; the template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def uniqueness(job: Job) -> str:
    """How long the job's dedup key keeps out duplicates, in words."""
    rule = job.unique
    if job.dedup_key is None:
        return DASH
    if rule is None or rule.window is UniqueWindow.ACTIVE:
        return "while pending or running"
    if rule.window is UniqueWindow.ENQUEUED:
        return f"while active, and for {duration(rule.seconds)} after its enqueue"
    if rule.window is UniqueWindow.FINISHED:
        return f"while active, and for {duration(rule.seconds)} after it finished"
    named = [s.value for s in rule.states or ()]
    return "while " + (", ".join(named[:-1]) + " or " + named[-1] if len(named) > 1 else "")
