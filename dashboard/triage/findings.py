"""What a detector reports, and the trends and limits it reasons with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from dashboard.models.incidents import CRITICAL, INFO, WARNING
from dashboard.triage.window import Point, long_enough

__all__ = ["CRITICAL", "INFO", "WARNING", "Finding", "Limit", "Trend", "duration", "trend"]


@dataclass
class Finding:
    """One thing wrong, at a broker (key "") or one of its destinations."""

    cause: str  # the detector's name: one live incident per cause and place
    severity: str
    summary: str  # the cause in words, with its numbers
    rule: str  # the rule, in one sentence a person understands
    key: str = ""
    name: str = ""
    dest_id: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    actions: tuple[str, ...] = ()
    impact_seconds: float | None = None  # until the harm is done (full, records lost)
    worsening: bool = False
    # Collections in a row it must be found before it opens: 1 for detectors that
    # judge a window already, 2 for those that read one collection's figures.
    confirm: int = 1


@dataclass(frozen=True)
class Limit:
    """A limit the backlog runs into: what is used of it, and what adding one message costs."""

    name: str  # e.g. "max-length (policy)"
    limit: float
    used: float
    unit: str  # "messages" or "bytes"
    per_message: float = 1.0  # units per message (an average size for bytes: an estimate)

    def seconds_left(self, growth: float) -> float | None:
        """At `growth` messages/s, seconds until the limit is reached; None if never."""
        if growth <= 0:
            return None
        return max(0.0, (self.limit - self.used) / (growth * self.per_message))


@dataclass(frozen=True)
class Trend:
    """How a figure moved over the window."""

    first: int
    last: int
    slope: float  # per second, least squares over the window
    span: float  # seconds
    rises: int  # intervals in which it rose
    falls: int  # intervals in which it fell
    steps: int
    high_start: int  # the highest of the window's first third
    low_end: int  # the lowest of its last third

    @property
    def growing(self) -> bool:
        """A sustained rise: up by 10 or more at 0.1/s or more, rising in half the intervals
        (two at least), and its last third all above its first third. One jump is a burst,
        and a sawtooth (a group committing now and then, bursts drained) keeps coming back."""
        return (
            self.last - self.first >= 10
            and self.slope >= 0.1
            and self.rises >= max(2, self.steps // 2)
            and self.low_end > self.high_start
        )

    @property
    def shrinking(self) -> bool:
        return self.last < self.first and self.slope < 0 and self.rises <= 1

    def drain_seconds(self) -> float | None:
        """At the window's rate of decline, seconds until the figure reaches zero."""
        if not self.shrinking or self.last <= 0:
            return None
        return self.last / -self.slope


def trend(points: list[Point], value: Callable[[Point], int] | None = None) -> Trend | None:
    """The trend of `value` (the backlog) over the window, or None when it is too short."""
    if not long_enough(points):
        return None
    get = value or (lambda p: p.backlog)
    xs = [p.ts - points[0].ts for p in points]
    ys = [get(p) for p in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    steps = list(pairwise(ys))
    third = max(1, n // 3)
    return Trend(
        first=ys[0],
        last=ys[-1],
        slope=slope,
        span=xs[-1],
        rises=sum(1 for a, b in steps if b > a),
        falls=sum(1 for a, b in steps if b < a),
        steps=len(steps),
        high_start=max(ys[:third]),
        low_end=min(ys[-third:]),
    )


def duration(seconds: float) -> str:
    """A span as people say it: "40 s", "9 min", "3 h 20 min", "2 d"."""
    s = int(max(0, seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"


def rate(value: float) -> str:
    return f"{value:,.1f} msg/s" if value < 100 else f"{value:,.0f} msg/s"
