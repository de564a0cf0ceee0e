"""Where one destination's backlog is heading: growing toward a limit, or draining, and when.

The destination page shows it; the numbers come from the same window and trend
the detectors judge, and are labelled as estimates.
"""

from __future__ import annotations

import time
from typing import Any

from dashboard.collection import series
from dashboard.collection.statuswindow import WINDOW_COLLECTIONS, window_since
from dashboard.kinds import kind_of
from dashboard.models import Destination
from dashboard.triage import window
from dashboard.triage.detectors import time_to_limit
from dashboard.triage.findings import duration, rate, trend


def outlook(dest: Destination, now: float | None = None) -> dict[str, Any] | None:
    """{"text", "state", "basis"}, or None while the window is too short to tell."""
    now = time.time() if now is None else now
    since = window_since(now, dest.broker.effective_interval)
    collections = series.recent_collections(dest.broker_id, WINDOW_COLLECTIONS)
    points = window.points(dest, since, collections)
    t = trend(points)
    if t is None:
        return None
    basis = (
        f"estimate from the trend of the last {len(points)} collections "
        f"({duration(t.span)}), least squares"
    )
    if t.growing:
        found = time_to_limit(kind_of(dest.broker), dest, t.slope)
        text = f"Growing {rate(t.slope)}"
        if found is not None:
            left, limit = found
            text += (
                f"; full in about {duration(left)} ({limit.name} {limit.limit:,.0f} {limit.unit})"
            )
        return {"text": text, "state": "growing", "basis": basis}
    drain = t.drain_seconds()
    if drain is not None:
        return {
            "text": f"Shrinking {rate(-t.slope)}; empty in about {duration(drain)}",
            "state": "draining",
            "basis": basis,
        }
    return {"text": "Steady: neither growing nor draining", "state": "steady", "basis": basis}
