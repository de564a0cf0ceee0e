"""History stored on change: a Sample when a destination's figures change, a row write when
what the row holds changes, and every reader seeing one point per collection all the same.

Each test stores collections through the collector, and compares what the charts,
sparklines, rollups and status windows read with a reference written the old way:
one Sample per destination per collection, of the figures the collector stored.
The rates are multiples of 1/4, so their sums and means are exact in floating point
and the comparisons can be exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from brokers.base import Destination as D
from brokers.base import Health, Snapshot
from dashboard.collection import collector, history, queries, series, statuswindow
from dashboard.models import Broker, Collection, Destination, Rollup, Sample

T0 = 1_800_000_000
STEP = 20  # seconds between collections
KEYS = ("//busy", "//idle", "//flappy")


def _broker(name: str) -> Broker:
    return Broker.objects.create(
        name=name, kind="rabbitmq", interval=STEP, options={"management_url": "http://x"}
    )


class Twin:
    """A broker collected change-only, and its reference: one Sample per collection."""

    def __init__(self) -> None:
        self.broker = _broker("changes")
        self.reference = _broker("reference")
        self.ref_ids = {
            key: Destination.objects.create(
                broker=self.reference, kind="queue", key=key, name=key
            ).pk
            for key in KEYS
        }
        self.windows: dict[str, list[list[Any]]] = {key: [] for key in KEYS}

    def collect(self, ts: int, dests: list[D]) -> list[Destination]:
        rows = collector.store(self.broker, Snapshot(Health(), tuple(dests)), now=float(ts))
        Sample.objects.bulk_create(
            Sample(
                destination_id=self.ref_ids[row.key],
                ts=ts,
                backlog=row.backlog,
                in_flight=row.in_flight,
                consumers=row.consumers,
                in_rate=row.in_rate,
                out_rate=row.out_rate,
                lag=row.lag,
            )
            for row in rows
            if row.gone_since is None and row.key in {d.key for d in dests}
        )
        for row in rows:
            if row.key in {d.key for d in dests}:
                point = [ts, row.backlog, row.in_flight, row.consumers]
                self.windows[row.key].append([*point, row.in_rate, row.out_rate, row.lag])
        return rows

    def down(self, ts: int) -> None:
        collector.mark_down(self.broker, "connection refused", float(ts))

    def ids(self) -> dict[str, tuple[int, int]]:
        """Key: (change-only destination id, reference destination id)."""
        ours = dict(Destination.objects.filter(broker=self.broker).values_list("key", "id"))
        return {key: (ours[key], self.ref_ids[key]) for key in KEYS if key in ours}


def _queue(key: str, backlog: int, in_rate: float = 0.0, **more: Any) -> D:
    return D(
        kind="queue", name=key[2:], key=key, backlog=backlog, in_rate=in_rate, out_rate=0.0, **more
    )


def _run(twin: Twin, steps: int, shape: Callable[[int], list[D] | None], start: int = 0) -> int:
    """Collect steps `start` to `steps`, STEP apart; `shape(i)` is None for a broker that is down."""
    for i in range(start, steps):
        dests = shape(i)
        if dests is None:
            twin.down(T0 + i * STEP)
        else:
            twin.collect(T0 + i * STEP, dests)
            if i % 50 == 0:  # a worker restarted: nothing is kept in memory but the broker row
                twin.broker = Broker.objects.get(pk=twin.broker.pk)
    return T0 + (steps - 1) * STEP


def _mixed(i: int) -> list[D] | None:
    """A busy queue, one idle for long stretches, one that goes away for a while; a broker outage."""
    if 200 <= i < 220:
        return None
    dests = [
        _queue("//busy", backlog=i % 7, in_rate=0.25 * (i % 4)),
        _queue("//idle", backlog=5 if i < 300 else 9, in_rate=0.0 if i < 300 else 1.5),
    ]
    if not 100 <= i < 130:
        dests.append(_queue("//flappy", backlog=2, consumers=1))
    return dests


def _rollups(dest_id: int) -> list[tuple[Any, ...]]:
    return list(
        Rollup.objects.filter(destination_id=dest_id)
        .order_by("ts")
        .values_list("ts", "backlog", "in_flight", "consumers", "in_rate", "out_rate", "lag")
    )


def test_an_idle_destination_writes_no_sample_and_no_row_update(db):
    twin = Twin()
    first = twin.collect(T0, [_queue("//idle", backlog=5)])
    with CaptureQueriesContext(connection) as queries_made:
        for i in range(1, 6):
            rows = twin.collect(T0 + i * STEP, [_queue("//idle", backlog=5)])
    dest = Destination.objects.get(broker=twin.broker)
    assert Sample.objects.filter(destination=dest).count() == 1
    assert dest.updated_at == datetime.fromtimestamp(T0, UTC) == first[0].updated_at
    written = [q["sql"] for q in queries_made.captured_queries if "destination" in q["sql"]]
    assert not [sql for sql in written if sql.lstrip().upper().startswith("UPDATE")]
    assert Collection.objects.filter(broker=twin.broker).count() == 6
    # The row keeps one entry; the window triage expands it to has one per collection.
    assert len(rows[0].recent) == 1 and rows[0].recent == dest.recent
    collections = series.recent_collections(twin.broker.pk, statuswindow.WINDOW_COLLECTIONS)
    window = statuswindow.expand(rows[0].recent, collections)
    assert window == twin.windows["//idle"]
    assert [p[0] for p in window] == [T0 + i * STEP for i in range(6)]
    # The page's "as of" is the last collection, not the last write.
    listed = Destination.objects.select_related("broker").get(pk=dest.pk)
    assert listed.as_of == datetime.fromtimestamp(T0 + 5 * STEP, UTC)


def test_charts_sparklines_rollups_and_windows_equal_one_sample_per_collection(db):
    twin = Twin()
    now = _run(twin, 360, _mixed)
    ids = twin.ids()
    ours_samples = Sample.objects.filter(destination__broker=twin.broker).count()
    theirs = Sample.objects.filter(destination__broker=twin.reference).count()
    assert ours_samples < theirs / 2  # the busy queue changes every time; the others seldom

    for key, (ours, ref) in ids.items():
        for window in ("1h", "6h", "24h"):
            got, want = (
                queries.history(ours, window, now=now),
                queries.history(ref, window, now=now),
            )
            assert got == want, (key, window)
            assert got["points"]
    lines = queries.sparklines([i for pair in ids.values() for i in pair], now=now)
    for ours, ref in ids.values():
        assert lines[ours] == lines[ref] and lines[ours]

    assert history.roll_up(now) > 0
    for ours, ref in ids.values():
        assert _rollups(ours) == _rollups(ref) and _rollups(ours)

    # The kinds' status rules read the same windows, gaps included.
    columns = ("backlog", "in_rate", "consumers")
    for since, until in ((now - 300, now), (T0 + 95 * STEP, T0 + 140 * STEP), (T0, now + 1)):
        got = statuswindow.samples(twin.broker, "queue", columns, since, until)
        want = statuswindow.samples(twin.reference, "queue", columns, since, until)
        assert got == want and got

    # Triage's window, from the rows as read back (evaluate without the collector's rows).
    rows = list(Destination.objects.filter(broker=twin.broker, gone_since__isnull=True))
    collections = series.recent_collections(twin.broker.pk, statuswindow.WINDOW_COLLECTIONS)
    for row in rows:
        expanded = statuswindow.expand(row.recent, collections)
        assert expanded == twin.windows[row.key][-statuswindow.WINDOW_COLLECTIONS :]


def test_a_change_after_a_long_idle_stretch_charts_at_its_collection(db):
    twin = Twin()
    counters = {"in_total": 1000, "out_total": 1000}

    def shape(i: int) -> list[D]:
        # Derived rates: 100 messages in the last interval of three hours' idleness.
        total = 1000 if i < 540 else 1100
        return [
            D(kind="queue", name="idle", key="//idle", backlog=0 if i < 540 else 100,
              in_total=total, out_total=counters["out_total"])
        ]  # fmt: skip

    now = _run(twin, 541, shape)
    dest = Destination.objects.get(broker=twin.broker)
    # The rate is over the one interval the messages came in, not the three hours since the
    # row was last written.
    assert dest.in_rate == 100 / STEP
    assert Sample.objects.filter(destination=dest).count() == 3  # first, first rate, the change
    ours, ref = twin.ids()["//idle"]
    hour = queries.history(ours, "1h", now=now)
    assert hour == queries.history(ref, "1h", now=now)
    assert hour["points"][-1]["backlog"] == 100 and hour["points"][-2]["backlog"] == 0
    assert queries.sparklines([ours], now=now)[ours] == queries.sparklines([ref], now=now)[ref]


def test_pruning_keeps_what_an_idle_destination_holds(db, settings):
    settings.SLUICE_HISTORY_FULL_HOURS = 1
    settings.SLUICE_ROLLUP_SECONDS = 300
    twin = Twin()
    now = _run(twin, 540, _mixed)  # three hours
    history.prune(now=now)
    cutoff = now - 3600
    assert not Sample.objects.filter(ts__lt=cutoff).exists()
    assert not Collection.objects.filter(ts__lt=cutoff).exists()
    for key, (ours, ref) in twin.ids().items():
        got, want = queries.history(ours, "1h", now=now), queries.history(ref, "1h", now=now)
        assert got == want and got["points"], key
        assert _rollups(ours) == _rollups(ref), key
    # The idle queue's value from hours ago still holds after the cutoff, carried in one Sample.
    ours, _ = twin.ids()["//idle"]
    assert Sample.objects.filter(destination_id=ours).count() == 1
    # Collections go on after pruning, the destination still idle: still the same charts.
    for i in range(540, 560):
        twin.collect(T0 + i * STEP, _mixed(i) or [])
    later = T0 + 559 * STEP
    history.prune(now=later)
    for key, (ours, ref) in twin.ids().items():
        assert queries.history(ours, "1h", now=later) == queries.history(ref, "1h", now=later), key


def test_a_broker_down_and_a_destination_gone_leave_gaps(db):
    twin = Twin()
    _run(twin, 110, _mixed)
    flappy = Destination.objects.select_related("broker").get(broker=twin.broker, key="//flappy")
    assert flappy.gone_since == datetime.fromtimestamp(T0 + 100 * STEP, UTC)
    # Its figures are from the last collection that listed it, as before.
    assert flappy.as_of == flappy.updated_at == datetime.fromtimestamp(T0 + 99 * STEP, UTC)
    now = _run(twin, 240, _mixed, start=110)
    down, gone = range(200, 220), range(100, 130)
    for key, (ours, ref) in twin.ids().items():
        got = list(series.points("d.id = %s", [ours], T0, now + 1))
        want = list(series.points("d.id = %s", [ref], T0, now + 1))
        absent = [*down, *gone] if key == "//flappy" else list(down)
        assert [row[1] for row in got] == [T0 + i * STEP for i in range(240) if i not in absent]
        assert [row[1:] for row in got] == [row[1:] for row in want], key
