"""The window of recent collections a destination's status is judged over (Kafka groups, NATS consumers).

Both judges read the same thing: the last WINDOW_COLLECTIONS samples of a kind
of destination, none older than WINDOW_SECONDS, and refuse to judge movement
over fewer than MIN_COLLECTIONS collections spanning MIN_SPAN_SECONDS.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dashboard.models import Sample

WINDOW_COLLECTIONS = 10
WINDOW_SECONDS = 300
MIN_COLLECTIONS = 3
MIN_SPAN_SECONDS = 30


@dataclass(frozen=True)
class Status:
    status: str
    rule: str  # why, in words an operator reads

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "rule": self.rule}


def window_since(now: float, interval: int) -> float:
    """Where the window of a broker collected every `interval` seconds starts."""
    return now - min(WINDOW_SECONDS, WINDOW_COLLECTIONS * interval + interval / 2)


def samples(
    broker: Any, kind: str, columns: tuple[str, ...], since: float, until: float
) -> dict[str, list[tuple[Any, ...]]]:
    """(ts, *columns) of the broker's `kind` destinations in [since, until), oldest first, by key.

    At most the last WINDOW_COLLECTIONS per destination.
    """
    rows = (
        Sample.objects.filter(
            destination__broker=broker,
            destination__kind=kind,
            ts__gte=int(since),
            ts__lt=int(until),
        )
        .order_by("destination_id", "ts")
        .values_list("destination__key", "ts", *columns)
    )
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for key, *values in rows.iterator():
        out[key].append(tuple(values))
    return {k: v[-WINDOW_COLLECTIONS:] for k, v in out.items()}


def too_short(count: int, span: float) -> str:
    """Why movement cannot be judged yet, or "" if the window is long enough."""
    if count >= MIN_COLLECTIONS and span >= MIN_SPAN_SECONDS:
        return ""
    return (
        f"too little history to judge movement yet ({count} collection(s) over {span:.0f} s; "
        f"needs {MIN_COLLECTIONS} over {MIN_SPAN_SECONDS} s)."
    )
