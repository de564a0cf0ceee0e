"""A dead letter's history, read from its x-death and x-first-death-* headers: pure, broker-free.

RabbitMQ writes `x-death` as a list of tables, newest first, one per queue and
reason: queue, reason, count, time, exchange, routing-keys (and
original-expiration). It writes `x-first-death-queue`, `-reason` and
`-exchange` once. Any publisher can write these headers too, with anything in
them, so every field is read defensively: one that is not what RabbitMQ writes
is `Unreadable` (shown as such), and the reading never raises.

The dead-letters page, job filters and replay all read the history here, so
that they agree on where a message first died.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brokers.readable import Unreadable, text, unreadable, utc_time, whole


@dataclass(frozen=True)
class Death:
    """One entry of x-death: a queue the message died in, why, and how often."""

    queue: str | Unreadable
    reason: str | Unreadable
    exchange: str | Unreadable | None  # None: the entry names none
    routing_keys: tuple[str, ...] | Unreadable  # as it was published, CC and BCC included
    count: int | Unreadable  # deaths in this queue for this reason
    time: int | Unreadable | None  # Unix seconds of the newest of them, as written

    @property
    def when(self) -> datetime | Unreadable | None:
        """`time` as a UTC datetime; Unreadable when out of range."""
        return self.time if isinstance(self.time, Unreadable) else utc_time(self.time)

    @property
    def deaths(self) -> int:
        """`count` for totals: 1 when it is unreadable, since the entry records a death."""
        return self.count if isinstance(self.count, int) and self.count > 0 else 1


@dataclass(frozen=True)
class History:
    """What the headers say of a dead letter's deaths; empty when it has none."""

    deaths: tuple[Death, ...]  # newest first, as in x-death
    first: Death | None  # the entry of its first death
    reason: str | Unreadable  # of the first death: x-first-death-reason, else the entry's
    queue: str | Unreadable  # where it first died
    exchange: str | Unreadable | None  # it was published to before its first death
    routing_key: str | Unreadable | None  # the first it was published with before then
    count: int  # deaths in all
    time: int | None  # Unix seconds of the first death's entry, when a whole number
    problem: Unreadable | None = None  # x-death itself is not a list of tables


def history(headers: dict[str, Any]) -> History:
    """The history in `headers` (JSON-safe, as `Message.headers`); never raises."""
    raw = headers.get("x-death")
    problem = None
    if raw is not None and not isinstance(raw, list):
        problem, raw = unreadable("x-death is not a list", raw), []
    deaths = tuple(_death(d) for d in raw or ())
    first = _first(deaths, headers.get("x-first-death-queue"), headers.get("x-first-death-reason"))
    exchange: str | Unreadable | None = None
    if first is not None and first.exchange is not None:
        exchange = first.exchange
    elif "x-first-death-exchange" in headers:
        exchange = text(headers["x-first-death-exchange"])
    keys = first.routing_keys if first is not None else ()
    return History(
        deaths=deaths,
        first=first,
        reason=_header_or(headers, "x-first-death-reason", first.reason if first else ""),
        queue=_header_or(headers, "x-first-death-queue", first.queue if first else ""),
        exchange=exchange,
        routing_key=keys if isinstance(keys, Unreadable) else (keys[0] if keys else None),
        count=sum(d.deaths for d in deaths),
        time=first.time if first is not None and isinstance(first.time, int) else None,
        problem=problem,
    )


def _death(entry: Any) -> Death:
    if not isinstance(entry, dict):
        bad = unreadable("not a table", entry)
        return Death(bad, bad, None, (), bad, None)
    keys = entry.get("routing-keys")
    routing_keys: tuple[str, ...] | Unreadable = ()
    if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
        routing_keys = tuple(keys)
    elif keys is not None:
        routing_keys = unreadable("not a list of text", keys)
    when = entry.get("time")
    exchange = entry.get("exchange")
    return Death(
        queue=text(entry.get("queue")),
        reason=text(entry.get("reason")),
        exchange=None if exchange is None else text(exchange),
        routing_keys=routing_keys,
        count=whole(entry.get("count", 1)),
        time=None if when is None else whole(when),
    )


def _first(deaths: tuple[Death, ...], queue: Any, reason: Any) -> Death | None:
    """The entry of the first death: the oldest for the first death's queue and reason,
    else the oldest for that queue, else the oldest of all."""
    by_queue = None
    for d in reversed(deaths):
        if isinstance(d.queue, str) and d.queue == queue:
            if d.reason == reason:
                return d
            by_queue = by_queue or d
    return by_queue or (deaths[-1] if deaths else None)


def _header_or(headers: dict[str, Any], name: str, fallback: str | Unreadable) -> str | Unreadable:
    value = headers.get(name)
    return value if isinstance(value, str) and value else fallback
