"""Kafka's own triage, and what backlog, consumers and lag mean for Kafka.

The kind-neutral detectors (dashboard/triage/detectors.py) find growing
backlogs, groups that lost their members, dead letters arriving and groups too
far behind in seconds; these add what only Kafka tells:

- on the cluster: partitions without a leader or with replicas out of sync, and
  no controller (from the facts of the last collection);
- on groups: stalled (members joined, no commit moving) and in error, as the
  group status rules (status.py) judge them over the window; and records about
  to be deleted by the topic's retention before the group reads them.

`settle` is the one place a topic's backlog, consumers and lag are defined:
the pages, the API, /metrics and the detectors read what the collector stores
from it.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from django.db.models import Q

from brokers.base import Destination as Dest
from dashboard.kinds.kafka import deadletters
from dashboard.kinds.kafka.status import ERROR, STALL
from dashboard.models import Destination
from dashboard.triage.detectors import Context
from dashboard.triage.findings import CRITICAL, WARNING, Finding, Limit, duration, trend

GROUP_ACTIONS = ("open", "reset")
# Retention warns when less than this share of a topic's retention.ms is left for
# the oldest unread record, and is critical when less than CRITICAL_LEFT seconds are.
WARN_SHARE = 0.5
CRITICAL_LEFT = 3600


def _extra(dest: Any) -> dict[str, Any]:
    return (dest.details or {}).get("extra") or {}


def _status(dest: Any) -> dict[str, Any]:
    return (dest.details or {}).get("status") or {}


def _facts(ctx: Context) -> dict[str, Any]:
    return (ctx.broker.health or {}).get("facts") or {}


# -- the cluster -------------------------------------------------------------------


def partitions(ctx: Context) -> Iterable[Finding]:
    """Partitions without a leader (critical) or with fewer replicas in sync than assigned."""
    facts = _facts(ctx)
    offline = int(facts.get("offline") or 0)
    under = int(facts.get("under_replicated") or 0)
    if not (offline or under) or not ctx.enabled("partitions"):
        return
    said = []
    if offline:
        said.append(
            f"{offline:,} partition(s) offline (no leader): they can be neither written nor read"
        )
    if under:
        said.append(
            f"{under:,} partition(s) under-replicated: fewer replicas in sync than assigned"
        )
    topics = _topics_in_trouble(ctx)
    text = "; ".join(said)
    if topics:
        more = f" and {len(topics) - 5} more" if len(topics) > 5 else ""
        text += f" (topics: {', '.join(topics[:5])}{more})"
    yield Finding(
        cause="partitions",
        severity=ctx.severity("partitions", CRITICAL if offline else WARNING),
        summary=text,
        rule="A partition is offline when it has no leader, so nothing can write or read it, and under-replicated when fewer of its replicas are in sync than are assigned, so one more broker lost may lose its records.",
        evidence={"offline": offline, "under_replicated": under, "topics": topics},
        actions=("broker",),
    )


def _topics_in_trouble(ctx: Context) -> list[str]:
    """The topics whose partitions the last collection saw offline or under-replicated."""
    rows = Destination.objects.filter(
        Q(details__extra__offline__gt=0) | Q(details__extra__under_replicated__gt=0),
        broker=ctx.broker,
        kind="topic",
        gone_since__isnull=True,
    )
    return list(rows.order_by("name").values_list("name", flat=True)[:100])


def no_controller(ctx: Context) -> Iterable[Finding]:
    """The cluster's metadata names no controller."""
    facts = _facts(ctx)
    if "controller" not in facts or facts["controller"] or not ctx.enabled("no_controller"):
        return
    yield Finding(
        cause="no_controller",
        severity=ctx.severity("no_controller", CRITICAL),
        summary=(
            f"no controller among the cluster's {facts.get('brokers', 0)} broker(s): partitions "
            "that lose their leader get no new one, and topics cannot be created or deleted"
        ),
        rule="A cluster has no controller when its metadata names none; without one, no partition leader is replaced and no topic is created or deleted.",
        evidence={"brokers": facts.get("brokers"), "cluster_id": facts.get("cluster_id")},
        actions=("broker",),
    )


# -- groups --------------------------------------------------------------------------


