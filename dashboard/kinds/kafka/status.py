"""The status of a Kafka consumer group, judged like Burrow from its recent history.

The collector calls `judge` for every Kafka group it stores, with the figures
of this collection and the samples of the window before it, and keeps the
result in `Destination.details["status"]` and in the ranking (`trouble`):

    ERROR  the broker could not describe the group or fetch its offsets, the
           group is dead, or a committed offset lies outside the log (below
           the log start: messages deleted by retention before it read them;
           or past the end);
    STOP   lag, no committed offset moved over the window, and no members;
    STALL  lag at every collection of the window, no committed offset moved over
           it, members present (a group caught up a moment ago had nothing to
           commit: records that just came are not a stall);
    WARN   committed offsets move, but lag grew over the whole window;
    OK     anything else (caught up, keeping up, or too little history yet).

Kafka keeps no commit times that standard APIs expose, so "committing" is
judged by members being present; offsets moving is judged by the committed
offsets' sum changing between collections (the group's out-rate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from dashboard.collection.statuswindow import (
    WINDOW_COLLECTIONS,
    WINDOW_SECONDS,
    Status,
    samples,
    too_short,
)
from dashboard.kinds import Judged
from dashboard.models import Destination

OK, WARN, STALL, STOP, ERROR = "OK", "WARN", "STALL", "STOP", "ERROR"


# Rank in the overview (Destination.trouble): ERROR above everything, STALL and
# WARN with growing backlogs, STOP with backlogs nobody consumes.
TROUBLE = {ERROR: 3, STALL: 2, WARN: 2, STOP: 1, OK: 0}
# The overview's flag for a group in trouble.
LABELS = {ERROR: "error", STALL: "stalled", WARN: "lag growing", STOP: "stopped"}
# The badge class (static/css/sluice.css) of each status.
BADGES = {ERROR: "t3", STALL: "t2", WARN: "t1", STOP: "t2", OK: "ok"}


@dataclass(frozen=True)
class Point:
    """One collection of one group: when, its lag, its commit rate, its members."""

    ts: float
    lag: int
    out_rate: float | None  # committed offsets' sum, change per second; None: unknown
    consumers: int


def history(broker: Any, since: float, until: float) -> dict[str, list[Point]]:
    """Samples of the broker's groups in [since, until), oldest first, by destination key."""
    found = samples(broker, "group", ("lag", "out_rate", "consumers"), since, until)
    return {
        key: [Point(row[0], row[1] or 0, row[2], row[3]) for row in rows]
        for key, rows in found.items()
    }


def judge(extra: dict[str, Any], state: str, now: Point, before: list[Point]) -> Status:
    """The status of a group from this collection (`extra`, `state`, `now`) and `before` it."""
    if extra.get("error"):
        return Status(ERROR, f"The broker answered with an error for this group: {extra['error']}.")
    if state == "Dead":
        return Status(ERROR, "The coordinator reports the group as Dead.")
    out_of_range = extra.get("out_of_range") or []
    if out_of_range:
        return Status(ERROR, _out_of_range(out_of_range))
    if now.lag <= 0:
        return Status(OK, "Caught up: lag 0.")
    points = [*before, now]
    span = now.ts - points[0].ts
    short = too_short(len(points), span)
    if short:
        return Status(OK, f"Lag {now.lag:,}; {short}")
    rates = [p.out_rate for p in points[1:] if p.out_rate is not None]
    moved = any(r > 0 for r in rates)
    over = f"over the last {span:.0f} s ({len(points)} collections)"
    if not moved and rates:
        if now.consumers == 0:
            return Status(
                STOP,
                f"Lag {now.lag:,} and no committed offset moved {over}, and the group has "
                "no active members: nothing is consuming.",
            )
        if any(p.lag <= 0 for p in points):
            return Status(
                OK,
                f"Lag {now.lag:,}; caught up within the last {span:.0f} s, so nothing was "
                "there to commit until then: too soon to call it stuck.",
            )
        return Status(
            STALL,
            f"Lag {now.lag:,} and no committed offset moved {over}, although the group has "
            f"{now.consumers} member(s). Kafka keeps no commit times, so members present are "
            "taken to be committing: they commit the same offsets, stuck.",
        )
    lags = [p.lag for p in points]
    if moved and lags[-1] > lags[0] and all(b >= a for a, b in pairwise(lags)):
        return Status(
            WARN,
            f"Committed offsets move, but lag grew from {lags[0]:,} to {lags[-1]:,} {over}: "
            "the consumers are falling behind.",
        )
    if not rates:
        return Status(OK, f"Lag {now.lag:,}; no commit rate known yet.")
    return Status(OK, f"Lag {now.lag:,}; committed offsets move and lag is not growing {over}.")


