"""The window a detector judges: each destination's last samples, oldest first, this collection's last.

The same window as the kinds' status rules (dashboard/collection/statuswindow.py):
at most WINDOW_COLLECTIONS samples, none older than WINDOW_SECONDS.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dashboard.collection.statuswindow import MIN_COLLECTIONS, MIN_SPAN_SECONDS, expand


class Point(NamedTuple):
    ts: int
    backlog: int
    in_flight: int
    consumers: int
    in_rate: float | None
    out_rate: float | None
    lag: int | None


def points(dest: Any, since: float, collections: list[int]) -> list[Point]:
    """`dest`'s figures at each of its broker's `collections` since `since`, from the
    entries its row keeps (Destination.recent, expanded by statuswindow.expand).

    The collector writes the same figures to Sample and to `recent`, so the window
    costs no query but the broker's collection times, read once per evaluation.
    """
    return [Point._make(row) for row in expand(dest.recent, collections) if row[0] >= since]


def long_enough(points: list[Point]) -> bool:
    """Whether the window is long enough to judge a trend (as the status rules require)."""
    return len(points) >= MIN_COLLECTIONS and points[-1].ts - points[0].ts >= MIN_SPAN_SECONDS


def arrived(points: list[Point]) -> float:
    """Messages that arrived over the window: each interval's in-rate times its length."""
    total = 0.0
    for before, after in zip(points, points[1:], strict=False):
        if after.in_rate:
            total += after.in_rate * (after.ts - before.ts)
    return total
