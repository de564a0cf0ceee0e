"""NATS's own triage: healthz, stalled consumers, dead letters told by advisories, redelivery
storms, the limits of streams, and what a stream's backlog is.

The kind-neutral detectors (dashboard/triage/detectors.py) find lost consumers,
growing backlogs and dead-letter streams filling; these add what only NATS
tells. JetStream has no dead-letter queue: a consumer that gives up on a
message only says so in an advisory, which the capture stream keeps
(dashboard/kinds/nats/deadletters.py). So a consumer whose every message
reaches max deliveries has nothing pending and shows OK; its advisories,
counted after each collection, are what give it away.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from django.conf import settings

from brokers.base import BrokerError
from brokers.base import Destination as Dest
from brokers.nats.deadletters import advisory_subject
from dashboard.collection.statuswindow import window_since
from dashboard.kinds.nats import deadletters
from dashboard.kinds.nats.status import STALLED
from dashboard.models import Broker, Destination
from dashboard.triage.detectors import Context
from dashboard.triage.findings import CRITICAL, WARNING, Finding, Limit, duration, rate

log = logging.getLogger(__name__)

# What the detectors keep in Context.memo between evaluations.
ADVISORIES = "nats:advisories"  # {"stream", "at", "counts": {subject: n}, "arrivals": {key: [...]}}
REDELIVERED = "nats:redelivered"  # {consumer key: [ts, num_redelivered, delivered seq]}

# A limit is near when this share of it is used, or it is reached within the
# stalled detector's threshold (seconds, 900 unless a rule says otherwise).
NEAR_SHARE = 0.9
NEAR_SECONDS = 900.0


def _extra(dest: Any) -> dict[str, Any]:
    return (dest.details or {}).get("extra") or {}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def stream_key(consumer_key: str) -> str:
    """The key of a consumer's stream: "consumer/<account/>stream/name" -> "stream/<account/>stream"."""
    return "stream/" + consumer_key.removeprefix("consumer/").rpartition("/")[0]


# -- the broker ----------------------------------------------------------------------


def healthz(ctx: Context) -> Iterable[Finding]:
    """/healthz not ok: the server answers its monitoring, but JetStream is not (all) well."""
    broker = ctx.broker
    found = (broker.health or {}).get("healthz") or {}
    status = str(found.get("status") or "")
    if not status or status == "ok" or not ctx.enabled("healthz"):
        return  # "" is a server too old to have /healthz
    if broker.status != Broker.STATUS_UP and not ctx.is_open("healthz"):
        return  # what a server that does not answer last said opens nothing; "unreachable" does
    error = str(found.get("error") or "no reason given")
    yield Finding(
        cause="healthz",
        severity=ctx.severity("healthz", CRITICAL),
        summary=f"healthz {status}: {error}",
        rule="A NATS server is unhealthy when its /healthz answers other than ok (JetStream not ready, a stream or consumer without a leader), even though it still answers its monitoring.",
        evidence={"status": status, "error": error},
        actions=("broker",),
    )


# -- consumers -----------------------------------------------------------------------


def stalled(ctx: Context) -> Iterable[Finding]:
    """Consumers the status rules judge STALLED: work waits, and the ack floor does not move."""
    streams = {d.key: d for d in ctx.destinations if d.kind == "stream"}
    for dest in ctx.destinations:
        status = (dest.details or {}).get("status") or {}
        if dest.kind != "consumer" or status.get("status") != STALLED:
            continue
        if not ctx.enabled("stalled", dest):
            continue
        since = _still_since(ctx, dest)
        text = (
            f"ack floor has not moved for {duration(ctx.now - since)}; "
            f"{dest.backlog:,} pending, {dest.in_flight:,} awaiting acknowledgement"
        )
        stream = streams.get(stream_key(dest.key))
        near = _near_limit(ctx, dest, stream.in_rate if stream else None)
        if near is not None:
            text += f"; {near[2]}"
        yield Finding(
            cause="stalled",
            severity=ctx.severity("stalled", CRITICAL if near else WARNING, dest),
            summary=text,
            rule="A consumer is stalled when messages were pending or awaiting acknowledgement at every collection of the window and its ack floor did not move: nothing is being completed.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "since": since,
                "pending": dest.backlog,
                "ack_pending": dest.in_flight,
                "readers": dest.consumers,
                "status_rule": status.get("rule", ""),
                "limit": near[1].name if near else None,
                "full_in_s": round(near[0]) if near and near[0] is not None else None,
            },
            actions=("open", "browse"),
            impact_seconds=near[0] if near else None,
        )