def _out_of_range(rows: list[list[Any]]) -> str:
    topic, partition, committed, first, last = rows[0]
    where = f"{topic}/{partition}"
    if first is not None and committed < first:
        head = (
            f"Committed offset {committed:,} on {where} is below the log start {first:,}: "
            f"{first - committed:,} message(s) were deleted (retention) before the group read them."
        )
    else:
        head = f"Committed offset {committed:,} on {where} is past the log end {last:,}."
    more = f" {len(rows) - 1} more partition(s) likewise." if len(rows) > 1 else ""
    return head + more


# -- the topic and group panels ------------------------------------------------


def panel(dest: Any) -> dict[str, Any]:
    """What dashboard/kinds/kafka/templates/dashboard/kafka/{topic,group}_panel.html show of a Kafka destination."""
    extra = (dest.details or {}).get("extra") or {}
    if dest.kind == "group":
        return _group_panel(dest, extra)
    if dest.kind == "topic":
        return _topic_panel(dest, extra)
    return {}


def _group_panel(dest: Any, extra: dict[str, Any]) -> dict[str, Any]:
    status = (dest.details or {}).get("status") or {}
    members = extra.get("members") or []
    owner = {}
    for m in members:
        for topic, partitions in m.get("assignment") or []:
            for p in partitions:
                owner[(topic, p)] = m
    behind = extra.get("lag_seconds") or {}
    seconds = {(t, p): s for t, p, s in behind.get("partitions") or []}
    outside = {(t, p) for t, p, *_ in extra.get("out_of_range") or []}
    rows = []
    per_topic: dict[str, dict[str, Any]] = {}
    for topic, partition, committed, end, lag in extra.get("partitions") or []:
        key = (topic, partition)
        s = seconds.get(key)
        rows.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": committed,
                "end": end,
                "lag": lag,
                "seconds": s,
                "owner": owner.get(key),
                "outside": key in outside,
            }
        )
        t = per_topic.setdefault(topic, {"topic": topic, "lag": 0, "seconds": None, "n": 0})
        t["lag"] += lag
        t["n"] += 1
        if s is not None and (t["seconds"] is None or s > t["seconds"]):
            t["seconds"] = s
    return {
        "status": status.get("status") or "",
        "rule": status.get("rule") or "",
        # Tansu 0.6 describes members with client id, host and assignment empty.
        "unreported": bool(members)
        and not any(m.get("client_id") or m.get("host") or m.get("assignment") for m in members),
        "badge": BADGES.get(status.get("status") or "", ""),
        "lag_seconds": behind.get("max"),
        "members": [
            {**m, "partitions": sum(len(ps) for _, ps in m.get("assignment") or [])}
            for m in members
        ],
        "rows": rows,
        "topics": sorted(per_topic.values(), key=lambda t: t["topic"]),
        "extra": extra,
        "window": (WINDOW_COLLECTIONS, WINDOW_SECONDS),
    }


def _topic_panel(dest: Any, extra: dict[str, Any]) -> dict[str, Any]:
    # The groups reading this topic, with their lag on it: one query, details in Python.
    readers = []
    groups = (
        Destination.objects.filter(broker_id=dest.broker_id, kind="group", gone_since__isnull=True)
        .select_related("broker")
        .only("key", "name", "details", "trouble", "broker__name")
    )
    for g in groups:
        lag = ((g.details or {}).get("extra") or {}).get("topics", {}).get(dest.name)
        if lag is not None:
            status = (g.details or {}).get("status") or {}
            readers.append({"group": g, "lag": lag, "status": status.get("status") or ""})
    readers.sort(key=lambda r: (-r["lag"], r["group"].name))
    return {
        "rows": extra.get("partition_details") or [],
        "configs": extra.get("configs"),
        "configs_error": extra.get("configs_error") or "",
        "size": extra.get("size"),
        "size_note": extra.get("size_note") or "",
        "readers": readers,
        "badges": BADGES,
        "extra": extra,
    }


def rules(
    broker: Any, since: float, now: float
) -> Callable[[Any, float | None, float], Judged | None]:
    """The collector's judge of each group: its status from this collection and those since `since`."""
    before = history(broker, since, now)

    def judge_group(dest: Any, out_rate: float | None, at: float) -> Judged | None:
        if dest.kind != "group":
            return None
        point = Point(at, dest.lag or 0, out_rate, dest.consumers)
        status = judge(dest.extra, dest.state, point, before.get(dest.key, []))
        return Judged(status.as_dict(), TROUBLE[status.status])

    return judge_group
