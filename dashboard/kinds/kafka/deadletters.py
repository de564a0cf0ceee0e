"""Which Kafka topics hold dead letters: by name, and by the origin header their records carry."""

from __future__ import annotations

import fnmatch
from typing import Any

from django.conf import settings
from django.core.cache import cache

from brokers.base import Message
from brokers.kafka.transfer import REASON_HEADERS, origin_topic
from dashboard.jobs.deadletters import latest_scans
from dashboard.models import Destination


def origin_headers() -> tuple[str, ...]:
    return tuple(h.strip() for h in settings.SLUICE_KAFKA_ORIGIN_HEADERS.split(",") if h.strip())


def kafka_patterns() -> list[str]:
    return [p.strip() for p in settings.SLUICE_KAFKA_DLQ_PATTERNS.split(",") if p.strip()]


def header_check_key(broker: Any) -> str:
    return f"sluice:kafka-dlt-headers:{broker.pk}"


def find(
    broker: Any, scans: dict[str, Any] | None = None, among: list[Destination] | None = None
) -> list[dict[str, Any]]:
    """A Kafka cluster's dead-letter topics, each with why Sluice thinks so.

    Two routes: a name matching SLUICE_KAFKA_DLQ_PATTERNS, and records that
    carry an origin-topic header (SLUICE_KAFKA_ORIGIN_HEADERS), as seen by the
    last look at the topic or by the last header check of every topic. `among`:
    the broker's current destinations, when the caller has loaded them.
    """
    if among is not None:
        topics = sorted(
            (d for d in among if d.kind == "topic" and d.gone_since is None), key=lambda t: t.name
        )
    else:
        topics = list(
            Destination.objects.filter(
                broker=broker, kind="topic", gone_since__isnull=True
            ).order_by("name")
        )
    by_header: dict[str, str] = cache.get(header_check_key(broker)) or {}
    scanned = latest_scans(broker) if scans is None else scans
    found = []
    for t in topics:
        why = []
        pattern = next((p for p in kafka_patterns() if fnmatch.fnmatchcase(t.name, p)), None)
        if pattern:
            why.append(f"name matches {pattern!r}")
        header = by_header.get(t.name)
        if header is None and t.key in scanned:
            header = next(
                (h for m in scanned[t.key].messages for h in origin_headers() if h in m["headers"]),
                None,
            )
        if header:
            why.append(f"its records carry {header!r}")
        if why:
            found.append({"queue": t, "why": why})
    return found


def death_info(message: Message) -> dict[str, Any]:
    """The same facts for a Kafka dead letter, from its origin and exception headers."""
    headers = message.headers
    reason = next((headers[h] for h in REASON_HEADERS if isinstance(headers.get(h), str)), "")
    return {
        "reason": reason[:300],
        "queue": origin_topic(message, origin_headers()) or "",
        "exchange": "",
        "routing_key": message.routing_key,
        "count": 1,
        "time": message.properties.get("timestamp"),
        "deaths": [],
    }
