"""The kind-neutral detectors, and the context every detector reads.

Each detector is a function of a `Context` yielding `Finding`s. A kind adds its
own (broker alarms, stalls, redelivery storms) through `Kind.detectors`, in its
package's detectors.py. Detectors judge the window of recent samples, never one
interval's rates alone, and an incident already open holds while its condition
does (`Context.is_open`), so it does not flap as the window slides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.models import AlertRule, Broker, Destination, Incident
from dashboard.models.alerts import METRICS, THRESHOLD
from dashboard.triage import window
from dashboard.triage.findings import (
    CRITICAL,
    WARNING,
    Finding,
    Limit,
    Trend,
    duration,
    rate,
    trend,
)
from dashboard.triage.window import Point, arrived

Detector = Callable[["Context"], Iterable[Finding]]


@dataclass
class Context:
    broker: Broker
    now: float
    kind: Any  # dashboard.kinds.Kind
    destinations: list[Destination] = field(default_factory=list)
    since: float = 0.0  # where the window starts
    live: dict[tuple[str, str], Incident] = field(default_factory=dict)
    rules: list[AlertRule] = field(default_factory=list)
    # What the kind's detectors keep between evaluations (e.g. advisory counts), by name.
    memo: dict[str, Any] = field(default_factory=dict)
    _dead_letter_keys: set[str] | None = None

    # The broker's last collection times, which each destination's window is expanded onto.
    collections: list[int] = field(default_factory=list)
    _points: dict[int, list[Point]] = field(default_factory=dict)

    def points(self, dest: Destination) -> list[Point]:
        """`dest`'s samples in the window, oldest first, this collection's last."""
        found = self._points.get(dest.pk)
        if found is None:
            found = self._points[dest.pk] = window.points(dest, self.since, self.collections)
        return found

    def is_open(self, cause: str, key: str = "") -> bool:
        found = self.live.get((cause, key))
        return found is not None and found.state == Incident.OPEN

    def setting(self, detector: str, dest: Destination | None = None) -> AlertRule | None:
        """The first rule that changes `detector` at this place, if any."""
        name = dest.name if dest is not None else ""
        for rule in self.rules:
            if rule.detector == detector and rule.matches(self.broker.name, name):
                return rule
        return None

    def enabled(self, detector: str, dest: Destination | None = None) -> bool:
        rule = self.setting(detector, dest)
        return rule is None or rule.enabled

    def severity(self, detector: str, default: str, dest: Destination | None = None) -> str:
        rule = self.setting(detector, dest)
        return rule.severity if rule is not None and rule.severity else default

    def threshold(self, detector: str, default: float, dest: Destination | None = None) -> float:
        rule = self.setting(detector, dest)
        return rule.threshold if rule is not None and rule.threshold is not None else default

    def dead_letter_keys(self) -> set[str]:
        if self._dead_letter_keys is None:
            self._dead_letter_keys = self.kind.dead_letter_keys(self.broker, self.destinations)
        return self._dead_letter_keys

    def consumed(self, dest: Destination) -> bool:
        """Whether consumers are expected to read `dest` itself (not so a Kafka topic)."""
        return dest.kind not in self.kind.unconsumed


def growth(dest: Destination, points: list[Point]) -> Trend | None:
    return trend(points) if points else None


def _had_consumers(points: list[Point]) -> bool:
    """Whether any point of the window before this collection's had consumers."""
    return any(p.consumers > 0 for p in points[:-1])


def _rose(points: list[Point], by: int) -> bool:
    """Whether the backlog rose by `by` or more over the window (Trend.growing needs that)."""
    return len(points) >= 2 and points[-1].backlog - points[0].backlog >= by


def time_to_limit(kind: Any, dest: Destination, growth_rate: float) -> tuple[float, Limit] | None:
    """The nearest limit the backlog reaches at `growth_rate` msg/s, and when."""
    best: tuple[float, Limit] | None = None
    for limit in kind.limits(dest):
        left = limit.seconds_left(growth_rate)
        if left is not None and (best is None or left < best[0]):
            best = (left, limit)
    return best


def _full_text(found: tuple[float, Limit] | None) -> str:
    if found is None:
        return ""
    left, limit = found
    est = " (estimated from the average message size)" if limit.unit == "bytes" else ""
    return f"; full in {duration(left)} ({limit.name} {limit.limit:,.0f} {limit.unit}{est})"


# -- broker ------------------------------------------------------------------------