def stalled(ctx: Context) -> Iterable[Finding]:
    """A group the status rules judge STALL: members joined, lag, and no commit moved."""
    for dest in ctx.destinations:
        if dest.kind != "group" or _status(dest).get("status") != STALL:
            continue
        if not ctx.enabled("stalled", dest):
            continue
        points = ctx.points(dest)
        previous = ctx.live.get(("stalled", dest.key))
        since = (previous.evidence or {}).get("since") if previous else None
        if since is None:  # the last collection whose commits moved, else the window's start
            moved = [p.ts for p in points if (p.out_rate or 0) > 0]
            since = moved[-1] if moved else (points[0].ts if points else ctx.now)
        lag = dest.lag or 0
        t = trend(points) if points else None
        yield Finding(
            cause="stalled",
            severity=ctx.severity("stalled", WARNING, dest),
            summary=(
                f"{dest.consumers} member(s) joined, commits have not moved for "
                f"{duration(ctx.now - since)}; lag {lag:,}"
            ),
            rule="A group is stalled when members are joined and it has lag, but none of its committed offsets moved over the window: its consumers are connected and get nowhere.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "members": dest.consumers,
                "lag": lag,
                "since": since,
                "lag_seconds": lag_seconds(dest),
                "status_rule": _status(dest).get("rule", ""),
            },
            actions=GROUP_ACTIONS,
            worsening=bool(t and t.slope > 0),
        )


def group_error(ctx: Context) -> Iterable[Finding]:
    """A group the status rules judge ERROR, with their words for why."""
    for dest in ctx.destinations:
        status = _status(dest)
        if dest.kind != "group" or status.get("status") != ERROR:
            continue
        if not ctx.enabled("group_error", dest):
            continue
        extra = _extra(dest)
        yield Finding(
            cause="group_error",
            severity=ctx.severity("group_error", CRITICAL, dest),
            summary=status.get("rule") or "the group is in error",
            rule="A group is in error when the broker answers its offsets or description with an error, reports it Dead, or one of its committed offsets lies outside the log.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "error": extra.get("error") or "",
                "state": dest.state,
                "out_of_range": extra.get("out_of_range") or [],
                "lag": dest.lag,
            },
            actions=GROUP_ACTIONS,
            # Read from one collection's answers: a passing error must not open it.
            confirm=2,
        )


def retention(ctx: Context) -> Iterable[Finding]:
    """A group whose oldest unread record nears the age at which retention deletes it."""
    kept = {d.name: retention_seconds(d) for d in ctx.destinations if d.kind == "topic"}
    for dest in ctx.destinations:
        if dest.kind != "group" or not dest.lag or not ctx.enabled("retention", dest):
            continue
        worst = None  # (seconds left, topic, age, retention)
        for topic, age in _oldest_unread(dest).items():
            keep = kept.get(topic)
            if keep is None:
                continue
            left = keep - age
            if left < WARN_SHARE * keep and (worst is None or left < worst[0]):
                worst = (left, topic, age, keep)
        if worst is None:
            continue
        left, topic, age, keep = worst
        if left > 0:
            head = f"falls off retention in {duration(left)}: records will be lost unread"
        else:
            head = f"past retention by {duration(-left)}: records may already be deleted unread"
        yield Finding(
            cause="retention",
            severity=ctx.severity("retention", CRITICAL if left < CRITICAL_LEFT else WARNING, dest),
            summary=(
                f"{head} (oldest unread record on {topic} written {duration(age)} ago; "
                f"retention.ms {duration(keep)}; lag {dest.lag:,})"
            ),
            rule=f"Retention may delete a record once it is older than the topic's retention.ms, read or not: a group is warned when its oldest unread record has less than half of it left, and it is critical under {duration(CRITICAL_LEFT)}.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "topic": topic,
                "oldest_unread_s": age,
                "retention_s": keep,
                "left_s": round(left),
                "lag": dest.lag,
            },
            actions=GROUP_ACTIONS,
            impact_seconds=max(0.0, left),
            worsening=(dest.out_rate or 0) <= 0,
        )


def retention_seconds(topic: Any) -> float | None:
    """How long the topic keeps a record, in seconds; None if forever or unknown.

    Unknown until the topic's configs were read, and when the broker reports
    no retention.ms for it. A compacted-only topic deletes no record for its age.
    """
    configs = _extra(topic).get("configs") or {}
    policy = (configs.get("cleanup.policy") or {}).get("value")
    if policy and "delete" not in str(policy):
        return None
    ms = _number((configs.get("retention.ms") or {}).get("value"))
    return ms / 1000 if ms is not None and ms >= 0 else None


