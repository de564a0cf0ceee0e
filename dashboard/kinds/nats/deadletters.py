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
from brokers.nats.client import JetStreamOff, Missing
from brokers.nats.deadletters import (
    CaptureStatus,
    advisory_counts,
    ensure_capture,
    manual_command,
)
from brokers.nats.pipeline import DeadLetterClient
from brokers.nats.transfer import REASON_HEADERS, origin_subject
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.nats.connect import nats_client
from dashboard.models import Broker, Destination

log = logging.getLogger(__name__)


# Seconds allowed to each request of the advisory count read after every collection.
COUNTS_TIMEOUT = 1.0


def client_for(
    broker: Broker, name: str = "sluice-dead-letters", timeout: float | None = None
) -> DeadLetterClient:
    """A connected client on the broker's client port; BrokerError if it has none or is down."""
    return nats_client(broker, name, cls=DeadLetterClient, timeout=timeout)


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


def capture_stream(broker: Broker) -> str | None:
    """The stream capturing advisories, as the last check found it; None if none does.

    Before any check, the configured name (SLUICE_NATS_CAPTURE_STREAM).
    """
    check = last_check(broker)
    if check is None:
        return str(settings.SLUICE_NATS_CAPTURE_STREAM)
    return (
        str(check["stream"]) if CaptureStatus(check["state"], check["stream"]).capturing else None
    )


def captured_counts(broker: Broker) -> tuple[str, dict[str, int]] | None:
    """(capture stream, the advisories it holds per subject), read now in one request.

    None when nothing captures them (no such stream, no JetStream, no client
    URL): the dead-letters page says how to set it up. BrokerError when the
    server does not answer within COUNTS_TIMEOUT.
    """
    stream = capture_stream(broker)
    if not stream or not (broker.options or {}).get("url"):
        return None
    with client_for(broker, "sluice-triage", timeout=COUNTS_TIMEOUT) as client:
        try:
            return stream, advisory_counts(client, stream)
        except (Missing, JetStreamOff):
            return None


def how_to_create() -> str:
    return manual_command(
        settings.SLUICE_NATS_CAPTURE_STREAM,
        settings.SLUICE_NATS_CAPTURE_MAX_AGE_DAYS,
        settings.SLUICE_NATS_CAPTURE_MAX_BYTES,
    )


# -- dead-letter streams ----------------------------------------------------------


def patterns() -> list[str]:
    return [p.strip() for p in settings.SLUICE_NATS_DLQ_PATTERNS.split(",") if p.strip()]


def dead_letter_pattern(name: str, vhost: str = "") -> str | None:
    """The SLUICE_NATS_DLQ_PATTERNS pattern that makes stream `name` a dead-letter stream, if any.

    Streams of other accounts are not: Sluice cannot read them.
    """
    if vhost:
        return None
    return next((p for p in patterns() if fnmatch.fnmatchcase(name, p)), None)


def dead_letter_streams(
    broker: Broker, capture: str = "", among: list[Destination] | None = None
) -> list[dict[str, Any]]:
    """Streams whose names match SLUICE_NATS_DLQ_PATTERNS, as the last collection saw them
    (`among` the broker's current destinations, when the caller has loaded them)."""
    found = []
    if among is not None:
        streams = sorted(
            (d for d in among if d.kind == "stream" and d.gone_since is None), key=lambda s: s.name
        )
    else:
        streams = list(
            Destination.objects.filter(
                broker=broker, kind="stream", gone_since__isnull=True
            ).order_by("name")
        )
    for stream in streams:
        if stream.name == capture:
            continue
        pattern = dead_letter_pattern(stream.name, stream.vhost)
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