def unreachable(ctx: Context) -> Iterable[Finding]:
    broker = ctx.broker
    if broker.status != Broker.STATUS_DOWN or not ctx.enabled("unreachable"):
        return
    since = broker.down_since.timestamp() if broker.down_since else ctx.now
    yield Finding(
        cause="unreachable",
        severity=ctx.severity("unreachable", CRITICAL),
        summary=f"unreachable for {duration(ctx.now - since)}: {broker.error}",
        rule="A broker is unreachable when a collection fails to reach it; its figures are stale until it answers.",
        evidence={"error": broker.error, "down_since": since},
        actions=("broker",),
    )


# -- destinations --------------------------------------------------------------------


def consumers_lost(ctx: Context) -> Iterable[Finding]:
    for dest in ctx.destinations:
        if not ctx.consumed(dest) or dest.consumers > 0 or not ctx.enabled("consumers_lost", dest):
            continue
        inflow = dest.in_rate or 0.0
        if dest.backlog <= 0 and inflow <= 0:
            continue
        # Parked queues (never a consumer) are the common case: told from the raw window.
        if not _had_consumers(ctx.points(dest)) and not ctx.is_open("consumers_lost", dest.key):
            continue
        points = ctx.points(dest)
        had = max((p.consumers for p in points[:-1]), default=0)
        previous = ctx.live.get(("consumers_lost", dest.key))
        evidence = dict(previous.evidence) if previous else {}
        if had:  # the last collection that saw consumers, and how many it saw
            last = max(i for i, p in enumerate(points[:-1]) if p.consumers > 0)
            evidence.update(had=points[last].consumers, last_seen=points[last].ts)
        last_seen = float(evidence.get("last_seen") or ctx.now)
        t = growth(dest, points)
        text = (
            f"lost its {evidence.get('had', '')} consumer(s) {duration(ctx.now - last_seen)} ago; "
            f"backlog {dest.backlog:,}"
        )
        found = None
        if t is not None and t.growing:
            text += f", growing {rate(t.slope)}"
            found = time_to_limit(ctx.kind, dest, t.slope)
            text += _full_text(found)
        elif inflow > 0:
            text += f", {rate(inflow)} arriving"
        evidence.update(backlog=dest.backlog, in_rate=inflow)
        yield Finding(
            cause="consumers_lost",
            severity=ctx.severity("consumers_lost", CRITICAL if inflow > 0 else WARNING, dest),
            summary=text,
            rule="A destination that had consumers in the window and now has none, with a backlog or messages arriving, has lost its consumers.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence=evidence,
            actions=("open", "browse"),
            impact_seconds=found[0] if found else None,
            worsening=bool(t and t.growing),
        )


def backlog_growing(ctx: Context) -> Iterable[Finding]:
    for dest in ctx.destinations:
        if not ctx.consumed(dest) or dest.key in ctx.dead_letter_keys():
            continue  # a dead-letter queue's growth is "dead letters arriving"
        if not ctx.enabled("backlog_growing", dest):
            continue
        if not _rose(ctx.points(dest), 10) and not ctx.is_open("backlog_growing", dest.key):
            continue  # the common case, told from the raw window without building it
        points = ctx.points(dest)
        t = growth(dest, points)
        if t is None:
            continue
        holding = ctx.is_open("backlog_growing", dest.key) and t.slope > 0 and t.last > 0
        if not (t.growing or holding):
            continue
        found = time_to_limit(ctx.kind, dest, t.slope)
        soon = found is not None and found[0] < ctx.threshold("backlog_growing", 900, dest)
        yield Finding(
            cause="backlog_growing",
            severity=ctx.severity("backlog_growing", CRITICAL if soon else WARNING, dest),
            summary=(
                f"backlog {dest.backlog:,}, growing {rate(t.slope)} over {duration(t.span)}"
                + _full_text(found)
            ),
            rule="The backlog is growing when, over the window, it rose by 10 or more at 0.1 msg/s or more, in half the intervals, and its last third stayed above its first; a single interval's rates never decide it.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "backlog": dest.backlog,
                "first": t.first,
                "growth_per_s": round(t.slope, 3),
                "window_s": t.span,
                "limit": found[1].name if found else None,
                "full_in_s": round(found[0]) if found else None,
            },
            actions=("open", "browse"),
            impact_seconds=found[0] if found else None,
            worsening=True,
        )