def _number(value: Any) -> float | None:
    """A config's value (a string) as a number; None if it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _oldest_unread(dest: Any) -> dict[str, float]:
    """Per topic the group reads, how long ago its oldest unread record was written (s)."""
    ages: dict[str, float] = {}
    for topic, _partition, seconds in (_extra(dest).get("lag_seconds") or {}).get(
        "partitions"
    ) or ():
        if seconds is not None and seconds > ages.get(topic, -1.0):
            ages[topic] = float(seconds)
    return ages


# -- hooks of the Kafka kind ----------------------------------------------------------


def lag_seconds(dest: Any) -> float | None:
    """A group's lag in seconds: how long ago the oldest record it has to read was written."""
    if dest.kind != "group":
        return None
    value = (_extra(dest).get("lag_seconds") or {}).get("max")
    return None if value is None else float(value)


def limits(dest: Any) -> list[Limit]:
    """retention.bytes of the topics a group reads, where the broker reports log sizes.

    Past retention.bytes a partition's oldest records are deleted, read or not:
    a group's unread records (its lag, at the topic's average record size)
    running into it are lost. Brokers that report no log sizes (Tansu) give none.
    """
    if dest.kind != "group":
        return []
    behind = _extra(dest).get("topics") or {}
    if not behind:
        return []
    rows = Destination.objects.filter(
        broker_id=dest.broker_id, kind="topic", name__in=list(behind), gone_since__isnull=True
    ).only("name", "details")
    out = []
    for topic in rows:
        extra = _extra(topic)
        size, held = extra.get("size"), extra.get("messages")
        config = (extra.get("configs") or {}).get("retention.bytes") or {}
        per_partition = _number(config.get("value"))
        if per_partition is None or per_partition < 0 or not size or not held:
            continue
        per = size / held
        out.append(
            Limit(
                f"retention.bytes of {topic.name} ({config.get('source') or 'topic'})",
                per_partition * (extra.get("partitions") or 1),
                behind[topic.name] * per,
                "bytes",
                per,
            )
        )
    return out


def dead_letter_keys(broker: Any, among: list[Any] | None = None) -> set[str]:
    return {found["queue"].key for found in deadletters.find(broker, among=among)}


def settle(broker: Any, destinations: tuple[Dest, ...]) -> tuple[Dest, ...]:
    """Kafka's one meaning of backlog, consumers and lag.

    A group: its lag, summed over its partitions, is its backlog (as the
    monitor reports it). A topic is read by groups: its backlog and lag are the
    largest lag among the groups reading it (the records the furthest-behind
    group has still to read), and its consumers the number of those groups. A
    dead-letter topic no group reads has its unhandled dead letters as its
    backlog: every record it holds. Any other topic nobody reads has none.

    A topic's out-total is its in-total (the sum of end offsets) less that
    backlog, so that its out-rate is how fast the furthest-behind group reads,
    and in-rate against out-rate tells whether its backlog grows.
    """
    readers: dict[str, list[int]] = defaultdict(list)
    slowest: dict[str, tuple[int, str]] = {}
    for d in destinations:
        if d.kind != "group":
            continue
        for topic, behind in (d.extra.get("topics") or {}).items():
            readers[topic].append(behind)
            if topic not in slowest or behind > slowest[topic][0]:
                slowest[topic] = (behind, d.name)
    unread = [d for d in destinations if d.kind == "topic" and d.name not in readers]
    dead = _dead_letter_names(broker, unread) if unread else set()
    out = []
    for d in destinations:
        if d.kind != "topic":
            out.append(d)
            continue
        lags = readers.get(d.name)
        if lags:
            backlog = max(lags)
            extra = {**d.extra, "furthest_behind": slowest[d.name][1]}
            lag: int | None = backlog
        elif d.name in dead:
            backlog = int(d.extra.get("messages") or 0)
            extra, lag = {**d.extra, "dead_letters": True}, None
        else:
            out.append(replace(d, backlog=0, consumers=0, lag=None))
            continue
        out_total = d.in_total - backlog if d.in_total is not None else None
        out.append(
            replace(
                d,
                backlog=backlog,
                lag=lag,
                consumers=len(lags or ()),
                out_total=out_total,
                extra=extra,
            )
        )
    return tuple(out)


def _dead_letter_names(broker: Any, topics: list[Dest]) -> set[str]:
    """Which of `topics` hold dead letters: by name, or as dead-letter discovery found them."""
    patterns = deadletters.kafka_patterns()
    found = {t.name for t in topics if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)}
    if len(found) < len(topics):  # the others may carry an origin header (found before)
        found |= {f["queue"].name for f in deadletters.find(broker)}
    return found
