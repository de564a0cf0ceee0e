"""NATS dead letters on the Django side: the capture stream's upkeep, what the page lists and groups.

The capture stream (brokers.nats.deadletters) is created or checked from the
collection path: after a successful collection of a NATS broker, at most once
per SLUICE_NATS_CAPTURE_CHECK_MINUTES (one STREAM.INFO when all is well), and
by `manage.py nats_capture`. Only then may Sluice create it, and only while
SLUICE_NATS_CAPTURE_ADVISORIES is on. The dead-letters page reads the stream
and shows the last check's outcome; an admin can ask for a check there too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.cache import cache

from brokers.base import BrokerError, Message
from brokers.nats.deadletters import CaptureStatus, ensure_capture, manual_command
from brokers.nats.pipeline import DeadLetterClient
from brokers.nats.transfer import REASON_HEADERS, origin_subject
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.nats.connect import nats_client
from dashboard.models import Broker, Destination

log = logging.getLogger(__name__)


def client_for(broker: Broker, name: str = "sluice-dead-letters") -> DeadLetterClient:
    """A connected client on the broker's client port; BrokerError if it has none or is down."""
    return nats_client(broker, name, cls=DeadLetterClient)


def _status_key(broker: Broker) -> str:
    # By name and options: another server behind the same name is checked afresh.
    where = hashlib.sha1(json.dumps(broker.options, sort_keys=True).encode()).hexdigest()[:12]
    return f"sluice:nats-capture:{broker.name}:{where}"


def check_capture(broker: Broker) -> CaptureStatus:
    """Check (and create, when allowed) the capture stream now; remember the outcome."""
    stream = settings.SLUICE_NATS_CAPTURE_STREAM
    try:
        with client_for(broker, "sluice-capture") as client:
            status = ensure_capture(
                client,
                stream,
                create=settings.SLUICE_NATS_CAPTURE_ADVISORIES,
                max_age_days=settings.SLUICE_NATS_CAPTURE_MAX_AGE_DAYS,
                max_bytes=settings.SLUICE_NATS_CAPTURE_MAX_BYTES,
            )
    except BrokerError as exc:
        status = CaptureStatus("unreachable", stream, exc.message)
    if status.state == "created":
        log.info("broker %s: created stream %s to capture advisories", broker.name, status.stream)
    elif not status.capturing:
        log.warning("broker %s: advisories not captured: %s", broker.name, status.detail)
    remembered = {"state": status.state, "stream": status.stream, "detail": status.detail}
    cache.set(_status_key(broker), {**remembered, "at": time.time()}, 7 * 86400)
    return status


def check_now_and_then(broker: Broker) -> None:
    """From the collection path: check the capture stream at most once per interval."""
    every = settings.SLUICE_NATS_CAPTURE_CHECK_MINUTES * 60
    if cache.add(f"{_status_key(broker)}:due", 1, timeout=every):
        check_capture(broker)


def last_check(broker: Broker) -> dict[str, Any] | None:
    """The outcome of the last check: {state, stream, detail, at}, or None."""
    found: dict[str, Any] | None = cache.get(_status_key(broker))
    return found


def how_to_create() -> str:
    return manual_command(
        settings.SLUICE_NATS_CAPTURE_STREAM,
        settings.SLUICE_NATS_CAPTURE_MAX_AGE_DAYS,
        settings.SLUICE_NATS_CAPTURE_MAX_BYTES,
    )


# -- dead-letter streams ----------------------------------------------------------


def patterns() -> list[str]:
    return [p.strip() for p in settings.SLUICE_NATS_DLQ_PATTERNS.split(",") if p.strip()]


def dead_letter_streams(broker: Broker, capture: str = "") -> list[dict[str, Any]]:
    """Streams whose names match SLUICE_NATS_DLQ_PATTERNS, as the last collection saw them."""
    found = []
    streams = Destination.objects.filter(broker=broker, kind="stream", gone_since__isnull=True)
    for stream in streams.order_by("name"):
        if stream.name == capture or stream.vhost:
            continue  # the capture stream; streams of other accounts are out of reach
        pattern = next((p for p in patterns() if fnmatch.fnmatchcase(stream.name, p)), None)
        if pattern:
            extra = (stream.details or {}).get("extra") or {}
            found.append(
                {
                    "stream": stream,
                    "why": f"name matches {pattern!r}",
                    "messages": extra.get("messages", 0),
                    "subjects": extra.get("subjects") or [],
                }
            )
    return found


# -- what a dead letter is ----------------------------------------------------------


def death_info(message: Message) -> dict[str, Any]:
    """A NATS dead letter in the terms filters and groups use (see deadletters.death_info).

    queue: the stream holding it; exchange: the consumer that gave up;
    routing_key: its subject; reason: "max deliveries" or "terminated: ...".
    """
    props = message.properties
    if "consumer" in props:
        return {
            "reason": props.get("reason", ""),
            "queue": props.get("nats_stream", ""),
            "exchange": props.get("consumer", ""),
            "routing_key": message.routing_key,
            "count": props.get("deliveries", 0),
            "time": int(props["dead_at"]) if props.get("dead_at") else props.get("timestamp"),
            "deaths": [],
        }
    reason = next((message.headers[h] for h in REASON_HEADERS if message.headers.get(h)), "")
    return {
        "reason": str(reason)[:300],
        "queue": props.get("nats_stream", ""),
        "exchange": "",
        "routing_key": message.routing_key,
        "count": 1,
        "time": props.get("timestamp"),
        "deaths": [],
    }


def row(message: Message) -> dict[str, Any]:
    """One dead letter as the page lists it."""
    text = text_of(message.body)
    props = message.properties
    return {
        "id": message.id,
        "stream": props.get("nats_stream", ""),
        "seq": props.get("seq"),
        "consumer": props.get("consumer", ""),
        "reason": death_info(message)["reason"],
        "deliveries": props.get("deliveries"),
        "dead_at": props.get("dead_at"),
        "stored_at": props.get("timestamp"),
        "present": props.get("present", True),
        "subject": message.routing_key,
        "origin": origin_subject(message) or "",
        "headers": dict(message.headers),
        "size": message.size,
        "preview": (text if text is not None else message.body[:64].hex(" "))[:300],
        "binary": text is None,
    }


def groups(
    rows: list[dict[str, Any]], fields: tuple[str, ...]
) -> list[tuple[tuple[str, ...], int]]:
    """Counts per combination of `fields`, largest first."""
    counts = Counter(tuple(str(r.get(f) or "(none)") for f in fields) for r in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
