"""Sample retention: full resolution for SLUICE_HISTORY_FULL_HOURS, then averaged buckets."""

from __future__ import annotations

import time
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Max, OuterRef, Subquery

from dashboard.collection import series
from dashboard.collection.bulk import update_many
from dashboard.models import Broker, Collection, Destination, Gap, Rollup, Sample


def roll_up(until: int) -> int:
    """Average every complete bucket that ends at or before `until` into Rollup; returns rows written.

    Each collection counts once in its bucket, with the figures its destination
    held then (dashboard/collection/series.py), as when every collection was a Sample.
    """
    size = settings.SLUICE_ROLLUP_SECONDS
    until -= until % size
    latest = Rollup.objects.aggregate(last=Max("ts"))["last"]
    start = 0 if latest is None else latest + size
    if start >= until:
        return 0
    rows = series.bucketed("1 = 1", [], size, start, until)
    rollups = [Rollup(ts=r.pop("bucket") * size, **r) for r in rows]
    with transaction.atomic():
        Rollup.objects.bulk_create(rollups, batch_size=1000, ignore_conflicts=True)
    return len(rollups)


def prune(now: float | None = None) -> tuple[int, int]:
    """Roll up what is complete, then drop what is past retention; returns (samples, rollups) deleted."""
    now = int(time.time() if now is None else now)
    roll_up(now)
    full_cutoff = now - settings.SLUICE_HISTORY_FULL_HOURS * 3600
    keep_cutoff = now - settings.SLUICE_HISTORY_DAYS * 86400
    # Never delete samples that are not rolled up yet.
    rolled_until = (
        Rollup.objects.aggregate(last=Max("ts"))["last"] or 0
    ) + settings.SLUICE_ROLLUP_SECONDS
    cutoff = min(full_cutoff, rolled_until)
    with transaction.atomic():
        kept = _carry_over(cutoff)
        samples, _ = Sample.objects.filter(ts__lt=cutoff).exclude(id__in=kept).delete()
        Gap.objects.filter(ts__lt=cutoff).delete()
        Collection.objects.filter(ts__lt=cutoff).delete()
    rollups, _ = Rollup.objects.filter(ts__lt=keep_cutoff).delete()
    return samples, rollups


def _carry_over(cutoff: int) -> set[int]:
    """Move each destination's Sample that still holds at its first point after `cutoff` to
    that point, so that deleting what is older keeps every later point's figures;
    returns the ids of those to keep where they are.

    A Sample holds until the next Sample or Gap; an idle destination's last Sample
    can be days old.
    """
    last: dict[int, tuple[int, int]] = {}  # destination: (ts, id) of its last Sample before cutoff
    for dest_id, pk, ts in (
        Sample.objects.filter(ts__lt=cutoff)
        .order_by("destination_id", "ts", "id")
        .values_list("destination_id", "id", "ts")
        .iterator()
    ):
        last[dest_id] = (ts, pk)
    if not last:
        return set()
    gaps: dict[int, list[int]] = defaultdict(list)
    for dest_id, ts in Gap.objects.filter(destination_id__in=list(last)).values_list(
        "destination_id", "ts"
    ):
        gaps[dest_id].append(ts)
    brokers = dict(Destination.objects.filter(id__in=list(last)).values_list("id", "broker_id"))
    # Each the first after the cutoff, found by one index look-up per broker or destination.
    first_collection = dict(
        Broker.objects.annotate(
            first=Subquery(
                Collection.objects.filter(broker_id=OuterRef("pk"), ts__gte=cutoff)
                .order_by("ts")
                .values("ts")[:1]
            )
        ).values_list("id", "first")
    )
    first_sample = dict(
        Destination.objects.filter(id__in=list(last))
        .annotate(
            first=Subquery(
                Sample.objects.filter(destination_id=OuterRef("pk"), ts__gte=cutoff)
                .order_by("ts")
                .values("ts")[:1]
            )
        )
        .values_list("id", "first")
    )
    keep: list[tuple[int, int]] = []  # (ts, id): a Sample kept, at the point it moves to
    for dest_id, (ts, pk) in last.items():
        point = first_collection.get(brokers[dest_id])
        later = first_sample.get(dest_id)
        if later is not None and (point is None or later <= point):
            continue  # a later Sample holds at the first point
        if any(ts < g and (point is None or g <= point) for g in gaps[dest_id]):
            continue  # gone by then
        # No point after the cutoff yet: it stays where it is, and holds from there on.
        keep.append((ts if point is None else point, pk))
    update_many(Sample, ("ts",), keep)
    return {pk for ts, pk in keep if ts < cutoff}
