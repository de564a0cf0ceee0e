"""Which RabbitMQ queues hold dead letters: bound to a dead-letter exchange, or named like one."""

from __future__ import annotations

import fnmatch
from typing import Any

from django.conf import settings

from brokers import readable
from brokers.base import Message
from brokers.rabbitmq.deadletters import history
from brokers.readable import Unreadable
from dashboard.models import Destination


# Where dead letters are looked for: names like these, besides the queues bound to a DLX.
def patterns() -> list[str]:
    return [p.strip() for p in settings.SLUICE_DLQ_PATTERNS.split(",") if p.strip()]


def find(
    broker: Any, scans: dict[str, Any] | None = None, among: list[Destination] | None = None
) -> list[dict[str, Any]]:
    """The broker's dead-letter queues, each with why Sluice thinks so.

    `scans`: the latest looks (`latest_scans`) when the caller has them already;
    `among`: the broker's current destinations, when the caller has loaded them.

    Two routes: a queue bound to an exchange that some queue's arguments or
    policy name as its dead-letter exchange, and a name matching a pattern.
    """
    if among is not None:
        queues = [d for d in among if d.kind in ("queue", "stream") and d.gone_since is None]
    else:
        queues = list(
            Destination.objects.filter(
                broker=broker, kind__in=("queue", "stream"), gone_since__isnull=True
            )
        )
    dlx_users: dict[tuple[str, str], list[str]] = {}
    for q in queues:
        limit = ((q.details or {}).get("extra") or {}).get("limits", {}).get("dead-letter-exchange")
        if limit and limit.get("value") is not None:
            dlx_users.setdefault((q.vhost, str(limit["value"])), []).append(q.name)
    bound: dict[tuple[str, str], list[str]] = {}
    for b in (broker.topology or {}).get("bindings", []):
        key = (b.get("vhost", ""), b.get("source", ""))
        if b.get("destination_type") == "queue" and key in dlx_users:
            bound.setdefault((b.get("vhost", ""), b.get("destination", "")), []).append(
                b.get("source", "")
            )
    found = []
    for q in queues:
        why = []
        for exchange in sorted(set(bound.get((q.vhost, q.name), []))):
            users = dlx_users[(q.vhost, exchange)]
            why.append(
                f"bound to {exchange!r}, the dead-letter exchange of {', '.join(sorted(users)[:3])}"
                + (f" and {len(users) - 3} more" if len(users) > 3 else "")
            )
        pattern = next((p for p in patterns() if fnmatch.fnmatchcase(q.name, p)), None)
        if pattern:
            why.append(f"name matches {pattern!r}")
        if why:
            found.append({"queue": q, "why": why})
    return found


def death_info(message: Message) -> dict[str, Any]:
    """From its `x-death` and `x-first-death-*` headers (newest first): reason, original queue, exchange, routing key and time (Unix s) of a dead letter's first
    death; fields the headers hold in an odd form read "unreadable: ..." (`deaths.history`)."""
    h = history(message.headers)
    return {
        "reason": _shown(h.reason),
        "queue": _shown(h.queue),
        "exchange": _shown(h.exchange),
        "routing_key": _shown(h.routing_key),
        "count": h.count,
        "time": h.time
        if h.time is not None
        else readable.seconds(message.properties.get("timestamp")),
        "deaths": list(h.deaths),
    }


def _shown(value: str | Unreadable | None) -> str:
    return "" if value is None else str(value)
