"""A destination's history at every collection, from the Samples written when it changed.

The collector writes a Sample only when a destination's figures change, a Gap
when its broker stops listing it, and a Collection row for every collection of
a broker that answered. The points of a destination are its broker's
collections (and its own Samples' times); at each, its figures are those of
its latest Sample at or before it, unless a Gap came after that Sample. That is
the series one Sample per collection gave, point for point: a broker that was
down has no Collection, so its destinations have no point there (a gap, as
before), and a destination not yet listed or gone has none either.

The database expands and aggregates in one statement, so the charts' averages
are SQL's AVG over the same values as when every collection was a row. A point's
Sample is found by ranges, not one look-up per point: each Sample read covers the
collections up to the next Sample or Gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection

from dashboard.models import Collection, Destination, Gap, Sample

FIGURES = ("backlog", "in_flight", "consumers", "in_rate", "out_rate", "lag")


# Later than any Unix time an IntegerField holds: "no next Sample, no Gap".
_NEVER = 2**31 - 1


def _points(where: str, params: Sequence[Any], since: int, until: int | None) -> tuple[str, list]:
    """SQL for (destination_id, ts, *FIGURES) at every point of the destinations `where` selects.

    `where` is a condition on the destination, aliased `d`; points are in [since, until).
    Each Sample read (those in the span, and the one in effect at its start) covers the
    collections from its time until the next Sample or Gap, whichever comes first.
    """
    dest, coll, sample, gap = (m._meta.db_table for m in (Destination, Collection, Sample, Gap))
    span = "{t}.ts >= %s" + (" AND {t}.ts < %s" if until is not None else "")
    bounds = [since] if until is None else [since, until]
    columns = ", ".join(f"o.{f}" for f in ("id", "destination_id", "ts", *FIGURES))
    figures = ", ".join(f"s.{f}" for f in FIGURES)
    sql = f"""
        WITH base AS (
            SELECT {columns}, d.broker_id
            FROM {dest} d JOIN {sample} o ON o.destination_id = d.id
            WHERE ({where}) AND {span.format(t="o")}
            UNION ALL
            {_in_effect_at_start(columns, where)}
        ), s AS (
            SELECT base.*,
                COALESCE(LEAD(ts) OVER (PARTITION BY destination_id ORDER BY ts, id), {_NEVER})
                    AS next_ts,
                COALESCE((
                    SELECT MIN(g.ts) FROM {gap} g
                    WHERE g.destination_id = base.destination_id AND g.ts > base.ts
                ), {_NEVER}) AS gone_ts
            FROM base
        )
        SELECT s.destination_id, c.ts, {figures}
        FROM s CROSS JOIN {coll} c
        WHERE c.broker_id = s.broker_id AND c.ts >= s.ts AND c.ts < s.next_ts
            AND c.ts < s.gone_ts AND {span.format(t="c")}
        UNION ALL
        SELECT s.destination_id, s.ts, {figures} FROM s WHERE {span.format(t="s")}
            AND NOT EXISTS (SELECT 1 FROM {coll} c WHERE c.broker_id = s.broker_id AND c.ts = s.ts)
    """  # noqa: S608 (table names from the models, values as parameters)
    return sql, [*params, *bounds, since, *params, *bounds, *bounds]


def _in_effect_at_start(columns: str, where: str) -> str:
    """SQL for each destination's latest Sample before the start (the one parameter, then
    `where`'s): one look-up in the (destination, ts) index per destination. PostgreSQL
    is told so with a LATERAL join; SQLite has none, and plans the IN form that way."""
    dest, sample = Destination._meta.db_table, Sample._meta.db_table
    latest = f"""
        SELECT l.* FROM {sample} l WHERE l.destination_id = d.id AND l.ts < %s
        ORDER BY l.ts DESC, l.id DESC LIMIT 1
    """  # noqa: S608
    if connection.vendor == "postgresql":
        return f"""
            SELECT {columns}, d.broker_id FROM {dest} d
            CROSS JOIN LATERAL ({latest}) o WHERE ({where})
        """  # noqa: S608
    return f"""
        SELECT {columns}, d.broker_id
        FROM {sample} o JOIN {dest} d ON d.id = o.destination_id
        WHERE o.id IN (
            SELECT ({latest.replace("l.*", "l.id", 1)}) FROM {dest} d WHERE ({where})
        )
    """  # noqa: S608


def bucketed(
    where: str, params: Sequence[Any], seconds: int, since: int, until: int | None = None
) -> list[dict[str, Any]]:
    """Points summed up per destination and `seconds`-long bucket, as queries.bucketed does.

    The largest backlog, in flight, consumers and lag; the mean rates.
    """
    inner, args = _points(where, params, since, until)
    figures = ", ".join(FIGURES)
    sql = f"""
        SELECT destination_id, bucket, MAX(backlog), MAX(in_flight),
               MAX(consumers), AVG(in_rate), AVG(out_rate), MAX(lag)
        FROM (SELECT destination_id, ts / %s AS bucket, {figures} FROM ({inner}) x) y
        GROUP BY destination_id, bucket
        ORDER BY destination_id, bucket
    """  # noqa: S608
    names = ("destination_id", "bucket", *FIGURES)
    with connection.cursor() as cursor:
        cursor.execute(sql, [seconds, *args])
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def points(
    where: str, params: Sequence[Any], since: int, until: int | None = None
) -> Iterator[tuple[int, int, Any, Any, Any, Any, Any, Any]]:
    """(destination_id, ts, *FIGURES) at every point, by destination, oldest first."""
    inner, args = _points(where, params, since, until)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({inner}) x ORDER BY destination_id, ts", args)  # noqa: S608
        yield from cursor.fetchall()


def maxima(
    dest_ids: Sequence[int], seconds: int, since: int, figure: str = "backlog"
) -> dict[int, dict[int, Any]]:
    """The largest `figure` in each `seconds`-long bucket since `since`, per destination
    and bucket number (ts // seconds): the MAX that `bucketed` gives, point for point.

    Worked out here from the rows themselves (the broker's collection times, the
    destinations' Samples and Gaps, each read through its index) rather than by
    expanding every point in SQL: a page of sparklines over an hour reads 720
    collection times per broker and only the Samples that changed.
    """
    if not dest_ids:
        return {}
    ids = list(dest_ids)
    brokers = dict(Destination.objects.filter(id__in=ids).values_list("id", "broker_id"))
    times: dict[int, list[int]] = defaultdict(list)
    found = Collection.objects.filter(broker_id__in=set(brokers.values()), ts__gte=since)
    for broker_id, ts in found.order_by("ts").values_list("broker_id", "ts"):
        times[broker_id].append(ts)
    steps: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for dest_id, ts, value in _in_effect(ids, since, figure):
        steps[dest_id].append((ts, value))
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT destination_id, ts, {figure} FROM {Sample._meta.db_table} "  # noqa: S608
            f"WHERE destination_id IN ({marks}) AND ts >= %s ORDER BY destination_id, ts, id",
            [*ids, since],
        )
        for dest_id, ts, value in cursor.fetchall():
            steps[dest_id].append((ts, value))
    gaps: dict[int, list[int]] = defaultdict(list)
    for dest_id, ts in (
        Gap.objects.filter(destination_id__in=ids)
        .order_by("ts")
        .values_list("destination_id", "ts")
    ):
        gaps[dest_id].append(ts)
    return {
        pk: _bucket_max(
            steps.get(pk, []), gaps.get(pk, []), times.get(brokers[pk], []), seconds, since
        )
        for pk in ids
        if pk in brokers
    }


def _in_effect(ids: list[int], since: int, figure: str) -> list[tuple[int, int, Any]]:
    """(destination_id, ts, figure) of each destination's latest Sample before `since`."""
    dest, sample = Destination._meta.db_table, Sample._meta.db_table
    marks = ", ".join(["%s"] * len(ids))
    sql = f"""
        SELECT s.destination_id, s.ts, s.{figure} FROM {sample} s WHERE s.id IN (
            SELECT (SELECT l.id FROM {sample} l
                    WHERE l.destination_id = d.id AND l.ts < %s
                    ORDER BY l.ts DESC, l.id DESC LIMIT 1)
            FROM {dest} d WHERE d.id IN ({marks}))
    """  # noqa: S608 (table and column names from the models, values as parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, [since, *ids])
        return list(cursor.fetchall())


def _bucket_max(
    steps: list[tuple[int, Any]], gaps: list[int], times: list[int], seconds: int, since: int
) -> dict[int, Any]:
    """Bucket maxima of one destination's step function: at each collection time it holds
    its latest Sample's value, unless a Gap came after that Sample (module docstring);
    a Sample at a time with no collection is a point of its own."""
    out: dict[int, Any] = {}
    i = g = 0
    n, gap_count = len(steps), len(gaps)
    current: tuple[int, Any] | None = None
    last_gap = -1
    for t in times:
        while i < n and steps[i][0] <= t:
            current = steps[i]
            i += 1
        while g < gap_count and gaps[g] <= t:
            last_gap = gaps[g]
            g += 1
        if current is not None and last_gap <= current[0] and current[1] is not None:
            bucket = t // seconds
            best = out.get(bucket)
            if best is None or current[1] > best:
                out[bucket] = current[1]
    collected = set(times)
    for ts, value in steps:
        if ts >= since and ts not in collected and value is not None:
            bucket = ts // seconds
            best = out.get(bucket)
            if best is None or value > best:
                out[bucket] = value
    return out


def recent_collections(broker_id: int, count: int) -> list[int]:
    """The times of the broker's last `count` collections, oldest first."""
    found = (
        Collection.objects.filter(broker_id=broker_id)
        .order_by("-ts", "-id")
        .values_list("ts", flat=True)[:count]
    )
    return list(reversed(found))
