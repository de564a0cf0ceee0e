"""Collection against the real RabbitMQ: stored state, rates, ranking, history.

A broker that is down, for every kind, is in tests/contract/test_collect.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dashboard.collection import collector, history, queries
from dashboard.models import Broker, Destination, Rollup, Sample
from tests.app_fixtures import wait_for

pytestmark = pytest.mark.django_db


def collected(broker: Broker, key: str) -> Destination | None:
    broker.refresh_from_db()
    collector.collect(broker)
    return Destination.objects.filter(broker=broker, key=key).first()


def test_published_messages_show_as_backlog_in_api_and_page(
    rabbit_broker, amqp, unique_name, client_for
):
    queue = f"orders-{unique_name}"
    amqp.queue_declare(queue)
    for i in range(25):
        amqp.basic_publish("", queue, f"order {i}".encode())

    # Once the 25 have arrived (the interval they arrive in shows them arriving, "growing"),
    # a backlog nobody drains.
    dest = wait_for(
        lambda: (
            (d := collected(rabbit_broker, f"//{queue}"))
            and d.backlog == 25
            and d.trouble == 1
            and d
        )
    )
    assert dest.consumers == 0

    carol = client_for("carol")
    api = carol.get("/api/v1/brokers/rabbit/destinations", {"q": queue}).json()
    assert [d["backlog"] for d in api["destinations"]] == [25]
    page = carol.get("/", {"q": queue})
    assert page.status_code == 200
    assert f'data-key="//{queue}"' in page.content.decode()
    assert ">25</td>" in page.content.decode()


def test_a_consumer_shows_up_and_drains(rabbit_broker, amqp, unique_name, rabbitmq):
    import pika

    queue = f"drain-{unique_name}"
    amqp.queue_declare(queue)
    for _ in range(2000):
        amqp.basic_publish("", queue, b"x" * 100)
    wait_for(lambda: (d := collected(rabbit_broker, f"//{queue}")) and d.backlog == 2000)

    consumer_conn = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = consumer_conn.channel()
    channel.basic_qos(prefetch_count=1)
    try:
        channel.basic_consume(queue, lambda ch, m, p, b: ch.basic_ack(m.delivery_tag))
        # Consume slowly enough for the management stats to see a rate.
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            consumer_conn.process_data_events(time_limit=0.5)
            seen = collected(rabbit_broker, f"//{queue}")
            if seen and seen.consumers == 1 and (seen.out_rate or 0) > 0:
                break
        assert seen is not None
        assert seen.consumers == 1
        assert seen.out_rate and seen.out_rate > 0
        assert seen.details["consumers"][0]["prefetch"] == 1
        assert seen.details["consumers"][0]["ack_required"] is True
    finally:
        consumer_conn.close()


def _dest(broker: Broker, key: str, **values: Any) -> Destination:
    return Destination.objects.create(broker=broker, kind="queue", key=key, name=key, **values)


def test_ranking_puts_growing_backlogs_first_then_unconsumed_then_largest(db):
    broker = Broker.objects.create(
        name="b", kind="rabbitmq", options={"management_url": "http://x"}
    )
    rows: dict[str, dict[str, Any]] = {
        "big": dict(backlog=9000, consumers=3, in_rate=5.0, out_rate=5.0),
        "growing": dict(backlog=10, consumers=1, in_rate=50.0, out_rate=10.0),
        "orphan": dict(backlog=5, consumers=0, in_rate=0.0, out_rate=0.0),
        "small": dict(backlog=100, consumers=1, in_rate=1.0, out_rate=1.0),
        "empty": dict(backlog=0, consumers=0, in_rate=0.0, out_rate=0.0),
    }
    for key, values in rows.items():
        values["trouble"] = collector.trouble(
            values["backlog"], values["consumers"], "queue", values["in_rate"], values["out_rate"]
        )
        _dest(broker, key, **values)
    ranked = [d.key for d in queries.destinations(queries.Listing())]
    assert ranked == ["growing", "orphan", "big", "small", "empty"]
    by_backlog = [d.key for d in queries.destinations(queries.Listing(sort="backlog"))]
    assert by_backlog == ["empty", "orphan", "growing", "small", "big"]
    by_name_desc = [d.key for d in queries.destinations(queries.Listing(sort="-name"))]
    assert by_name_desc == sorted(rows, reverse=True)


def test_keeping_up_is_not_growing():
    assert collector.trouble(100, 1, "queue", 100.0, 99.0) == 0
    assert collector.trouble(100, 1, "queue", 120.0, 99.0) == 2
    assert collector.trouble(0, 0, "queue", 120.0, 0.0) == 0


def test_rates_come_from_counters_when_the_broker_gives_none(db):
    from brokers.base import Destination as D
    from brokers.base import Health, Snapshot

    broker = Broker.objects.create(name="k", kind="kafka", options={"bootstrap_servers": "x:1"})
    first = Snapshot(
        Health(in_total=1000, out_total=900),
        (D(kind="group", name="g", key="group/g", backlog=10, in_total=100, out_total=90),),
    )
    second = Snapshot(
        Health(in_total=1100, out_total=950),
        (D(kind="group", name="g", key="group/g", backlog=30, in_total=200, out_total=170),),
    )
    collector.store(broker, first, now=1000.0)
    collector.store(broker, second, now=1010.0)
    dest = Destination.objects.get(broker=broker)
    assert dest.in_rate == pytest.approx(10.0)
    assert dest.out_rate == pytest.approx(8.0)
    assert dest.trouble == 2
    # The broker as a whole gets its rates the same way.
    broker.refresh_from_db()
    assert broker.health["in_rate"] == pytest.approx(10.0)
    assert broker.health["out_rate"] == pytest.approx(5.0)
    # A counter that went backwards (a reset) gives no rate rather than a negative one.
    third = Snapshot(
        Health(), (D(kind="group", name="g", key="group/g", backlog=0, in_total=5, out_total=5),)
    )
    collector.store(broker, third, now=1020.0)
    dest.refresh_from_db()
    assert dest.in_rate is None


def test_a_destination_that_disappears_keeps_its_history(db):
    from brokers.base import Destination as D
    from brokers.base import Health, Snapshot

    broker = Broker.objects.create(
        name="r", kind="rabbitmq", options={"management_url": "http://x"}
    )
    collector.store(
        broker, Snapshot(Health(), (D(kind="queue", name="q", key="//q", backlog=3),)), now=1000.0
    )
    collector.store(broker, Snapshot(Health(), ()), now=1005.0)
    dest = Destination.objects.get(broker=broker)
    assert dest.gone_since is not None
    assert Sample.objects.filter(destination=dest).count() == 1
    assert list(queries.destinations(queries.Listing())) == []


def test_history_is_rolled_up_and_pruned(db, settings):
    settings.SLUICE_HISTORY_FULL_HOURS = 1
    settings.SLUICE_HISTORY_DAYS = 1
    settings.SLUICE_ROLLUP_SECONDS = 300
    broker = Broker.objects.create(
        name="h", kind="rabbitmq", options={"management_url": "http://x"}
    )
    dest = _dest(broker, "q")
    now = 1_800_000_000
    start = now - 2 * 86400
    Sample.objects.bulk_create(
        Sample(
            destination=dest,
            ts=ts,
            backlog=ts % 600,
            in_flight=0,
            consumers=1,
            in_rate=2.0,
            out_rate=1.0,
            lag=None,
        )
        for ts in range(start, now, 60)
    )
    history.prune(now=now)
    # Full resolution only for the last hour; older samples live on as 5-minute rollups for a day.
    assert Sample.objects.filter(ts__lt=now - 3600).count() == 0
    assert Sample.objects.filter(ts__gte=now - 3600).count() == 60
    assert Rollup.objects.filter(ts__lt=now - 86400).count() == 0
    assert Rollup.objects.count() == 86400 // 300
    bucket = Rollup.objects.order_by("ts").first()
    assert bucket is not None
    assert bucket.in_rate == pytest.approx(2.0)
    assert bucket.backlog == max(ts % 600 for ts in range(bucket.ts, bucket.ts + 300, 60))

    week = queries.history(dest.pk, "24h", now=now)
    assert week["points"] and week["bucket_seconds"] >= 300
    hour = queries.history(dest.pk, "1h", now=now)
    assert len(hour["points"]) == 60
