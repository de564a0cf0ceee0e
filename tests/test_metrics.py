"""/metrics for Prometheus and /readyz for probes, from stored state, on the real RabbitMQ."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.collection import collector
from dashboard.models import Broker, Destination
from tests.app_fixtures import closed_port, wait_for

pytestmark = pytest.mark.django_db

ODD = "orders ü/#%.dlq"  # a name that needs escaping as a label value


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels, parsed as Prometheus parses it."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def dest_labels(broker: str, name: str, kind: str = "queue") -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"broker": broker, "kind": kind, "vhost": "/", "name": name}.items()))


@pytest.fixture
def queue(amqp: Any, unique_name: str) -> str:
    name = f"{unique_name} {ODD}"
    amqp.queue_declare(name)
    for n in range(7):
        amqp.basic_publish("", name, f"m{n}".encode(), pika.BasicProperties(delivery_mode=2))
    return name


def collected(broker: Broker, name: str, backlog: int) -> None:
    def seen() -> bool:
        broker.refresh_from_db()
        assert collector.collect(broker), broker.error
        row = Destination.objects.filter(broker=broker, name=name).first()
        # Settled: the interval the messages arrived in shows them arriving ("growing").
        return row is not None and row.backlog == backlog and row.trouble == 1

    wait_for(seen, timeout=30, every=1)


def test_a_scrape_shows_each_destination_and_broker_as_last_collected(
    rabbit_broker, queue, client, token_for
):
    collected(rabbit_broker, queue, 7)
    page = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/plain; version=")
    got = samples(page.content.decode())
    labels = dest_labels("rabbit", queue)
    assert got[("sluice_destination_backlog_messages", labels)] == 7
    assert got[("sluice_destination_in_flight_messages", labels)] == 0
    assert got[("sluice_destination_consumers", labels)] == 0
    assert got[("sluice_destination_trouble", labels)] == 1  # a backlog and no consumers
    broker = (("broker", "rabbit"), ("kind", "rabbitmq"))
    assert got[("sluice_broker_up", broker)] == 1
    rabbit_broker.refresh_from_db()
    assert rabbit_broker.last_collected is not None
    stamp = got[("sluice_broker_last_collected_timestamp_seconds", broker)]
    assert stamp == pytest.approx(rabbit_broker.last_collected.timestamp())
    assert got[("sluice_broker_collect_duration_seconds", broker)] == pytest.approx(
        rabbit_broker.collect_ms / 1000
    )


def test_a_scrape_reads_stored_state_and_calls_no_broker(rabbit_broker, queue, client, token_for):
    collected(rabbit_broker, queue, 7)
    # The broker goes away: the next collection fails, and a scrape still answers
    # with the last figures it had, saying the broker is down.
    rabbit_broker.options = {"management_url": f"http://127.0.0.1:{closed_port()}"}
    rabbit_broker.save()
    collector.forget_adapter(rabbit_broker)
    assert not collector.collect(rabbit_broker)
    page = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}")
    got = samples(page.content.decode())
    assert got[("sluice_broker_up", (("broker", "rabbit"), ("kind", "rabbitmq")))] == 0
    assert got[("sluice_destination_backlog_messages", dest_labels("rabbit", queue))] == 7


def test_counters_and_lag_in_seconds_where_stored(db, client, token_for):
    broker = Broker.objects.create(name="k", kind="kafka", options={"bootstrap_servers": "x:1"})
    now = datetime.now(UTC)
    Destination.objects.create(
        broker=broker, kind="group", key="group/g", name="g", backlog=40, lag=40,
        in_total=1200, out_total=1160, updated_at=now,
        details={"extra": {"lag_seconds": {"max": 12.5}}},
    )  # fmt: skip
    Destination.objects.create(
        broker=broker, kind="topic", key="topic/t", name="t", gone_since=now, updated_at=now
    )  # gone: not exported
    got = samples(
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}").content.decode()
    )
    labels = tuple(sorted({"broker": "k", "kind": "group", "vhost": "", "name": "g"}.items()))
    assert got[("sluice_destination_lag_messages", labels)] == 40
    assert got[("sluice_destination_lag_seconds", labels)] == 12.5
    assert got[("sluice_destination_in_messages_total", labels)] == 1200
    assert got[("sluice_destination_out_messages_total", labels)] == 1160
    assert not [key for key in got if ("name", "t") in key[1]]


def test_the_text_format_and_openmetrics_carry_the_same_samples(db, client, token_for):
    """The text format is written by Sluice, OpenMetrics by prometheus_client: they agree,
    down to label values that need escaping."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    broker = Broker.objects.create(name="r", kind="rabbitmq", options={"management_url": "x"})
    now = datetime.now(UTC)
    for n, name in enumerate(['say "hi"', "back\\slash", "new\nline", "ünï ☃"]):
        Destination.objects.create(
            broker=broker, kind="queue", key=f"/{name}", name=name, vhost="/",
            backlog=n, in_rate=0.5 * n, in_total=10**15 + n, updated_at=now,
        )  # fmt: skip
    auth = f"Bearer {token_for('carol')}"
    text = client.get("/metrics", HTTP_AUTHORIZATION=auth)
    opened = client.get(
        "/metrics",
        HTTP_AUTHORIZATION=auth,
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )
    assert opened["Content-Type"].startswith("application/openmetrics-text")
    assert opened.content.decode().endswith("# EOF\n")
    ours = samples(text.content.decode())
    theirs = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in openmetrics_families(opened.content.decode())
        for s in family.samples
    }
    assert ours == theirs
    assert ours[("sluice_destination_backlog_messages", dest_labels("r", 'say "hi"'))] == 0
    assert (
        ours[("sluice_destination_in_messages_total", dest_labels("r", "new\nline"))] == 10**15 + 2
    )


