"""The overview's two charts as geometry for inline SVG (rendered by the templates, so every
label goes through autoescape): throughput per minute, and deadline slack per minute."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from jobs_server.dashboard.format import MINUS, signed
from jobs_server.store.base import MinuteStats

__all__ = ["Chart", "slack_chart", "throughput_chart"]

WIDTH, HEIGHT = 600, 150
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 10, 22


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass
class Chart:
    title: str
    summary: str
    empty: bool
    rects: list[Rect] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (points, css class)
    dots: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y, css class)
    rules: list[tuple[float, str]] = field(default_factory=list)  # (y, css class)
    labels: list[Label] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= value)


# Slack axis ends: round numbers of seconds, minutes and hours.
_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def _nice_seconds(value: float) -> float:
    return float(next((s for s in _SECONDS if s >= value), _nice(value)))


def _slot_x(i: int, slots: int) -> tuple[float, float]:
    step = (WIDTH - LEFT - RIGHT) / slots
    return LEFT + i * step, step


def _center(i: int, slots: int) -> float:
    x, step = _slot_x(i, slots)
    return x + step / 2


def _time_labels(chart: Chart, slots: int) -> None:
    y = HEIGHT - 6
    chart.labels += [
        Label(LEFT, y, f"{MINUS}{slots} min"),
        Label(LEFT + (WIDTH - LEFT - RIGHT) / 2, y, f"{MINUS}{slots // 2} min", "middle"),
        Label(WIDTH - RIGHT, y, "now", "end"),
    ]


def throughput_chart(slots: list[MinuteStats | None]) -> Chart:
    """Finished jobs per minute, stacked by outcome, and dispatches as a line."""
    finished = [(s.succeeded, s.dead, s.cancelled, s.expired) if s else (0, 0, 0, 0) for s in slots]
    dispatched = [s.dispatched if s else 0 for s in slots]
    top = _nice(max([sum(f) for f in finished] + dispatched + [1]))
    total = sum(sum(f) for f in finished)
    chart = Chart(
        title="Throughput per minute",
        summary=f"{total} finished and {sum(dispatched)} dispatched in the last hour",
        empty=total == 0 and sum(dispatched) == 0,
    )
    scale = (HEIGHT - TOP - BOTTOM) / top
    base = float(HEIGHT - BOTTOM)
    for i, counts in enumerate(finished):
        x, step = _slot_x(i, len(slots))
        y = base
        for n, cls, what in zip(
            counts,
            ("ok", "dead", "cancelled", "expired"),
            ("succeeded", "dead", "cancelled", "expired"),
            strict=True,
        ):
            if n:
                h = n * scale
                y -= h
                title = f"{MINUS}{len(slots) - i} min: {n} {what}"
                chart.rects.append(Rect(x + 1, y, max(step - 2, 1), h, cls, title))
    active = [i for i, n in enumerate(dispatched) if n]
    if active:  # from the first minute with dispatches: no flat line along the axis before
        points = " ".join(
            f"{_center(i, len(slots)):.1f},{base - dispatched[i] * scale:.1f}"
            for i in range(active[0], len(slots))
        )
        chart.lines.append((points, "dispatched"))
        if len(active) == 1 and active[0] == len(slots) - 1:
            i = active[0]
            chart.dots.append((_center(i, len(slots)), base - dispatched[i] * scale, "dispatched"))
    chart.rules.append((base, "axis"))
    chart.rules.append((TOP, "grid"))
    chart.labels += [Label(LEFT - 6, TOP + 4, f"{top:g}", "end"), Label(LEFT - 6, base, "0", "end")]
    _time_labels(chart, len(slots))
    return chart


def slack_chart(slots: list[MinuteStats | None]) -> Chart:
    """Per minute, the mean and the worst slack of dispatched jobs (deadline - dispatch):
    above the zero line they started ahead of their deadlines, below it behind."""
    means = [s.slack_sum / s.dispatched if s and s.dispatched else None for s in slots]
    worst = [s.slack_min if s and s.dispatched else None for s in slots]
    seen = [v for v in means + worst if v is not None]
    missed = sum(s.missed for s in slots if s)
    chart = Chart(
        title="Deadline slack at dispatch",
        summary=f"{missed} dispatched after their deadline in the last hour",
        empty=not seen,
    )
    if not seen:
        _time_labels(chart, len(slots))
        return chart
    hi = _nice_seconds(max(max(seen) * 1.1, 1.0))  # headroom: a dot on the top edge hides
    lo = -_nice_seconds(-min(seen)) if min(seen) < 0 else 0.0
    scale = (HEIGHT - TOP - BOTTOM) / (hi - lo)

    def y_of(v: float) -> float:
        return TOP + (hi - v) * scale

    zero = y_of(0)
    if lo < 0:
        chart.rects.append(Rect(LEFT, zero, WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - zero, "late"))
    for i, (mean, low) in enumerate(zip(means, worst, strict=True)):
        if mean is None or low is None:
            continue
        x, step = _slot_x(i, len(slots))
        title = f"{MINUS}{len(slots) - i} min: mean {signed(mean)}, worst {signed(low)}"
        top, bottom = y_of(max(mean, low)), y_of(min(mean, low))
        cls = "range-late" if low < 0 else "range"
        chart.rects.append(
            Rect(x + step * 0.2, top, step * 0.6, max(bottom - top, 1.5), cls, title)
        )
    segments: list[list[str]] = [[]]
    for i, mean in enumerate(means):
        if mean is None:
            segments.append([])
            continue
        segments[-1].append(f"{_center(i, len(slots)):.1f},{y_of(mean):.1f}")
        chart.dots.append((_center(i, len(slots)), y_of(mean), "mean-late" if mean < 0 else "mean"))
    chart.lines += [(" ".join(seg), "mean") for seg in segments if len(seg) > 1]
    chart.rules.append((zero, "zero"))
    chart.rules.append((TOP, "grid"))
    chart.labels += [
        Label(LEFT - 6, TOP + 4, signed(hi), "end"),
        Label(LEFT - 6, zero + 4, "0", "end"),
    ]
    if lo < 0 and HEIGHT - BOTTOM - zero > 14:  # room under the zero label
        chart.labels.append(Label(LEFT - 6, HEIGHT - BOTTOM, signed(lo), "end"))
    _time_labels(chart, len(slots))
    return chart
