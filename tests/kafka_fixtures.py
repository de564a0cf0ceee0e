"""Kafka fixtures shared by the Kafka test modules: a Broker row, topics, producing, reading.

Tansu 0.6, the Kafka-protocol broker the tests run against, answers
ListOffsets(latest) with the last record batch's base offset + 1, so records
batched together are undercounted by the broker's own end offsets (Fetch's
high watermark is right). `produce` therefore sends one record per batch
unless asked otherwise. Apache Kafka has no such problem.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# A consumer group joins Tansu in about 3 s with these (23 s with the defaults).
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@pytest.fixture
def kafka_broker(db: Any, kafka: dict[str, str]) -> Any:
    """A Broker row for the test Kafka, named "kafka"."""
    from dashboard.models import Broker

    return Broker.objects.create(
        name="kafka", kind="kafka", options={"bootstrap_servers": kafka["bootstrap_servers"]}
    )


@pytest.fixture
def kafka_admin(kafka: dict[str, str]) -> Iterator[Any]:
    client = KafkaAdminClient(bootstrap_servers=kafka["bootstrap_servers"])
    yield client
    client.close()


@pytest.fixture
def make_topic(kafka_admin: Any) -> Iterator[Callable[..., str]]:
    """Create a topic (deleted afterwards); returns its name."""
    made: list[str] = []

    def make(name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        kafka_admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        made.append(name)
        return name

    yield make
    if made:
        # Cleanup of a shared broker: a failure here must not hide the test's result.
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics(made)


@pytest.fixture
def producer(kafka: dict[str, str]) -> Iterator[Any]:
    """A KafkaProducer with acks=all that sends one record per batch (see the module note)."""
    p = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], acks="all", batch_size=1)
    yield p
    p.close()


@pytest.fixture
def produce(producer: Any) -> Callable[..., list[Any]]:
    """produce(topic, values, partition=None, key=None, headers=None) -> record metadata."""

    def send(
        topic: str,
        values: list[bytes] | int,
        partition: int | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Any]:
        if isinstance(values, int):
            values = [f"m{i}".encode() for i in range(values)]
        futures = [
            producer.send(topic, v, key=key, partition=partition, headers=headers or [])
            for v in values
        ]
        producer.flush()
        return [f.get(timeout=10) for f in futures]

    return send


def read_all(bootstrap_servers: str, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every record of `topic`, read without a group, until nothing came for a second."""
    import time

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
            got = consumer.poll(200)
            for records in got.values():
                out.extend(records)
            if got:
                quiet_since = time.monotonic()
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def joined_consumer(bootstrap_servers: str, topic: str, group: str, **config: Any) -> Any:
    """A KafkaConsumer of `group` on `topic`, committing by hand, once it holds its
    partitions (or after 30 s): the caller closes it."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **{**FAST_GROUP, **config},
    )
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(200)
    return consumer