def _still_since(ctx: Context, dest: Destination) -> float:
    """Since when the ack floor has not moved: the window's last move, or its start.

    An open incident keeps the moment it first found, so the figure grows past the window.
    """
    points = ctx.points(dest)
    moved = [p.ts for p in points[1:] if (p.out_rate or 0) > 0]
    since = float(moved[-1] if moved else points[0].ts if points else ctx.now)
    previous = ctx.live.get(("stalled", dest.key))
    if previous is not None and previous.evidence.get("since"):
        since = min(since, float(previous.evidence["since"]))
    return since


def _near_limit(
    ctx: Context, dest: Destination, in_rate: float | None
) -> tuple[float | None, Limit, str] | None:
    """The stream limit a stalled consumer is near, as (seconds left, the limit, in words):
    NEAR_SHARE of it used, or reached within the threshold at the stream's in-rate."""
    within = ctx.threshold("stalled", NEAR_SECONDS, dest)
    for limit in limits(dest):
        share = limit.used / limit.limit
        left = 0.0 if share >= 1 else limit.seconds_left(in_rate or 0.0)
        what = f"its stream's {limit.name} ({limit.limit:,.0f} {limit.unit})"
        if share >= NEAR_SHARE:
            return left, limit, f"{share:.0%} of {what} used"
        if left is not None and left < within:
            return left, limit, f"{what} reached in {duration(left)}"
    return None


def redelivery(ctx: Context) -> Iterable[Finding]:
    """More and more of a consumer's unacknowledged messages have been delivered more than once."""
    before: dict[str, list[float]] = ctx.memo.get(REDELIVERED) or {}
    now: dict[str, list[float]] = {}
    for dest in ctx.destinations:
        if dest.kind != "consumer":
            continue
        extra = _extra(dest)
        count = int(extra.get("num_redelivered") or 0)
        delivered = int(extra.get("delivered_consumer_seq") or 0)
        now[dest.key] = [ctx.now, count, delivered]
        prev = before.get(dest.key)
        if prev is None or prev[0] >= ctx.now:
            continue
        rise = count - int(prev[1])
        # Held while deliveries go on and the count does not fall, and some still await
        # acknowledgement: the server keeps counting messages it gave up on (max deliveries).
        holding = (
            ctx.is_open("redelivery", dest.key) and count > 0 and rise >= 0 and dest.in_flight > 0
        )
        if not (rise > 0 or (holding and delivered > prev[2])):
            continue
        if not ctx.enabled("redelivery", dest):
            continue
        dt = ctx.now - prev[0]
        text = f"{_plural(count, 'unacknowledged message')} delivered more than once, " + (
            f"up {rise:,} in {duration(dt)} ({rise / dt:,.1f}/s)"
            if rise > 0
            else f"unchanged over {duration(dt)}"
        )
        if extra.get("deliver_rate"):
            text += f"; {rate(extra['deliver_rate'])} delivered"
        max_deliver = extra.get("max_deliver") or -1
        if max_deliver > 0:
            text += f"; each is given up after {max_deliver} deliveries"
        yield Finding(
            cause="redelivery",
            severity=ctx.severity("redelivery", WARNING, dest),
            summary=text,
            rule="A redelivery storm is a consumer's count of unacknowledged messages delivered more than once (its client naks them or lets them time out) rising two collections in a row; it holds while deliveries go on and the count does not fall.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "num_redelivered": count,
                "before": int(prev[1]),
                "interval_s": dt,
                "per_s": round(rise / dt, 3),
                "deliver_rate": extra.get("deliver_rate"),
                "max_deliver": max_deliver,
            },
            actions=("open", "browse"),
            worsening=rise > 0,
            confirm=2,
        )
    ctx.memo[REDELIVERED] = now


# -- dead letters, from the advisories the capture stream keeps ------------------------

COUNTS_FAILED = "advisory_counts_failed_at"
RETRY_AFTER = 60  # seconds before a failed read of the counts is tried again


