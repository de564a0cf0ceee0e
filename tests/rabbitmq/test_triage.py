"""RabbitMQ triage on the real broker: lost consumers, dead letters at a known rate, limits, stalls."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import pika
import pytest

from brokers.rabbitmq import prometheus
from dashboard.collection import collector
from dashboard.models import Destination, Incident
from dashboard.triage import evaluate as triage
from tests.app_fixtures import collect_and_triage as step
from tests.app_fixtures import wait_for
from tests.rabbit_fixtures import management

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]


def queue_info(rabbitmq: dict[str, str], name: str) -> dict[str, Any]:
    return management(rabbitmq, "GET", f"/api/queues/%2F/{quote(name, safe='')}").json()


def shows(rabbitmq: dict[str, str], name: str, **want: int) -> bool:
    info = queue_info(rabbitmq, name)
    return all(info.get(k) == v for k, v in want.items())


def live(broker: Any, cause: str, key: str) -> Incident | None:
    return Incident.objects.filter(broker=broker, cause=cause, key=key, state="open").first()


def publish(amqp: Any, queue: str, count: int, body: bytes = b"x" * 100) -> None:
    for _ in range(count):
        amqp.basic_publish("", queue, body)


def test_a_queue_that_loses_its_consumer_opens_an_incident_and_recovery_resolves_it(
    rabbit_broker, amqp, unique_name, rabbitmq
):
    # The collections below are on a clock 15 s a step, and the rate in the summary is
    # what the collector derives on it, from the management API's totals: the plugin's
    # path takes its rates over its own readings' real times.
    rabbit_broker.options = {**rabbit_broker.options, "metrics_source": "management"}
    rabbit_broker.save()
    queue = unique_name
    amqp.queue_declare(queue, arguments={"x-max-length": 1000})
    reader = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = reader.channel()
    channel.basic_consume(queue, lambda ch, method, props, body: None, auto_ack=True)
    wait_for(lambda: shows(rabbitmq, queue, consumers=1))
    t = time.time()
    step(rabbit_broker, t)
    step(rabbit_broker, t + 15)
    assert not Incident.objects.filter(key=f"//{queue}").exists()

    reader.close()
    publish(amqp, queue, 30)
    wait_for(lambda: shows(rabbitmq, queue, consumers=0, messages_ready=30))
    outcome = step(rabbit_broker, t + 30)

    incident = live(rabbit_broker, "consumers_lost", f"//{queue}")
    assert incident is not None and incident in outcome.opened
    # 30 arrived over the 15 s since the last collection.
    assert incident.summary == "lost its 1 consumer(s) 15 s ago; backlog 30, 2.0 msg/s arriving"
    assert incident.severity == "critical"
    assert incident.evidence["had"] == 1
    assert "open" in incident.actions and "browse" in incident.actions

    # Judged from the rows the collection hands over (as the worker does), or read back
    # from the database, it is the same incident.
    stored: list[Any] = []
    rabbit_broker.refresh_from_db()
    assert collector.collect(rabbit_broker, now=t + 31, stored=stored)
    handed = triage.evaluate(rabbit_broker, now=t + 31, destinations=stored)
    read = triage.evaluate(rabbit_broker, now=t + 31)
    assert {(i.cause, i.key) for i in handed.open} == {(i.cause, i.key) for i in read.open}
    assert ("consumers_lost", f"//{queue}") in {(i.cause, i.key) for i in handed.open}

    # Still no consumer: the same incident holds, however far the window slides.
    for i in range(1, 12):
        step(rabbit_broker, t + 30 + 15 * i)
    assert Incident.objects.filter(key=f"//{queue}", cause="consumers_lost").count() == 1
    held = live(rabbit_broker, "consumers_lost", f"//{queue}")
    assert held is not None and held.pk == incident.pk
    # Nothing arrives any more: still an incident, less severe.
    assert held.severity == "warning"
    assert held.summary == "lost its 1 consumer(s) 3 min ago; backlog 30"

    reader = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    reader.channel().basic_consume(queue, lambda *a: None, auto_ack=True)
    try:
        wait_for(lambda: shows(rabbitmq, queue, consumers=1, messages_ready=0))
        outcome = step(rabbit_broker, t + 30 + 15 * 13)
    finally:
        reader.close()
    incident.refresh_from_db()
    assert incident.state == "resolved" and incident in outcome.resolved
    assert incident.resolved_at is not None


def test_a_dead_letter_queue_filling_at_a_known_rate_shows_that_in_rate(
    rabbit_broker, amqp, unique_name, rabbitmq
):
    """RabbitMQ counts no publishes for dead-lettered arrivals; Sluice derives them.

    On the management path, from the broker's counts refreshed with their own times;
    the Prometheus path's arrivals, averaged over a minute, are checked against a known
    rate in tests/rabbitmq/test_prometheus_source.py."""
    rabbit_broker.options = {**rabbit_broker.options, "metrics_source": "management"}
    rabbit_broker.save()
    dlx, dlq, source = f"{unique_name}.dlx", f"{unique_name}.dlq", unique_name
    amqp.exchange_declare(dlx, "fanout", auto_delete=True)
    amqp.queue_declare(dlq)
    amqp.queue_bind(dlq, dlx)
    # Every message expires on arrival and is dead-lettered at once.
    amqp.queue_declare(source, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": dlx})
    per_second = 10
    stop = threading.Event()

    def produce() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
        ch = conn.channel()
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = int((time.monotonic() - start) * per_second)
            while sent < due:
                ch.basic_publish("", source, b"poison")
                sent += 1
            time.sleep(0.01)
        conn.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        wait_for(lambda: queue_info(rabbitmq, dlq).get("messages_ready", 0) > 0)
        rates = []
        for _ in range(5):
            step(rabbit_broker, time.time())
            dest = Destination.objects.get(broker=rabbit_broker, key=f"//{dlq}")
            if dest.in_rate is not None:
                rates.append(dest.in_rate)
            time.sleep(5)
        step(rabbit_broker, time.time())
    finally:
        stop.set()
        producer.join()
    dest = Destination.objects.get(broker=rabbit_broker, key=f"//{dlq}")
    # The broker's own publish rate for the dead-letter queue stays 0.
    assert (queue_info(rabbitmq, dlq).get("message_stats") or {}).get("publish", 0) == 0
    shown = dest.in_rate
    assert shown == pytest.approx(per_second, rel=0.10), rates
    incident = live(rabbit_broker, "dead_letters", f"//{dlq}")
    assert incident is not None, list(Incident.objects.values_list("cause", "key", "state"))
    assert "dead letter(s) over the last" in incident.summary


def test_consumers_at_their_prefetch_limit_acknowledging_nothing_are_stalled(
    rabbit_broker, amqp, unique_name, rabbitmq
):
    queue = unique_name
    amqp.queue_declare(queue)
    publish(amqp, queue, 20)
    reader = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    try:
        channel = reader.channel()
        channel.basic_qos(prefetch_count=5)
        channel.basic_consume(queue, lambda *a: None)  # takes five, acknowledges none
        reader.process_data_events(time_limit=0.5)

        def settled() -> bool:
            info = queue_info(rabbitmq, queue)
            rates = info.get("message_stats") or {}
            return (
                info.get("messages_unacknowledged") == 5
                and info.get("messages_ready") == 15
                # The queue's own count is refreshed apart from its messages.
                and info.get("consumers") == 1
                and (rates.get("deliver_get_details") or {}).get("rate", 0) == 0
            )

        wait_for(settled, timeout=40)
        t = time.time()
        step(rabbit_broker, t)
        step(rabbit_broker, t + 15)
        assert live(rabbit_broker, "stalled", f"//{queue}") is None  # too short a window
        step(rabbit_broker, t + 30)
    finally:
        reader.close()
    incident = live(rabbit_broker, "stalled", f"//{queue}")
    assert incident is not None
    assert incident.summary == (
        "1 consumer(s) hold 5 unacknowledged, their prefetch limit (5), and acknowledged "
        "nothing for 30 s; 15 ready behind them"
    )
    assert incident.evidence["prefetch_total"] == 5
    # The growing-backlog detector stays quiet: nothing grew.
    assert live(rabbit_broker, "backlog_growing", f"//{queue}") is None


def test_a_consumer_requeueing_everything_is_a_redelivery_storm_after_two_collections(
    rabbit_broker, amqp, unique_name, rabbitmq
):
    queue = unique_name
    amqp.queue_declare(
        queue, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 100_000}
    )
    publish(amqp, queue, 50)
    stop = threading.Event()

    def reject_forever() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)

        def nack(ch: Any, method: Any, props: Any, body: bytes) -> None:
            ch.basic_nack(method.delivery_tag, requeue=True)

        ch.basic_consume(queue, nack)
        while not stop.is_set():
            conn.process_data_events(time_limit=0.2)
        conn.close()

    worker = threading.Thread(target=reject_forever, daemon=True)
    worker.start()
    try:
        seen: list[Any] = []

        def storming() -> bool:
            info = queue_info(rabbitmq, queue)
            seen[:] = [info.get("messages_unacknowledged"), info.get("message_stats")]
            stats = info.get("message_stats") or {}
            return (stats.get("redeliver_details") or {}).get("rate", 0) >= 2

        try:
            wait_for(storming, timeout=40)
        except AssertionError:
            raise AssertionError(f"no storm seen: {seen}") from None
        t = time.time()
        first = step(rabbit_broker, t)
        assert (
            live(rabbit_broker, "redelivery", f"//{queue}") is None
        )  # one collection is not enough
        assert not first.opened or all(i.cause != "redelivery" for i in first.opened)
        wait_for(storming, timeout=20)
        # As collections are: an interval apart, so that the node has refreshed the
        # counters the Prometheus path reads (every 5 s).
        time.sleep(max(0.0, t + prometheus.REFRESH_SECONDS - time.time()))
        step(rabbit_broker, t + 5)
    finally:
        stop.set()
        worker.join()
    incident = live(rabbit_broker, "redelivery", f"//{queue}")
    assert incident is not None
    assert "redelivered of" in incident.summary
    assert "each message is dropped or dead-lettered after 100000 deliveries" in incident.summary


def test_a_disk_alarm_blocks_publishers_and_is_critical_until_it_clears(rabbit_broker, rabbitmq):
    """A real alarm: the free-disk limit raised above the free space, then put back."""
    import subprocess

    node = management(rabbitmq, "GET", "/api/nodes").json()[0]
    before = node["disk_free_limit"]

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    def alarm_is(raised: bool) -> bool:
        return management(rabbitmq, "GET", "/api/nodes").json()[0]["disk_free_alarm"] is raised

    try:
        ctl("set_disk_free_limit", str(node["disk_free"] * 4))
        wait_for(lambda: alarm_is(True), timeout=60)
        step(rabbit_broker, time.time())
        incident = live(rabbit_broker, "alarm", "")
        assert incident is not None and incident.severity == "critical"
        assert incident.summary.startswith(f"disk alarm on {node['name']}")
        assert incident.summary.endswith(": publishers are blocked")
    finally:
        ctl("set_disk_free_limit", str(before))
        wait_for(lambda: alarm_is(False), timeout=60)
    step(rabbit_broker, time.time())
    incident.refresh_from_db()
    assert incident.state == "resolved"


def test_a_draining_queue_shows_when_it_will_be_empty_and_no_incident(
    rabbit_broker, amqp, unique_name, rabbitmq, client_for
):
    queue = unique_name
    amqp.queue_declare(queue)
    publish(amqp, queue, 600)
    t = time.time()
    for n in range(4):  # 150 taken every 15 s: 10 msg/s
        if n:
            for _ in range(150):
                method, _, _ = amqp.basic_get(queue)
                amqp.basic_ack(method.delivery_tag)
        ready = 600 - 150 * n

        def drained_to(ready: int = ready) -> bool:
            return shows(rabbitmq, queue, messages_ready=ready)

        wait_for(drained_to)
        step(rabbit_broker, t + 15 * n)
    assert not Incident.objects.filter(key=f"//{queue}").exists()
    page = client_for("carol").get(f"/brokers/rabbit/d/{quote('//' + queue, safe='')}")
    text = page.content.decode()
    assert "Shrinking 10.0 msg/s; empty in about 15 s" in text
    assert "estimate from the trend of the last 4 collections (45 s)" in text