def test_only_a_token_or_an_allowed_address_may_scrape(db, client, token_for, settings):
    anonymous = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert anonymous.status_code == 401
    assert "SLUICE_METRICS_ALLOW" in anonymous.content.decode()
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert "sluice_" not in anonymous.content.decode()
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert wrong.status_code == 401
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}").status_code == 200
    )
    settings.SLUICE_METRICS_ALLOW = [ipaddress.ip_network("10.1.2.0/24")]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.3.3").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="not an address").status_code == 401
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 405


def test_readyz_answers_for_the_database_redis_and_every_broker(rabbit_broker, client, settings):
    rabbit_broker.refresh_from_db()
    never = client.get("/readyz")
    assert never.status_code == 503
    assert never.json() == {"ready": False, "problems": ["rabbit: not collected yet"]}
    assert collector.collect(rabbit_broker)
    assert client.get("/readyz").json() == {"ready": True, "problems": []}
    # A collection that failed still counts: readiness is about Sluice, not the brokers.
    Broker.objects.filter(pk=rabbit_broker.pk).update(
        last_collected=datetime.fromtimestamp(
            time.time() - 3 * rabbit_broker.effective_interval - 5, UTC
        )
    )
    stale = client.get("/readyz")
    assert stale.status_code == 503
    [problem] = stale.json()["problems"]
    assert problem.startswith("rabbit: last collected") and "s ago" in problem
    Broker.objects.filter(pk=rabbit_broker.pk).update(enabled=False)  # not watched: not counted
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["problems"] == ["redis: does not answer (ConnectionError)"]
    port = settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0]
    assert port not in down.content.decode()  # where Redis is stays in the log


def test_a_bad_allow_list_stops_start_up():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", "import dashboard.settings"],
        env={"SLUICE_METRICS_ALLOW": "10.0.0.0/24, prometheus.internal", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "SLUICE_METRICS_ALLOW lists addresses or networks" in run.stderr
    assert "'prometheus.internal'" in run.stderr