def dead_letters(ctx: Context) -> Iterable[Finding]:
    """Max-delivery and terminated advisories that reached the capture stream since the last
    collection, per consumer: one STREAM.INFO with per-subject counts, read after each collection."""
    failed = ctx.memo.get(COUNTS_FAILED)
    if failed is not None and ctx.now - failed < RETRY_AFTER:
        # A client port that did not answer is not tried again at every collection,
        # so that it cannot hold up each one by a timeout.
        yield from _held(ctx)
        return
    try:
        read = deadletters.captured_counts(ctx.broker)
    except BrokerError as exc:
        # The server was collected a moment ago; a missed read says nothing of the
        # consumers: what is open stays open, and the next read counts from the last.
        log.warning("broker %s: advisory counts not read: %s", ctx.broker.name, exc.message)
        ctx.memo[COUNTS_FAILED] = ctx.now
        yield from _held(ctx)
        return
    ctx.memo.pop(COUNTS_FAILED, None)
    if read is None:
        ctx.memo.pop(ADVISORIES, None)  # nothing captures them: the dead-letters page says so
        return
    stream, counts = read
    memo = ctx.memo.get(ADVISORIES)
    ctx.memo[ADVISORIES] = {"stream": stream, "at": ctx.now, "counts": counts, "arrivals": {}}
    if not memo or memo.get("stream") != stream or memo.get("at", ctx.now) >= ctx.now:
        return  # the first count is where counting starts
    dt = ctx.now - memo["at"]
    fresh: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for subject, count in counts.items():
        parsed = advisory_subject(subject)
        new = count - int(memo["counts"].get(subject, 0))
        if parsed is None or new <= 0:
            continue  # a drop is the capture stream's own limits removing old advisories
        kind, on_stream, consumer = parsed
        fresh[(on_stream, consumer)][0 if kind == "max_deliveries" else 1] += new
    since = window_since(ctx.now, ctx.broker.effective_interval)
    consumers = _consumers_by_name(ctx.destinations)
    arrivals: dict[str, list[list[float]]] = {}
    for key, entries in (memo.get("arrivals") or {}).items():
        kept = [e for e in entries if e[0] >= since]
        if kept:
            arrivals[key] = kept
    places: dict[str, tuple[str, str, Destination | None]] = {}
    for (on_stream, consumer), (maxed, terminated) in fresh.items():
        dest = consumers.get((on_stream, consumer))
        key = dest.key if dest is not None else f"consumer/{on_stream}/{consumer}"
        arrivals.setdefault(key, []).append([ctx.now, dt, maxed, terminated])
        places[key] = (on_stream, consumer, dest)
    ctx.memo[ADVISORIES]["arrivals"] = arrivals
    for key, entries in arrivals.items():
        latest = entries[-1] if entries[-1][0] == ctx.now else None
        # Opens on advisories since the last collection; holds until a whole window has none.
        if latest is None and not ctx.is_open("dead_letters", key):
            continue
        on_stream, consumer, dest = places.get(key) or _place(key, consumers)
        if not ctx.enabled("dead_letters", dest):
            continue
        yield _dead_letter_finding(ctx, key, on_stream, consumer, dest, entries, latest, stream)


def _dead_letter_finding(
    ctx: Context,
    key: str,
    on_stream: str,
    consumer: str,
    dest: Destination | None,
    entries: list[list[float]],
    latest: list[float] | None,
    capture: str,
) -> Finding:
    max_deliver = _extra(dest).get("max_deliver") if dest is not None else None
    limit = f" ({max_deliver})" if max_deliver and max_deliver > 0 else ""
    total_max = int(sum(e[2] for e in entries))
    total_term = int(sum(e[3] for e in entries))
    span = ctx.now - (entries[0][0] - entries[0][1])
    if latest is not None:
        maxed, terminated, dt = int(latest[2]), int(latest[3]), latest[1]
        if maxed:
            text = f"{_plural(maxed, 'message')} reached max deliveries{limit} in the last {duration(dt)}"
            text += f"; {terminated:,} terminated" if terminated else ""
        else:
            text = f"{_plural(terminated, 'message')} terminated by the client in the last {duration(dt)}"
    else:
        text = (
            f"none since the last collection; {total_max:,} reached max deliveries{limit} "
            f"and {total_term:,} were terminated in the last {duration(span)}"
        )
    return Finding(
        cause="dead_letters",
        severity=ctx.severity("dead_letters", WARNING, dest),
        summary=text,
        rule="Dead letters are arriving at a consumer when the advisory capture stream recorded max-delivery or terminated advisories for it since the last collection; it holds until a whole window records none.",
        key=key,
        name=dest.name if dest is not None else f"{on_stream} › {consumer}",
        dest_id=dest.pk if dest is not None else None,
        evidence={
            "stream": on_stream,
            "consumer": consumer,
            "max_deliveries": int(latest[2]) if latest else 0,
            "terminated": int(latest[3]) if latest else 0,
            "interval_s": latest[1] if latest else None,
            "window_max_deliveries": total_max,
            "window_terminated": total_term,
            "window_s": span,
            "max_deliver": max_deliver,
            "capture_stream": capture,
        },
        actions=("open", "deadletters"),
        worsening=latest is not None,
    )


