"""One collection of one broker: ask the adapter, store the state and a sample, tell viewers.

Runs in Celery workers only, never on the request path. A broker that fails
is marked down with its error; it never raises out of here, so one broker's
trouble cannot stop the others.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models.base import ModelState

from brokers.base import Adapter, BrokerError, Snapshot, connect
from brokers.base import Destination as Dest
from dashboard.collection import series, statuswindow
from dashboard.collection.bulk import insert_many, update_many
from dashboard.config import connect_options
from dashboard.kinds import judge_all, kind_of, unconsumed_kinds
from dashboard.models import Broker, Collection, Destination, Gap, Sample

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
        # A Consumer is frozen and its fields are plain values: its own __dict__ is what
        # asdict() would copy, at no cost (nothing writes to it).
        "consumers": [vars(c) for c in dest.consumer_details],
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
    "digest",
    "recent",
    "updated_at",
    "gone_since",
)


# What decides whether a known row is written: all it stores but these (Destination.digest).
_UNHASHED = ("digest", "recent", "updated_at")
_HASHED = tuple(f for f in _FIELDS if f not in _UNHASHED)
_FIGURES = series.FIGURES
# What the collection reads of a known row (after its key, by these positions): what
# rates, samples and `recent` are made from.
_READ = (
    "id", "digest", "in_total", "out_total", "removed_total", "updated_at", "gone_since",
    "recent", *_FIGURES,
)  # fmt: skip
_ID, _DIGEST, _IN, _OUT, _REMOVED, _WRITTEN, _GONE, _RECENT = range(8)
_FIGURES_AT = slice(8, 8 + len(_FIGURES))
_RAW = _FIGURES_AT.stop  # after them, `recent` as the database gave it (text, or None)
Known = tuple[Any, ...]  # a row as _READ lists it, and _RAW

# What this process worked out from a broker's rows at the last collection it stored, by
# key: (the _HASHED values, their digest, `recent` as the database holds it, decoded).
# Each is used only where its input is equal to what it was worked out from, so a stale
# entry (another process stored since) costs the work it would have saved, never a
# wrong answer. Replaced whole at every collection: it holds the current keys only.
_Memo = dict[str, tuple[tuple[Any, ...], str, str | None, list[list[Any]]]]
_memos: dict[int, _Memo] = {}


def store(
    broker: Broker, snapshot: Snapshot, now: float, elapsed: float = 0.0
) -> list[Destination]:
    """Store one collection; returns the broker's current destinations as stored.

    A row is written only when something it holds changes, and a Sample only when
    its figures do (dashboard/collection/series.py reads them back per collection);
    the rows returned carry their window's entries (`recent`, statuswindow.expand)
    as of this collection, written or not.
    """
    at = datetime.fromtimestamp(now, UTC)
    memo = _memos.get(broker.pk, {})
    with _no_gc():
        existing = _known(broker, memo)
        collections = series.recent_collections(broker.pk, statuswindow.WINDOW_COLLECTIONS)
        rows_new, rows_update, samples, current, _memos[broker.pk] = _rows(
            broker, snapshot, existing, now, collections, memo
        )
    with transaction.atomic():
        Destination.objects.bulk_create(rows_new, batch_size=500)
        update_many(Destination, _FIELDS, rows_update)
        _mark_gone(broker, existing, int(now), at)
        _store_samples(broker, rows_new, samples, int(now))
        Collection.objects.create(broker=broker, ts=int(now))
        _mark_up(broker, snapshot, now, elapsed)
    return [*rows_new, *current]


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cycle collector paused: making 5,000 rows' dicts and lists would otherwise run
    it several times over the whole heap, for garbage that holds no cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _known(broker: Broker, memo: _Memo) -> dict[str, Known]:
    """The broker's rows as `_READ` lists them, by key.

    Read with the cursor, as tuples: at 5,000 rows the ORM's converters and a dict
    per row cost more than the rest of the read. `recent` is decoded unless `memo`
    has it decoded from the same text.
    """
    table = Destination._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT key, {', '.join(_READ)} FROM {table} WHERE broker_id = %s", [broker.pk]
        )
        rows = cursor.fetchall()
    loads = json.loads
    out: dict[str, Known] = {}
    for key, *row in rows:
        written = row[_WRITTEN]
        row[_WRITTEN] = (
            written if isinstance(written, datetime) and written.tzinfo else _aware(written)
        )
        if row[_GONE] is not None:
            row[_GONE] = _aware(row[_GONE])
        raw = row[_RECENT]
        if isinstance(raw, str | bytes):
            known = memo.get(key)
            row[_RECENT] = known[3] if known is not None and known[2] == raw else loads(raw)
            row.append(raw)
        else:
            row.append(None)
        out[key] = tuple(row)
    return out


def _aware(value: Any) -> datetime:
    """A timestamp column as the cursor gives it (SQLite: text in UTC), as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _last_seen(broker: Broker, prev: Known) -> float:
    """When the broker last listed a known row: a row not gone was listed at its broker's
    last collection that answered, though the row was written at its last change."""
    written: float = prev[_WRITTEN].timestamp()
    if prev[_GONE] is not None or broker.last_ok is None:
        return written
    return max(written, broker.last_ok.timestamp())


def _digest(hashed: tuple[Any, ...]) -> str:
    """A hash of a row's `_HASHED` values. A pickle is exact for the floats, the same on
    every run of the same code, and three times cheaper than repr; a Python whose
    pickles differ costs one more write per row, once."""
    return hashlib.blake2b(pickle.dumps(hashed, protocol=5), digest_size=16).hexdigest()


