"""Listings read only what they show: a broker's 5,000 bindings do not travel with every row."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import pytest
from django.db import connection

from brokers.base import Health
from dashboard.collection import queries
from dashboard.kinds import status_labels
from dashboard.live import push as live
from dashboard.live import watch
from dashboard.models import Broker, Destination

LIMIT = 1_000_000  # bytes a listing may read from the database
QUEUES = 5_000
ROWS = 150  # more than a page (SLUICE_PAGE_SIZE is 100)


def _size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, int | float):
        return 8
    return len(repr(value))


class Reads:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.bytes = 0


@contextmanager
def bytes_read() -> Iterator[Reads]:
    """Counts the bytes the database returns to the SELECTs run inside the block.

    Django fetches rows lazily, after `execute` has returned, so an execute
    wrapper sees each statement but not its result. The wrapper records each
    SELECT with its parameters; on leaving, each is run again on a plain cursor
    and the values of every row it returns are measured: a text or JSON column by
    its UTF-8 length, a number as 8 bytes. Nothing writes between the two runs, so
    they return the same rows, and the count does not depend on how Django
    iterates or decodes them.
    """
    reads = Reads()

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            reads.statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield reads
    with connection.cursor() as cursor:
        for sql, params in reads.statements:
            cursor.execute(sql, params)
            reads.bytes += sum(_size(v) for row in cursor.fetchall() for v in row)


@pytest.fixture
def big_broker(db: Any) -> Broker:
    """A RabbitMQ broker as the collector stores 5,000 queues: each bound to the
    default exchange and to one of its own, and ROWS of them listed."""
    bindings: list[dict[str, Any]] = [
        {
            "source": source,
            "destination": f"orders.{i:05d}",
            "destination_type": "queue",
            "routing_key": f"orders.{i:05d}",
            "arguments": {},
            "vhost": "/",
        }
        for i in range(QUEUES)
        for source in ("", "amq.topic")
    ]
    broker = Broker.objects.create(
        name="big",
        kind="rabbitmq",
        options={"management_url": "http://127.0.0.1:1"},
        status="up",
        health=asdict(Health(backlog=QUEUES, version="4.1.0")),
        topology={
            "vhosts": ["/"],
            "exchanges": [{"name": "amq.topic", "type": "topic", "vhost": "/"}],
            "bindings": bindings,
        },
    )
    consumers = [{"tag": f"ctag-{n}", "channel": f"10.0.0.{n}:5672 (1)"} for n in range(20)]
    Destination.objects.bulk_create(
        Destination(
            broker=broker,
            kind="queue",
            key=f"//orders.{i:05d}",
            name=f"orders.{i:05d}",
            vhost="/",
            backlog=i,
            consumers=len(consumers),
            details={"arguments": {}, "consumers": consumers, "extra": {}},
        )
        for i in range(ROWS)
    )
    assert len(str(broker.topology)) > 700_000  # the size the probe met
    return broker


def test_the_overview_reads_under_a_megabyte(big_broker, client_for):
    client = client_for("carol")
    with bytes_read() as reads:
        page = client.get("/")
    assert page.status_code == 200
    assert "orders.00149" in page.content.decode()  # the largest backlog ranks first
    assert reads.bytes < LIMIT, f"{reads.bytes:,} bytes read by {len(reads.statements)} SELECTs"


def test_the_live_push_of_the_overview_reads_under_a_megabyte(big_broker):
    view = watch.parse("overview")
    assert view is not None
    with bytes_read() as reads:
        html = live.render(view)
    assert "orders.00149" in html
    assert reads.bytes < LIMIT, f"{reads.bytes:,} bytes read by {len(reads.statements)} SELECTs"


def test_the_api_listing_reads_under_a_megabyte(big_broker, client_for, token_for):
    client = client_for(None)
    token = token_for("carol")
    with bytes_read() as reads:
        answer = client.get(
            "/api/v1/brokers/big/destinations?limit=100", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
    assert answer.status_code == 200
    assert len(answer.json()["destinations"]) == 100
    assert reads.bytes < LIMIT, f"{reads.bytes:,} bytes read by {len(reads.statements)} SELECTs"


def test_listed_rows_keep_what_the_listing_shows(db):
    """A Kafka group's status and time behind come through the cut-down details."""
    broker = Broker.objects.create(name="k", kind="kafka", options={}, status="up")
    Destination.objects.create(
        broker=broker,
        kind="group",
        key="g",
        name="g",
        trouble=3,
        details={
            "status": {"status": "ERROR", "rule": "stopped while lagging"},
            "extra": {"lag_seconds": {"max": 90.5}, "partitions": list(range(500))},
            "consumers": [],
        },
    )
    [row] = queries.shown(queries.destinations(queries.Listing()))
    assert row.details == {
        "status": {"status": "ERROR", "rule": "stopped while lagging"},
        "extra": {"lag_seconds": {"max": 90.5}},
    }
    shown = queries.as_json(row)
    assert (shown["status"], shown["status_rule"], shown["lag_seconds"]) == (
        "ERROR",
        "stopped while lagging",
        90.5,
    )
    assert row.trouble_label == status_labels()["ERROR"]