def dead_letters_arriving(ctx: Context) -> Iterable[Finding]:
    keys = ctx.dead_letter_keys()
    if not keys:
        return
    for dest in ctx.destinations:
        if dest.key not in keys or not ctx.enabled("dead_letters", dest):
            continue
        points = ctx.points(dest)
        if len(points) < 2:
            continue
        count = arrived(points)
        span = points[-1].ts - points[0].ts
        recent = points[-1].in_rate or 0.0
        # Opens on arrivals in the latest interval; holds until a whole window has none.
        # Rates times seconds: one message may come to 0.9999; round to whole messages.
        if round(count) < 1 or (recent <= 0 and not ctx.is_open("dead_letters", dest.key)):
            continue
        per_minute = recent * 60
        many = per_minute >= ctx.threshold("dead_letters", 60, dest)
        yield Finding(
            cause="dead_letters",
            severity=ctx.severity("dead_letters", CRITICAL if many else WARNING, dest),
            summary=(
                f"{count:,.0f} dead letter(s) over the last {duration(span)}, "
                f"{per_minute:,.0f}/min now; {dest.backlog:,} waiting"
            ),
            rule="Dead letters are arriving when a dead-letter queue, topic or stream received messages in the latest interval; it holds until a whole window receives none.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "arrived": round(count),
                "window_s": span,
                "per_minute": round(per_minute, 2),
                "backlog": dest.backlog,
            },
            actions=("open", "deadletters"),
            worsening=recent > 0,
        )


def lag_seconds(ctx: Context) -> Iterable[Finding]:
    for dest in ctx.destinations:
        behind = ctx.kind.lag_seconds(dest)
        if behind is None or not ctx.enabled("lag_seconds", dest):
            continue
        limit = ctx.threshold("lag_seconds", settings.SLUICE_LAG_SECONDS, dest)
        if behind <= limit:
            continue
        yield Finding(
            cause="lag_seconds",
            severity=ctx.severity("lag_seconds", WARNING, dest),
            summary=f"{duration(behind)} behind (over {duration(limit)}); lag {dest.lag or 0:,}",
            rule=f"A group is too far behind when the oldest record it has still to read was written more than {duration(limit)} ago.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={"lag_seconds": behind, "threshold_s": limit, "lag": dest.lag},
            actions=("open", "reset"),
        )


# -- threshold rules ----------------------------------------------------------------


def thresholds(ctx: Context) -> Iterable[Finding]:
    rules = [r for r in ctx.rules if r.detector == THRESHOLD and r.enabled and r.metric]
    if not rules:
        return
    for rule in rules:
        limit = rule.threshold or 0.0
        for dest in ctx.destinations:
            if not rule.matches(ctx.broker.name, dest.name):
                continue
            value = _metric(ctx, rule.metric, dest)
            if value is None:
                continue
            over = value < limit if rule.metric == "time_to_full_seconds" else value > limit
            if not over:
                continue
            what = METRICS[rule.metric].format(t=limit)
            yield Finding(
                cause=f"rule:{rule.name}",
                severity=rule.severity or WARNING,
                summary=f"{rule.metric.replace('_', ' ')} {value:,.0f}: {what}",
                rule=f"Rule {rule.name}: {rule.sentence}.",
                key=dest.key,
                name=dest.name,
                dest_id=dest.pk,
                evidence={"metric": rule.metric, "value": value, "threshold": limit},
                actions=("open",),
            )


def _metric(ctx: Context, metric: str, dest: Destination) -> float | None:
    points = ctx.points(dest)
    if metric == "backlog":
        return float(dest.backlog)
    if metric == "lag":
        return None if dest.lag is None else float(dest.lag)
    if metric == "lag_seconds":
        return ctx.kind.lag_seconds(dest)
    if metric == "dead_letters_per_minute":
        span = points[-1].ts - points[0].ts if len(points) > 1 else 0
        return arrived(points) / span * 60 if span else None
    if metric == "time_to_full_seconds":
        t = growth(dest, points)
        found = time_to_limit(ctx.kind, dest, t.slope) if t is not None else None
        return found[0] if found else None
    if metric == "no_consumers_seconds":
        if dest.consumers > 0 or dest.backlog <= 0 or not ctx.consumed(dest):
            return None
        last = (
            dest.sample_set.filter(consumers__gt=0).order_by("-ts").values_list("ts", flat=True)
        ).first()
        first = dest.sample_set.order_by("ts").values_list("ts", flat=True).first()
        since = last if last is not None else first
        return None if since is None else ctx.now - since
    return None


# A finding on a destination that explains another's: the other is dropped.
SUBSUMES = {"backlog_growing": ("consumers_lost", "stalled")}

# Kind-neutral detectors, in the order they run: broker ones, then destination ones.
BROKER: tuple[Detector, ...] = (unreachable,)
DESTINATION: tuple[Detector, ...] = (
    consumers_lost,
    backlog_growing,
    dead_letters_arriving,
    lag_seconds,
    thresholds,
)
