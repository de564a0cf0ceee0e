"""Sample retention: full resolution for SLUICE_HISTORY_FULL_HOURS, then averaged buckets."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from dashboard.collection.queries import bucketed
from dashboard.models import Rollup, Sample


def roll_up(until: int) -> int:
    """Average every complete bucket that ends at or before `until` into Rollup; returns rows written."""
    size = settings.SLUICE_ROLLUP_SECONDS
    until -= until % size
    latest = Rollup.objects.aggregate(last=Max("ts"))["last"]
    start = 0 if latest is None else latest + size
    if start >= until:
        return 0
    rows = bucketed(Sample.objects.filter(ts__gte=start, ts__lt=until), size, "destination_id")
    rollups = [Rollup(ts=r.pop("bucket") * size, **r) for r in rows.iterator()]
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
    samples, _ = Sample.objects.filter(ts__lt=min(full_cutoff, rolled_until)).delete()
    rollups, _ = Rollup.objects.filter(ts__lt=keep_cutoff).delete()
    return samples, rollups