def _held(ctx: Context) -> Iterable[Finding]:
    """The open dead-letter incidents of consumers, as they were: their condition is unknown."""
    for (cause, key), incident in ctx.live.items():
        if cause == "dead_letters" and key.startswith("consumer/") and ctx.is_open(cause, key):
            yield Finding(
                cause=cause,
                severity=incident.severity,
                summary=incident.summary,
                rule=incident.rule,
                key=key,
                name=incident.name,
                dest_id=incident.destination_id,
                evidence=incident.evidence,
                actions=tuple(incident.actions),
            )


def _consumers_by_name(destinations: list[Destination]) -> dict[tuple[str, str], Destination]:
    """Consumers by (stream, consumer name); those of Sluice's own account win."""
    found: dict[tuple[str, str], Destination] = {}
    for dest in destinations:
        if dest.kind != "consumer":
            continue
        extra = _extra(dest)
        name = (str(extra.get("stream", "")), str(extra.get("consumer_name", "")))
        if name not in found or not dest.vhost:
            found[name] = dest
    return found


def _place(
    key: str, consumers: dict[tuple[str, str], Destination]
) -> tuple[str, str, Destination | None]:
    rest = key.removeprefix("consumer/")
    account_and_stream, _, consumer = rest.rpartition("/")
    on_stream = account_and_stream.rpartition("/")[2]
    return on_stream, consumer, consumers.get((on_stream, consumer))


# -- limits, dead-letter streams and backlogs ---------------------------------------------


def limits(dest: Any) -> list[Limit]:
    """The max_msgs and max_bytes of a stream, or of a consumer's stream (-1: none).

    What is used of them depends on what the stream does when full: with discard
    "new" its messages count, as publishes are refused once it is full; with
    discard "old" the unfinished messages of `dest` count (its backlog, plus
    those awaiting acknowledgement), as the stream then drops its oldest,
    read or not. Bytes are estimated from the stream's average message size.
    """
    extra = _extra(dest)
    if dest.kind == "consumer":
        held = extra.get("stream_limits") or {}
    elif dest.kind == "stream":
        held = extra
    else:
        return []
    messages, size = int(held.get("messages") or 0), int(held.get("bytes") or 0)
    unfinished = messages if held.get("discard") == "new" else dest.backlog + dest.in_flight
    out = []
    max_msgs = held.get("max_msgs")
    if isinstance(max_msgs, int | float) and max_msgs > 0:
        out.append(Limit("max_msgs", max_msgs, unfinished, "messages"))
    max_bytes = held.get("max_bytes")
    if isinstance(max_bytes, int | float) and max_bytes > 0 and messages and size:
        per = size / messages
        out.append(Limit("max_bytes", max_bytes, unfinished * per, "bytes", per))
    return out


def dead_letter_keys(broker: Broker, among: list[Any] | None = None) -> set[str]:
    """The dead-letter streams (named by SLUICE_NATS_DLQ_PATTERNS).

    Not the capture stream: its advisories are told per consumer (`dead_letters`
    above), and counting them again on the stream would show one fire twice.
    """
    capture = deadletters.capture_stream(broker) or settings.SLUICE_NATS_CAPTURE_STREAM
    found = deadletters.dead_letter_streams(broker, capture, among=among)
    return {f["stream"].key for f in found}


def settle(destinations: tuple[Dest, ...]) -> tuple[Dest, ...]:
    """A stream's backlog as every kind means it: the messages waiting for a reader.

    - a work-queue stream: its messages (taking one removes it);
    - a stream with consumers: the largest num_pending among them (the
      slowest reader's), as a topic's backlog is its groups' lag;
    - a dead-letter stream no consumer reads: its messages;
    - any other stream: 0 (it keeps messages for readers yet to come).

    Its out-total is then what left that backlog (the last sequence minus the
    backlog), so that in-rate minus out-rate is the backlog's growth, as for
    a consumer; a stream whose backlog means nothing has no out-rate.
    """
    slowest: dict[str, int] = {}
    for dest in destinations:
        if dest.kind == "consumer":
            key = stream_key(dest.key)
            slowest[key] = max(slowest.get(key, 0), dest.backlog)
    out = []
    for dest in destinations:
        if dest.kind == "stream":
            dest = _settled(dest, slowest.get(dest.key))
        out.append(dest)
    return tuple(out)


def _settled(stream: Dest, slowest: int | None) -> Dest:
    messages = int(stream.extra.get("messages") or 0)
    if stream.type == "workqueue":
        backlog = messages
    elif slowest is not None:
        backlog = slowest
    elif deadletters.dead_letter_pattern(stream.name, stream.vhost):
        backlog = messages
    else:
        return stream
    last = stream.in_total or 0
    return replace(stream, backlog=backlog, out_total=max(0, last - backlog))
