"""The window of recent collections a destination's status is judged over (Kafka groups, NATS consumers).

Both judges read the same thing: the last WINDOW_COLLECTIONS samples of a kind
of destination, none older than WINDOW_SECONDS, and refuse to judge movement
over fewer than MIN_COLLECTIONS collections spanning MIN_SPAN_SECONDS.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dashboard.collection import series
from dashboard.models import Destination

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

    At most the last WINDOW_COLLECTIONS per destination: one per collection
    (dashboard/collection/series.py), although Samples are written only on change.
    """
    keys = dict(
        Destination.objects.filter(broker=broker, kind=kind).values_list("id", "key").iterator()
    )
    picks = [series.FIGURES.index(c) + 2 for c in columns]
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    found = series.points(
        "d.broker_id = %s AND d.kind = %s", [broker.pk, kind], int(since), int(until)
    )
    for row in found:
        out[keys[row[0]]].append((row[1], *(row[i] for i in picks)))
    return {k: v[-WINDOW_COLLECTIONS:] for k, v in out.items()}


def expand(recent: list[list[Any]] | None, collections: list[int]) -> list[list[Any]]:
    """Every collection's entry of a row's window, from the entries its row keeps.

    A row's `recent` (Destination.recent) holds [ts, *figures] for each collection at
    which its figures changed, and the last change before the window as its base;
    at each collection since the first entry, the row held its latest entry's
    figures. `collections` are its broker's last ones (series.recent_collections);
    an entry's own time counts as a collection, so rows made by hand expand to
    themselves. At most WINDOW_COLLECTIONS entries, the newest.
    """
    if not recent:
        return []
    first = recent[0][0]
    times = sorted({*(ts for ts in collections if ts >= first), *(e[0] for e in recent)})
    out: list[list[Any]] = []
    i = 0
    for ts in times[-WINDOW_COLLECTIONS:]:
        while i + 1 < len(recent) and recent[i + 1][0] <= ts:
            i += 1
        entry = recent[i]
        out.append(entry if entry[0] == ts else [ts, *entry[1:]])
    return out


def kept(recent: list[list[Any]], entry: list[Any], collections: list[int]) -> list[list[Any]]:
    """A row's `recent` with `entry` (this collection's changed figures) added, and what
    the window no longer needs dropped: entries older than the first of the last
    WINDOW_COLLECTIONS collections, but for the latest of them (the base).

    `collections` are the broker's collections before this one, oldest first.
    """
    window = collections[1 - WINDOW_COLLECTIONS :] if WINDOW_COLLECTIONS > 1 else []
    start = window[0] if window else entry[0]
    entries = [*recent, entry]
    older = [e for e in entries if e[0] < start]
    return [*older[-1:], *(e for e in entries if e[0] >= start)]


def too_short(count: int, span: float) -> str:
    """Why movement cannot be judged yet, or "" if the window is long enough."""
    if count >= MIN_COLLECTIONS and span >= MIN_SPAN_SECONDS:
        return ""
    return (
        f"too little history to judge movement yet ({count} collection(s) over {span:.0f} s; "
        f"needs {MIN_COLLECTIONS} over {MIN_SPAN_SECONDS} s)."
    )
