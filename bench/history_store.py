"""Benchmark: the store of one collection at 5,000 destinations, and the history rows a day.

On a scratch SQLite database, two RabbitMQ brokers of `--queues` queues (5,000)
each receive the same made-up collections, `--interval` seconds apart (5):
most queues idle (the same figures every time), `--changing` of them (300)
with backlogs and rates that move at every collection. Each queue has what
RabbitMQ's monitor fills in: arguments, a policy, a consumer or two with their
prefetch, ready bytes.

    ours       `collector.store()`: a row written when what it holds changes, a
               Sample when its figures change (dashboard/collection/series.py
               reads one point per collection back);
    reference  the way before: the same rows computed by the same code, then
               every row written and one Sample per destination, at every
               collection.

After `--warmup` collections of each, `--rounds` interleaved rounds time one
more collection of each; it prints the medians (wall and CPU), the rows each
way writes per collection and per day at that interval, and PASS or FAIL
against the target: ours at most 200 ms per collection.

    .venv/bin/python bench/history_store.py [--queues 5000] [--changing 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from collections.abc import Callable
from typing import Any

import scratch_django
from timing import Timed

TARGET_MS = 200


def snapshot(n: int, changing: int, i: int, rng: random.Random) -> Any:
    from brokers.base import Consumer, Destination, Health, Snapshot

    dests = []
    for q in range(n):
        moving = q < changing
        backlog = rng.randrange(0, 5000) if moving else (q % 50)
        dests.append(
            Destination(
                kind="queue",
                name=f"queue-{q:05}",
                key=f"//queue-{q:05}",
                vhost="/",
                type="classic",
                state="running",
                backlog=backlog,
                in_flight=rng.randrange(0, 20) if moving else 0,
                consumers=1 + q % 2,
                in_rate=round(rng.uniform(0, 200), 2) if moving else 0.0,
                out_rate=round(rng.uniform(0, 200), 2) if moving else 0.0,
                in_total=1_000_000 + i * 500 if moving else 1_000_000,
                out_total=999_000 + i * 500 if moving else 999_000,
                arguments={"x-dead-letter-exchange": "dlx", "x-max-length": 100_000},
                policy="ha-all" if q % 3 == 0 else "",
                effective_policy={"max-length-bytes": 10_000_000} if q % 3 == 0 else {},
                consumer_details=tuple(
                    Consumer(tag=f"ctag-{q}-{c}", channel=f"10.0.0.{c}:5672 (1)", prefetch=50)
                    for c in range(1 + q % 2)
                ),
                extra={"ready_bytes": backlog * 120, "redeliver_rate": 0.0},
            )
        )
    return Snapshot(Health(), tuple(dests))


def reference_store(broker: Any, snap: Any, now: float) -> None:
    """The store as it was: the same rows, every one written, a Sample for each."""
    from datetime import UTC, datetime

    from django.db import transaction

    from dashboard.collection import collector, series, statuswindow
    from dashboard.collection.bulk import update_many
    from dashboard.models import Collection, Destination, Sample

    existing = collector._known(broker, {})
    collections = series.recent_collections(broker.pk, statuswindow.WINDOW_COLLECTIONS)
    rows_new, _, _, current, _ = collector._rows(broker, snap, existing, now, collections, {})
    with transaction.atomic():
        Destination.objects.bulk_create(rows_new, batch_size=500)
        fields = collector._FIELDS
        at = datetime.fromtimestamp(now, UTC)
        for row in current:
            row.updated_at = at
        update_many(
            Destination, fields, [(*(getattr(r, f) for f in fields), r.pk) for r in current]
        )
        ids = dict(Destination.objects.filter(broker=broker).values_list("key", "id"))
        Sample.objects.bulk_create(
            [
                Sample(
                    destination_id=ids[r.key],
                    ts=int(now),
                    **{f: getattr(r, f) for f in series.FIGURES},
                )
                for r in [*rows_new, *current]
            ],
            batch_size=1000,
        )
        Collection.objects.create(broker=broker, ts=int(now))
        collector._mark_up(broker, snap, now, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=5000)
    parser.add_argument("--changing", type=int, default=300)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    scratch_django.setup("sluice-bench-history-")
    import gc

    gc.freeze()  # as a Celery worker does once started (dashboard/celery.py)
    from datetime import UTC, datetime

    from dashboard.collection import collector
    from dashboard.models import Broker, Destination, Sample

    def broker(name: str) -> Broker:
        return Broker.objects.create(
            name=name, kind="rabbitmq", interval=args.interval, options={"management_url": "x"}
        )

    ours, reference = broker("ours"), broker("reference")
    stores: dict[str, tuple[Broker, Callable[[Broker, Any, float], Any]]] = {
        "ours": (ours, lambda b, s, t: collector.store(b, s, t)),
        "reference": (reference, reference_store),
    }
    rng = random.Random(12)
    start = 1_800_000_000.0
    timings: dict[str, list[Timed]] = {name: [] for name in stores}
    written: dict[str, list[tuple[int, int]]] = {name: [] for name in stores}
    for i in range(args.warmup + args.rounds):
        now = start + i * args.interval
        snap = snapshot(args.queues, args.changing, i, rng)
        for name, (b, store) in stores.items():
            samples_before = Sample.objects.filter(destination__broker=b).count()
            with Timed() as t:
                store(b, snap, now)
            samples = Sample.objects.filter(destination__broker=b).count() - samples_before
            at = datetime.fromtimestamp(now, UTC)
            updates = Destination.objects.filter(broker=b, updated_at=at).count()
            if i >= args.warmup:
                timings[name].append(t)
                written[name].append((samples, updates))

    per_day = 86400 // args.interval
    print(
        f"\nStore of one collection: {args.queues:,} queues, {args.changing:,} changing, "
        f"every {args.interval} s (SQLite, median of {args.rounds} rounds)"
    )
    print(f"{'':11}{'ms':>8}{'CPU ms':>8}{'samples':>9}{'row writes':>12}{'samples/day':>14}")
    wall = {}
    for name in stores:
        wall[name] = statistics.median(t.wall for t in timings[name]) * 1000
        cpu = statistics.median(t.cpu for t in timings[name]) * 1000
        samples = statistics.median(s for s, _ in written[name])
        updates = statistics.median(u for _, u in written[name])
        print(
            f"{name:11}{wall[name]:8.0f}{cpu:8.0f}{samples:9.0f}{updates:12.0f}"
            f"{samples * per_day:14,.0f}"
        )
    print(
        f"history rows a day at this mix: ours {statistics.median(s for s, _ in written['ours']) * per_day + per_day:,.0f} "
        f"(samples and {per_day:,} collection rows), reference "
        f"{statistics.median(s for s, _ in written['reference']) * per_day:,.0f}"
    )
    print(f"reference ÷ ours: {wall['reference'] / wall['ours']:.1f} (wall)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs: wall above CPU is time waiting for one")
    verdict = "PASS" if wall["ours"] <= TARGET_MS else "FAIL"
    print(f"{verdict}: ours {wall['ours']:.0f} ms per collection (target ≤ {TARGET_MS} ms)")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
