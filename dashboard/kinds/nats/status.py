"""The status of a JetStream consumer, judged from its recent history; and the NATS panels' data.

The collector calls `judge` for every NATS consumer it stores, with this
collection's figures and the samples of the window before it, and keeps the
result in `Destination.details["status"]` and in the ranking (`trouble`):

    STALLED  messages pending or awaiting acknowledgement at every collection
             of the window, and the ack floor did not move over it: nothing
             is being completed (no reader, a reader that stopped acking, or
             one message redelivered again and again);
    LAGGING  the ack floor moves, but num_pending grew over the whole window:
             messages arrive faster than the consumer takes them;
    OK       anything else (caught up, keeping up, or too little history yet).

The ack floor's movement is the consumer's out-rate (`brokers/nats/monitor.py`
makes the ack floor's consumer sequence its out-total), so it is judged from
stored samples like a Kafka group's commits (dashboard/kinds/kafka/status.py).
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

OK, LAGGING, STALLED = "OK", "LAGGING", "STALLED"


# Rank in the overview (Destination.trouble), as Kafka's STALL and WARN.
TROUBLE = {STALLED: 2, LAGGING: 2, OK: 0}
# The overview's flag for a consumer in trouble.
LABELS = {STALLED: "stalled", LAGGING: "lagging"}
# The badge class (static/css/sluice.css) of each status.
BADGES = {STALLED: "t2", LAGGING: "t1", OK: "ok"}

RULES = (
    (STALLED, "messages pending or awaiting acknowledgement at every collection of the window, "
     "and the ack floor did not move"),
    (LAGGING, "the ack floor moves, but the number pending grew over the whole window"),
    (OK, "otherwise: caught up, keeping up, or too little history yet"),
)  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One collection of one consumer."""

    ts: float
    pending: int  # num_pending: not yet delivered
    ack_pending: int  # num_ack_pending: delivered, not yet acknowledged
    ack_rate: float | None  # the ack floor's change per second; None: unknown
    readers: int


def history(broker: Any, since: float, until: float) -> dict[str, list[Point]]:
    """Samples of the broker's consumers in [since, until), oldest first, by destination key."""
    found = samples(
        broker, "consumer", ("backlog", "in_flight", "out_rate", "consumers"), since, until
    )
    return {key: [Point(*row) for row in rows] for key, rows in found.items()}


def judge(now: Point, before: list[Point]) -> Status:
    """The status of a consumer from this collection (`now`) and the ones `before` it."""
    if now.pending + now.ack_pending == 0:
        return Status(OK, "Caught up: nothing pending, nothing awaiting acknowledgement.")
    points = [*before, now]
    span = now.ts - points[0].ts
    waiting = f"{now.pending:,} pending, {now.ack_pending:,} awaiting acknowledgement"
    short = too_short(len(points), span)
    if short:
        return Status(OK, f"{waiting}; {short}")
    over = f"over the last {span:.0f} s ({len(points)} collections)"
    rates = [p.ack_rate for p in points[1:] if p.ack_rate is not None]
    acked = any(r > 0 for r in rates)
    busy = all(p.pending + p.ack_pending > 0 for p in points)
    if rates and not acked and busy:
        who = (
            "No client is reading it."
            if now.readers == 0
            else "A client reads it but completes nothing: it does not acknowledge, or the "
            "same message is redelivered again and again."
        )
        return Status(STALLED, f"{waiting}, and the ack floor did not move {over}. {who}")
    pending = [p.pending for p in points]
    if pending[-1] > pending[0] and all(b >= a for a, b in pairwise(pending)):
        return Status(
            LAGGING,
            f"Pending grew from {pending[0]:,} to {pending[-1]:,} {over} while the ack floor "
            "moves: messages arrive faster than the consumer takes them.",
        )
    if not rates:
        return Status(OK, f"{waiting}; no acknowledgement rate known yet.")
    return Status(OK, f"{waiting}; the ack floor moves and pending is not growing {over}.")


# -- the server, stream and consumer panels ---------------------------------------


def consumer_panel(dest: Any) -> dict[str, Any]:
    """What dashboard/kinds/nats/templates/dashboard/nats/consumer_panel.html shows."""
    details = dest.details or {}
    status = details.get("status") or {}
    return {
        "status": status.get("status") or "",
        "rule": status.get("rule") or "",
        "badge": BADGES.get(status.get("status") or "", ""),
        "extra": details.get("extra") or {},
        "window": (WINDOW_COLLECTIONS, WINDOW_SECONDS),
        "rules": RULES,
        "stream": _stream_of(dest),
    }


def stream_panel(dest: Any) -> dict[str, Any]:
    """What dashboard/kinds/nats/templates/dashboard/nats/stream_panel.html shows: the stream and its consumers."""
    extra = (dest.details or {}).get("extra") or {}
    # Consumer keys are "consumer/<account/>stream/name"; the stream's "stream/<account/>stream".
    prefix = "consumer/" + dest.key.removeprefix("stream/") + "/"
    consumers = [
        {
            "dest": c,
            "status": ((c.details or {}).get("status") or {}).get("status") or "",
            "extra": (c.details or {}).get("extra") or {},
        }
        for c in Destination.objects.filter(
            broker_id=dest.broker_id,
            kind="consumer",
            key__startswith=prefix,
            gone_since__isnull=True,
        )
        .select_related("broker")
        .order_by("-trouble", "-backlog", "key")
    ]
    return {"extra": extra, "consumers": consumers, "badges": BADGES}


def _stream_of(dest: Any) -> Any:
    account_and_stream = dest.key.removeprefix("consumer/").rpartition("/")[0]
    return Destination.objects.filter(
        broker_id=dest.broker_id, key=f"stream/{account_and_stream}"
    ).first()


def rules(
    broker: Any, since: float, now: float
) -> Callable[[Any, float | None, float], Judged | None]:
    """The collector's judge of each consumer: its status from this collection and those since `since`."""
    before = history(broker, since, now)

    def judge_consumer(dest: Any, out_rate: float | None, at: float) -> Judged | None:
        if dest.kind != "consumer":
            return None
        point = Point(at, dest.backlog, dest.in_flight, out_rate, dest.consumers)
        status = judge(point, before.get(dest.key, []))
        return Judged(status.as_dict(), TROUBLE[status.status])

    return judge_consumer
