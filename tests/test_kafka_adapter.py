"""The Kafka adapter against a real Kafka-protocol broker (Tansu, from tests/conftest.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import (
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)

from brokers.base import BrokerError, Destination, Snapshot
from brokers.kafka import Kafka


def _free_port() -> int:
    """A port nothing listens on once this returns."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def adapter(kafka: dict[str, str]) -> Iterator[Kafka]:
    a = Kafka(kafka["bootstrap_servers"])
    yield a
    a.close()


@pytest.fixture
def admin(kafka: dict[str, str]) -> Iterator[Any]:
    client = KafkaAdminClient(bootstrap_servers=kafka["bootstrap_servers"])
    yield client
    client.close()


@pytest.fixture
def produce(kafka: dict[str, str]) -> Iterator[Callable[[str, int, int], None]]:
    producer = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"])

    def send(topic: str, count: int, partition: int = 0) -> None:
        # One record per batch: Tansu 0.6 answers ListOffsets(latest) with the
        # last batch's base offset + 1, so records batched together would be
        # undercounted by the broker itself (Apache Kafka has no such problem).
        for i in range(count):
            producer.send(topic, f"m{i}".encode(), partition=partition).get(timeout=10)

    yield send
    producer.close()


def create_topic(admin: Any, name: str, partitions: int = 1) -> None:
    admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})


def find(snapshot: Snapshot, key: str) -> Destination:
    found = next((d for d in snapshot.destinations if d.key == key), None)
    assert found is not None, f"{key} not in {[d.key for d in snapshot.destinations]}"
    return found


# -- topics -------------------------------------------------------------------


def test_topic_counts_produced_messages_and_its_end_offsets_grow(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name, partitions=2)
    before = find(adapter.collect(), f"topic/{unique_name}")
    assert before.extra["messages"] == 0

    produce(unique_name, 5, partition=0)
    produce(unique_name, 2, partition=1)
    topic = find(adapter.collect(), f"topic/{unique_name}")

    assert topic.kind == "topic" and topic.name == unique_name
    assert topic.extra["messages"] == 7
    assert topic.extra["partitions"] == 2
    assert topic.extra["replication_factor"] == 1
    assert topic.extra["under_replicated"] == 0 and topic.extra["offline"] == 0
    assert topic.in_total == (before.in_total or 0) + 7
    assert topic.backlog == 0  # a topic's backlog is its groups' lag


def test_health_describes_the_cluster(adapter: Kafka, admin: Any, unique_name: str) -> None:
    create_topic(admin, unique_name, partitions=3)
    snapshot = adapter.collect()
    health = snapshot.health

    assert len(health.nodes) == health.facts["brokers"] >= 1
    assert health.nodes[0].name.startswith("broker ")
    assert health.facts["controller"] is not None
    assert health.facts["topics"] == sum(1 for d in snapshot.destinations if d.kind == "topic")
    assert health.facts["partitions"] >= 3
    assert health.facts["offline"] == 0
    assert snapshot.requests >= 3


def test_internal_topics_are_not_destinations(adapter: Kafka, admin: Any, unique_name: str) -> None:
    create_topic(admin, f"__{unique_name}")
    keys = {d.key for d in adapter.collect().destinations}
    assert f"topic/__{unique_name}" not in keys


# -- groups -------------------------------------------------------------------


def test_group_lag_is_end_offset_minus_committed_offset_per_partition(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name, partitions=2)
    produce(unique_name, 6, partition=0)
    produce(unique_name, 4, partition=1)
    group = f"{unique_name}-group"
    admin.alter_group_offsets(
        group,
        {
            TopicPartition(unique_name, 0): OffsetAndMetadata(2, None, -1),
            TopicPartition(unique_name, 1): OffsetAndMetadata(4, None, -1),
        },
    )

    snapshot = adapter.collect()
    dest = find(snapshot, f"group/{group}")

    assert dest.kind == "group" and dest.name == group
    assert dest.backlog == dest.lag == 4
    assert dest.extra["topics"] == {unique_name: 4}
    assert dest.extra["partitions"] == [[unique_name, 0, 2, 6, 4], [unique_name, 1, 4, 4, 0]]
    assert dest.in_total == 10 and dest.out_total == 6
    assert dest.consumers == 0  # nobody has joined the group
    assert snapshot.health.backlog >= 4


def test_group_commits_move_its_totals(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name)
    produce(unique_name, 5)
    group = f"{unique_name}-group"
    tp = TopicPartition(unique_name, 0)
    admin.alter_group_offsets(group, {tp: OffsetAndMetadata(1, None, -1)})
    first = find(adapter.collect(), f"group/{group}")

    admin.alter_group_offsets(group, {tp: OffsetAndMetadata(5, None, -1)})
    second = find(adapter.collect(), f"group/{group}")

    assert (first.lag, second.lag) == (4, 0)
    assert (second.out_total or 0) - (first.out_total or 0) == 4


def test_a_joined_group_shows_its_state_and_members(
    kafka: dict[str, str], adapter: Kafka, admin: Any, produce: Callable[..., None],
    unique_name: str,
) -> None:  # fmt: skip
    create_topic(admin, unique_name)
    produce(unique_name, 3)
    group = f"{unique_name}-group"
    consumer = KafkaConsumer(
        unique_name,
        bootstrap_servers=kafka["bootstrap_servers"],
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        deadline = time.monotonic() + 30
        read = 0
        while read < 1 and time.monotonic() < deadline:
            read += sum(len(r) for r in consumer.poll(500, max_records=1).values())
        assert read == 1, "the consumer never got a message"
        consumer.commit()

        dest = find(adapter.collect(), f"group/{group}")
    finally:
        consumer.close()

    # Tansu breaks kafka-python's own describe_groups(); the adapter's
    # DescribeGroups v2 still gets state and members.
    assert dest.state == "Stable"
    assert dest.consumers == 1 and len(dest.consumer_details) == 1
    assert dest.lag == 2


# -- connections and errors ---------------------------------------------------


def test_unreachable_bootstrap_server_raises_broker_error() -> None:
    port = _free_port()  # nothing listens there once the socket is closed
    adapter = Kafka(f"127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(BrokerError) as caught:
        adapter.collect()
    assert caught.value.message == f"cannot reach 127.0.0.1:{port}: connection refused"
    assert caught.value.retryable


def test_errors_never_show_the_password() -> None:
    adapter = Kafka(
        f"127.0.0.1:{_free_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password="hunter2-secret",
        timeout=1.0,
    )
    with pytest.raises(BrokerError) as caught:
        adapter.collect()
    assert "hunter2" not in str(caught.value)


def test_collect_after_close_reconnects(adapter: Kafka, admin: Any, unique_name: str) -> None:
    create_topic(admin, unique_name)
    adapter.collect()
    adapter.close()
    assert find(adapter.collect(), f"topic/{unique_name}").extra["partitions"] == 1