def _loaded(values: dict[str, Any]) -> Destination:
    """A Destination as read from the database, without Model.__init__'s cost per field
    (the collection returns every row of the broker); `values` holds every field, and
    becomes the row's own attributes."""
    row = Destination.__new__(Destination)
    state = values["_state"] = ModelState()
    state.adding = False
    state.db = "default"
    row.__dict__ = values
    return row


def _rows(
    broker: Broker,
    snapshot: Snapshot,
    existing: dict[str, Known],
    now: float,
    collections: list[int],
    memo: _Memo,
) -> tuple[
    list[Destination], list[tuple[Any, ...]], list[tuple[Any, ...]], list[Destination], _Memo
]:
    """New rows, updates of known rows that changed, samples (key or id, *figures) of those
    whose figures changed, the known rows as they will read, and the memo for the next
    collection; takes each seen key out of `existing`."""
    at = datetime.fromtimestamp(now, UTC)
    rows_new: list[Destination] = []
    rows_update: list[tuple[Any, ...]] = []
    samples: list[tuple[Any, ...]] = []
    current: list[Destination] = []
    worked_out: _Memo = {}
    # A kind's status rules judge some destinations from their recent samples
    # (Kafka groups, NATS consumers: dashboard/kinds/<kind>/status.py).
    since = statuswindow.window_since(now, broker.effective_interval)
    judge = judge_all(broker, since, now)
    for dest in kind_of(broker).settle(broker, snapshot.destinations):
        prev = existing.pop(dest.key, None)
        dt = now - _last_seen(broker, prev) if prev else 0.0
        in_rate = _rate(dest.in_rate, dest.in_total, prev[_IN] if prev else None, dt)
        if dest.arrival_rate is not None:
            in_rate = prefer(in_rate, dest.arrival_rate)
        elif prev is not None and dt > 0:
            backlog, in_flight = prev[_FIGURES_AT][:2]
            in_rate = prefer(in_rate, _arrivals(dest, backlog, in_flight, prev[_REMOVED], dt))
        out_rate = _rate(dest.out_rate, dest.out_total, prev[_OUT] if prev else None, dt)
        details = _details(dest)
        rank = trouble(dest.backlog, dest.consumers, dest.kind, in_rate, out_rate)
        judged = judge(dest, out_rate, now)
        if judged is not None:
            details["status"] = judged.status
            rank = max(rank, judged.trouble)
        figures = (dest.backlog, dest.in_flight, dest.consumers, in_rate, out_rate, dest.lag)
        if prev is None or prev[_GONE] is not None:
            recent = [[int(now), *figures]]  # new, or listed again: its window starts now
        elif figures != prev[_FIGURES_AT]:
            recent = statuswindow.kept(prev[_RECENT] or [], [int(now), *figures], collections)
        else:
            recent = prev[_RECENT] or [[int(now), *figures]]
        # In _HASHED's order: what decides whether the row is written.
        hashed = (
            dest.name, dest.vhost, dest.type, dest.state, *figures, dest.consumer_capacity,
            dest.in_total, dest.out_total, dest.removed_total, rank, details, None,
        )  # fmt: skip
        values: dict[str, Any] = dict(zip(_HASHED, hashed, strict=True))
        known = memo.get(dest.key)
        digest = known[1] if known is not None and known[0] == hashed else _digest(hashed)
        values["digest"] = digest
        raw = prev[_RAW] if prev is not None and recent is prev[_RECENT] else json.dumps(recent)
        worked_out[dest.key] = (hashed, digest, raw, recent)
        # The window's entries, for triage (statuswindow.expand, dashboard/triage/window.py).
        values["recent"] = recent
        values["updated_at"] = at
        if prev is None:
            rows_new.append(Destination(broker=broker, kind=dest.kind, key=dest.key, **values))
            samples.append((dest.key, *figures))
            continue
        changed = recent is not prev[_RECENT]
        if changed:
            samples.append((prev[_ID], *figures))
        if changed or digest != prev[_DIGEST] or prev[_GONE] is not None:
            rows_update.append((*(values[f] for f in _FIELDS), prev[_ID]))
        else:
            values["updated_at"] = prev[_WRITTEN]  # as stored
        values.update(id=prev[_ID], broker_id=broker.pk, kind=dest.kind, key=dest.key)
        current.append(_loaded(values))
    return rows_new, rows_update, samples, current, worked_out


def _mark_gone(broker: Broker, left: dict[str, Known], ts: int, at: datetime) -> None:
    """The rows not in this snapshot that were listed until now: gone since `at`, a Gap in
    their history, and `updated_at` when they were last listed (what their figures are from)."""
    gone = [prev for prev in left.values() if prev[_GONE] is None]
    if not gone:
        return
    seen = [(at, datetime.fromtimestamp(_last_seen(broker, p), UTC), p[_ID]) for p in gone]
    update_many(Destination, ("gone_since", "updated_at"), seen)
    Gap.objects.bulk_create([Gap(destination_id=p[_ID], ts=ts) for p in gone], batch_size=1000)


def _store_samples(
    broker: Broker, rows_new: list[Destination], samples: list[tuple[Any, ...]], ts: int
) -> None:
    """Samples name a known row by id, a new one by key (the database may give no id back)."""
    ids = {row.key: row.pk for row in rows_new if row.pk is not None}
    missing = [row.key for row in rows_new if row.pk is None]
    if missing:
        ids.update(
            Destination.objects.filter(broker=broker, key__in=missing).values_list("key", "id")
        )
    insert_many(
        Sample,
        ("destination_id", "ts", *series.FIGURES),
        [(ids[ref] if isinstance(ref, str) else ref, ts, *figures) for ref, *figures in samples],
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
