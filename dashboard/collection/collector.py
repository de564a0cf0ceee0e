"""One collection of one broker: ask the adapter, store the state and a sample, tell viewers.

Runs in Celery workers only, never on the request path. A broker that fails
is marked down with its error; it never raises out of here, so one broker's
trouble cannot stop the others.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from brokers.base import Adapter, BrokerError, Snapshot, connect
from brokers.base import Destination as Dest
from dashboard.collection import statuswindow
from dashboard.collection.bulk import update_many
from dashboard.config import connect_options
from dashboard.kinds import judge_all, kind_of, unconsumed_kinds
from dashboard.models import Broker, Destination, Sample

log = logging.getLogger(__name__)

# Adapters keep their connections between collections; one per broker per process.
_adapters: dict[int, tuple[str, Adapter]] = {}


def adapter_for(broker: Broker) -> Adapter:
    # The source too: it decides which ${VAR}s expand (dashboard.config.connect_options).
    fingerprint = json.dumps([broker.kind, broker.source, broker.options], sort_keys=True)
    cached = _adapters.get(broker.pk)
    if cached and cached[0] == fingerprint:
        return cached[1]
    if cached:
        cached[1].close()
    try:
        options = connect_options(broker)
    except ImproperlyConfigured as exc:  # a ${VAR} that is not set, or not allowed
        raise BrokerError(str(exc), retryable=False) from None
    adapter = connect(broker.kind, options, timeout=settings.SLUICE_BROKER_TIMEOUT)
    _adapters[broker.pk] = (fingerprint, adapter)
    return adapter


def forget_adapter(broker: Broker) -> None:
    cached = _adapters.pop(broker.pk, None)
    if cached:
        cached[1].close()


def collect(
    broker: Broker, now: float | None = None, stored: list[Destination] | None = None
) -> bool:
    """Collect `broker` once; True if it answered. `stored`, when given, receives the
    destinations as stored (for triage, which then need not read them back)."""
    now = time.time() if now is None else now
    want_topology = (
        broker.topology_at is None
        or now - broker.topology_at.timestamp() >= settings.SLUICE_TOPOLOGY_INTERVAL
    )
    started = time.monotonic()
    try:
        snapshot = adapter_for(broker).collect(topology=want_topology)
    except BrokerError as exc:
        forget_adapter(broker)
        mark_down(broker, exc.message, now)
        return False
    rows = store(broker, snapshot, now, elapsed=time.monotonic() - started)
    if stored is not None:
        stored.extend(rows)
    kind_of(broker).after_collect(broker)
    return True


def mark_down(broker: Broker, message: str, now: float) -> None:
    at = datetime.fromtimestamp(now, UTC)
    if broker.status != Broker.STATUS_DOWN:
        broker.down_since = at
        log.warning("broker %s is down: %s", broker.name, message)
    broker.status = Broker.STATUS_DOWN
    broker.error = message
    broker.last_collected = at
    broker.save(update_fields=["status", "error", "down_since", "last_collected"])


def _rate(
    given: float | None, total: int | None, prev_total: int | None, dt: float
) -> float | None:
    """The broker's own rate, else the counter's change per second."""
    if given is not None:
        return max(0.0, given)
    if total is None or prev_total is None or dt <= 0 or total < prev_total:
        return None  # first sight, or the counter was reset
    return (total - prev_total) / dt


def _arrivals(
    dest: Dest, backlog: int, in_flight: int, removed: int | None, dt: float
) -> float | None:
    """Messages/s that arrived: what is held now minus what was held, plus what was taken off."""
    if dest.removed_total is None or removed is None or dest.removed_total < removed:
        return None  # no counter, first sight, or the counter was reset
    held = dest.backlog + dest.in_flight - backlog - in_flight
    return max(0.0, (held + dest.removed_total - removed) / dt)


def prefer(given: float | None, derived: float | None) -> float | None:
    """The in-rate to show: the broker's own, unless the backlog's change says more arrived.

    Both are lower bounds of the arrivals. The broker's rate misses what it does
    not count as published (RabbitMQ's dead-lettered arrivals); the derived rate
    (the change of what the destination holds, plus what was taken off it) misses
    what left by other ways (expiry, length limits). So where the derived rate is
    higher by more than noise (10% and 0.5 msg/s), it is the one shown.
    """
    if derived is None:
        return given
    if given is None or derived - given > max(0.5, 0.1 * given):
        return derived
    return given


def trouble(
    backlog: int, consumers: int, kind: str, in_rate: float | None, out_rate: float | None
) -> int:
    """2 if the backlog is growing, 1 if it has no consumers, else 0.

    Growing: backlog > 0 and the in-rate exceeds the out-rate by more than 5%
    and 0.1 msg/s, so that a queue merely keeping up is not flagged.
    """
    if backlog <= 0:
        return 0
    if in_rate is not None and in_rate - (out_rate or 0.0) > max(0.1, 0.05 * (out_rate or 0.0)):
        return 2
    # A destination whose readers are destinations of their own (a Kafka topic's
    # groups) has no consumers to lose.
    if consumers == 0 and kind not in unconsumed_kinds():
        return 1
    return 0


def _details(dest: Dest) -> dict[str, Any]:
    return {
        "arguments": dest.arguments,
        "policy": dest.policy,
        "effective_policy": dest.effective_policy,
        "consumers": [asdict(c) for c in dest.consumer_details],
        "extra": dest.extra,
    }


_FIELDS = (
    "name",
    "vhost",
    "type",
    "state",
    "backlog",
    "in_flight",
    "consumers",
    "in_rate",
    "out_rate",
    "lag",
    "consumer_capacity",
    "in_total",
    "out_total",
    "removed_total",
    "trouble",
    "details",
    "recent",
    "updated_at",
    "gone_since",
)


# One destination's sample: key, backlog, in flight, consumers, in rate, out rate, lag.
SampleRow = tuple[str, int, int, int, float | None, float | None, int | None]


def store(
    broker: Broker, snapshot: Snapshot, now: float, elapsed: float = 0.0
) -> list[Destination]:
    """Store one collection; returns the broker's current destinations as stored."""
    at = datetime.fromtimestamp(now, UTC)
    existing = {
        row[0]: row[1:]
        for row in Destination.objects.filter(broker=broker)
        .values_list(
            "key",
            "id",
            "in_total",
            "out_total",
            "updated_at",
            "backlog",
            "in_flight",
            "removed_total",
            "recent",
        )
        .iterator()
    }
    rows_new, rows_update, samples, current = _rows(broker, snapshot, existing, now)
    with transaction.atomic():
        Destination.objects.bulk_create(rows_new, batch_size=500)
        _update_rows(rows_update)
        if existing:  # what is left was not in this snapshot
            gone_ids = [pk for pk, *_ in existing.values()]
            Destination.objects.filter(id__in=gone_ids, gone_since__isnull=True).update(
                gone_since=at
            )
        _store_samples(broker, samples, int(now))
        _mark_up(broker, snapshot, now, elapsed)
    return [*rows_new, *current]


def _rows(
    broker: Broker, snapshot: Snapshot, existing: dict[str, tuple[Any, ...]], now: float
) -> tuple[list[Destination], list[tuple[Any, ...]], list[SampleRow], list[Destination]]:
    """New rows, updates of known rows, samples, and the known rows as they will read;
    takes each seen key out of `existing`."""
    at = datetime.fromtimestamp(now, UTC)
    rows_new: list[Destination] = []
    rows_update: list[tuple[Any, ...]] = []
    samples: list[SampleRow] = []
    current: list[Destination] = []
    # A kind's status rules judge some destinations from their recent samples
    # (Kafka groups, NATS consumers: dashboard/kinds/<kind>/status.py).
    since = statuswindow.window_since(now, broker.effective_interval)
    judge = judge_all(broker, since, now)
    for dest in kind_of(broker).settle(broker, snapshot.destinations):
        prev = existing.pop(dest.key, None)
        dt = now - prev[3].timestamp() if prev else 0.0
        in_rate = _rate(dest.in_rate, dest.in_total, prev[1] if prev else None, dt)
        if prev is not None and dt > 0:
            in_rate = prefer(in_rate, _arrivals(dest, prev[4], prev[5], prev[6], dt))
        out_rate = _rate(dest.out_rate, dest.out_total, prev[2] if prev else None, dt)
        details = _details(dest)
        rank = trouble(dest.backlog, dest.consumers, dest.kind, in_rate, out_rate)
        judged = judge(dest, out_rate, now)
        if judged is not None:
            details["status"] = judged.status
            rank = max(rank, judged.trouble)
        values = {
            "name": dest.name,
            "vhost": dest.vhost,
            "type": dest.type,
            "state": dest.state,
            "backlog": dest.backlog,
            "in_flight": dest.in_flight,
            "consumers": dest.consumers,
            "in_rate": in_rate,
            "out_rate": out_rate,
            "lag": dest.lag,
            "consumer_capacity": dest.consumer_capacity,
            "in_total": dest.in_total,
            "out_total": dest.out_total,
            "removed_total": dest.removed_total,
            "trouble": rank,
            "details": details,
            # This sample and those before it, for the triage window (dashboard/triage/window.py).
            "recent": [
                *((prev[7] or []) if prev else [])[1 - statuswindow.WINDOW_COLLECTIONS :],
                [
                    int(now),
                    dest.backlog,
                    dest.in_flight,
                    dest.consumers,
                    in_rate,
                    out_rate,
                    dest.lag,
                ],
            ],
            "updated_at": at,
            "gone_since": None,
        }
        if prev is None:
            rows_new.append(Destination(broker=broker, kind=dest.kind, key=dest.key, **values))
        else:
            rows_update.append((*(values[f] for f in _FIELDS), prev[0]))
            current.append(
                Destination(id=prev[0], broker_id=broker.pk, kind=dest.kind, key=dest.key, **values)
            )
        samples.append(
            (dest.key, dest.backlog, dest.in_flight, dest.consumers, in_rate, out_rate, dest.lag)
        )
    return rows_new, rows_update, samples, current


def _store_samples(broker: Broker, samples: list[SampleRow], ts: int) -> None:
    ids = dict(
        Destination.objects.filter(broker=broker, gone_since__isnull=True).values_list("key", "id")
    )
    Sample.objects.bulk_create(
        [
            Sample(
                destination_id=ids[key],
                ts=ts,
                backlog=b,
                in_flight=f,
                consumers=c,
                in_rate=ir,
                out_rate=orate,
                lag=lag,
            )
            for key, b, f, c, ir, orate, lag in samples
        ],
        batch_size=1000,
    )


def _mark_up(broker: Broker, snapshot: Snapshot, now: float, elapsed: float) -> None:
    """The broker answered: its health, rates from its totals, and its topology when read."""
    at = datetime.fromtimestamp(now, UTC)
    health = snapshot.health
    previous = broker.health or {}
    dt = now - broker.last_ok.timestamp() if broker.last_ok else 0.0
    broker.health = {
        **asdict(health),
        "in_rate": _rate(health.in_rate, health.in_total, previous.get("in_total"), dt),
        "out_rate": _rate(health.out_rate, health.out_total, previous.get("out_total"), dt),
        "alarms": health.alarms,
        "requests": snapshot.requests,
    }
    broker.status = Broker.STATUS_UP
    broker.error = ""
    broker.down_since = None
    broker.last_collected = at
    broker.last_ok = at
    broker.collect_ms = int(elapsed * 1000)
    fields = ["status", "error", "down_since", "last_collected", "last_ok", "collect_ms", "health"]
    if snapshot.topology is not None:
        broker.topology = asdict(snapshot.topology)
        broker.topology_at = at
        fields += ["topology", "topology_at"]
    broker.save(update_fields=fields)


def _update_rows(rows: list[tuple[Any, ...]]) -> None:
    """Update many destinations in one statement each; far cheaper than bulk_update's CASE."""
    update_many(Destination, _FIELDS, rows)
