"""Benchmark: /metrics for 5,000 destinations, next to storing one collection of them.

Sets up Sluice on a scratch SQLite database, stores a collection of `--queues`
RabbitMQ-like queues (with rates, totals and details, as a real collection
stores them), then times, in interleaved rounds:

    store     `collector.store()` of that snapshot: the database side of one
              collection (the broker's side is bench/collect_rabbitmq.py);
    metrics   GET /metrics through Django with an API token: the query, the
              prometheus_client families and the text rendering.

and prints the medians, the scrape's size, and whether /metrics stays under
200 ms (the target), with the store time beside it.

    .venv/bin/python bench/metrics.py [--queues 5000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import scratch_django
from timing import cycle_table, interleaved

TARGET_MS = 200


def snapshot(queues: int) -> Any:
    from brokers.base import Destination, Health, Snapshot

    return Snapshot(
        health=Health(version="bench"),
        destinations=tuple(
            Destination(
                kind="queue",
                name=f"bench.queue.{n:05d}",
                key=f"//bench.queue.{n:05d}",
                vhost="/",
                type="classic",
                state="running",
                backlog=n % 977,
                in_flight=n % 13,
                consumers=n % 3,
                in_rate=float(n % 50),
                out_rate=float(n % 47),
                in_total=n * 1000,
                out_total=n * 990,
                extra={"limits": {}, "ack_rate": 1.0},
            )
            for n in range(queues)
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    scratch_django.setup("sluice-bench-metrics-")

    from django.contrib.auth.models import User
    from django.test import Client

    from dashboard.auth import set_role
    from dashboard.collection import collector
    from dashboard.models import ApiToken, Broker

    broker = Broker.objects.create(
        name="bench", kind="rabbitmq", options={"management_url": "http://127.0.0.1:1"}
    )
    snap = snapshot(args.queues)
    collector.store(broker, snap, time.time())
    user = User.objects.create_user("scraper")
    set_role(user, "viewer")
    token = ApiToken.issue(user)[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="localhost")
    size = len(client.get("/metrics").content)

    def scrape() -> None:
        response = client.get("/metrics")
        assert response.status_code == 200, response.status_code

    times = interleaved(
        {"store": lambda: collector.store(broker, snap, time.time()), "metrics": scrape},
        args.rounds,
    )
    wall = cycle_table(
        times,
        {
            "store": f"store a collection of {args.queues:,}",
            "metrics": f"GET /metrics, {args.queues:,} destinations",
        },
    )
    ms = wall["metrics"] * 1000
    verdict = "OK" if ms < TARGET_MS else "NOT met"
    print(f"\none scrape is {size / 1e6:.2f} MB of text")
    print(
        f"/metrics {ms:.0f} ms (target < {TARGET_MS} ms) {verdict}; "
        f"storing the collection it shows takes {wall['store'] * 1000:.0f} ms "
        f"(metrics ÷ store = {wall['metrics'] / wall['store']:.2f})"
    )


if __name__ == "__main__":
    main()
