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
from brokers.kafka.adapter import Kafka
from tests.kafka_fixtures import joined_consumer


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
    # The adapter reports none: the Kafka kind settles it from the groups' lag.
    assert topic.backlog == 0


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


# -- topics: partitions, configs, sizes -----------------------------------------


def test_topic_partitions_show_leader_replicas_isr_and_offsets(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name, partitions=3)
    produce(unique_name, 4, partition=0)
    produce(unique_name, 2, partition=2)

    topic = find(adapter.collect(), f"topic/{unique_name}")
    rows = topic.extra["partition_details"]

    assert [r["partition"] for r in rows] == [0, 1, 2]
    assert [(r["first"], r["last"], r["messages"]) for r in rows] == [
        (0, 4, 4),
        (0, 0, 0),
        (0, 2, 2),
    ]
    brokers = {int(n.name.split()[1]) for n in adapter.collect().health.nodes}
    for r in rows:
        assert r["leader"] in brokers
        assert r["leader"] in r["replicas"] and sorted(r["isr"]) == sorted(r["replicas"])
        assert r["under_replicated"] is False
    assert topic.extra["messages"] == 6 and topic.in_total == 6


def test_topic_configs_are_read_in_one_request_on_the_topology_cycle_and_kept(
    adapter: Kafka, admin: Any, unique_name: str
) -> None:
    from kafka.admin import NewTopic

    admin.create_topics([NewTopic(unique_name, 1, 1, topic_configs={"retention.ms": "3600000"})])
    other = f"{unique_name}-other"
    admin.create_topics([NewTopic(other, 1, 1, topic_configs={"retention.bytes": "1048576"})])
    adapter.collect()  # a new topic's configs are read as soon as it is seen
    plain = adapter.collect()  # nothing new: no DescribeConfigs
    slow = adapter.collect(topology=True)
    again = adapter.collect()

    configs = find(slow, f"topic/{unique_name}").extra["configs"]
    assert configs["retention.ms"]["value"] == "3600000"
    assert find(slow, f"topic/{other}").extra["configs"]["retention.bytes"]["value"] == "1048576"
    # Cached between topology cycles, and one request for every topic at once.
    assert find(again, f"topic/{unique_name}").extra["configs"] == configs
    log_dirs = len(slow.health.nodes) if "DescribeLogDirs" in adapter._versions else 0
    assert slow.requests == plain.requests + 1 + log_dirs == again.requests + 1 + log_dirs
    assert slow.topology is not None and plain.topology is None


def test_log_sizes_come_from_describe_log_dirs_or_say_the_broker_does_not_report_them(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name)
    produce(unique_name, 3)
    snapshot = adapter.collect(topology=True)
    topic = find(snapshot, f"topic/{unique_name}")

    if "DescribeLogDirs" in adapter._versions:  # Apache Kafka
        assert topic.extra["size"] > 0 and topic.extra["size_note"] == ""
        assert topic.extra["partition_details"][0]["size"] > 0
    else:  # Tansu 0.6 does not offer DescribeLogDirs
        assert topic.extra["size"] is None
        assert topic.extra["size_note"] == "not reported by this broker"
        assert snapshot.health.facts["log_sizes"] == "not reported by this broker"


def test_topic_names_at_the_249_character_limit_with_dots_dashes_and_underscores(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    name = (f"{unique_name}.a-b_c." + "x.y-z_" * 50)[:249]
    assert len(name) == 249
    create_topic(admin, name, partitions=2)
    produce(name, 3, partition=1)
    group = f"{unique_name}.g-1_x"
    admin.alter_group_offsets(group, {TopicPartition(name, 1): OffsetAndMetadata(1, None, -1)})

    snapshot = adapter.collect()
    topic = find(snapshot, f"topic/{name}")
    dest = find(snapshot, f"group/{group}")

    assert topic.name == name and topic.extra["messages"] == 3
    assert dest.extra["partitions"] == [[name, 1, 1, 3, 2]]
    assert dest.extra["topics"] == {name: 2}


# -- groups: members, lag, lag in seconds ---------------------------------------------


def test_members_show_client_host_and_the_partitions_assigned_to_them(
    kafka: dict[str, str], adapter: Kafka, admin: Any, produce: Callable[..., None],
    unique_name: str,
) -> None:  # fmt: skip
    create_topic(admin, unique_name, partitions=2)
    produce(unique_name, 2, partition=0)
    group = f"{unique_name}-group"
    consumer = joined_consumer(
        kafka["bootstrap_servers"], unique_name, group, client_id=f"{unique_name}-client"
    )
    try:
        consumer.commit({TopicPartition(unique_name, 0): OffsetAndMetadata(1, None, -1)})
        dest = find(adapter.collect(), f"group/{group}")
    finally:
        consumer.close()

    [member] = dest.extra["members"]
    assert dest.consumers == 1 and dest.state == "Stable"
    assert dest.extra["protocol_type"] == "consumer"
    # The coordinator makes member ids from the client id.
    assert member["member_id"].startswith(f"{unique_name}-client-")
    if member["client_id"]:  # Apache Kafka
        assert member["client_id"] == f"{unique_name}-client"
        assert member["host"]  # the address the coordinator saw
        assert member["assignment"] == [[unique_name, [0, 1]]]
        assert dest.extra["assignor"]
    else:
        # Tansu 0.6 answers DescribeGroups with client id, host, protocol and
        # assignment all empty: the panel says they were not reported.
        assert (member["host"], member["assignment"], dest.extra["assignor"]) == ("", [], "")


def test_a_member_assignment_is_decoded_from_the_consumer_protocol() -> None:
    from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment as Assignment

    from brokers.kafka.monitor_map import assignment

    # The bytes a consumer's group leader sends in SyncGroup, as Kafka returns
    # them in DescribeGroups (Tansu returns none, so they are made here).
    raw = Assignment(
        assigned_partitions=[
            Assignment.TopicPartition(topic="orders", partitions=[2, 0]),
            Assignment.TopicPartition(topic="audit.log", partitions=[1]),
        ],
        user_data=b"",
    ).encode(version=0)

    assert assignment("consumer", raw) == [["audit.log", [1]], ["orders", [0, 2]]]
    assert assignment("connect", raw) == []  # another protocol's layout
    assert assignment("consumer", b"\x00\x01garbage") == []


def test_lag_is_summed_per_topic_and_in_total(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    first, second = f"{unique_name}-a", f"{unique_name}-b"
    create_topic(admin, first, partitions=2)
    create_topic(admin, second)
    produce(first, 5, partition=0)
    produce(first, 3, partition=1)
    produce(second, 7)
    group = f"{unique_name}-group"
    admin.alter_group_offsets(
        group,
        {
            TopicPartition(first, 0): OffsetAndMetadata(1, None, -1),
            TopicPartition(first, 1): OffsetAndMetadata(3, None, -1),
            TopicPartition(second, 0): OffsetAndMetadata(2, None, -1),
        },
    )

    dest = find(adapter.collect(), f"group/{group}")

    assert dest.extra["topics"] == {first: 4, second: 5}
    assert dest.lag == dest.backlog == 9
    assert [r[4] for r in dest.extra["partitions"]] == [4, 0, 5]


def test_lag_in_seconds_is_the_age_of_the_next_message_and_zero_when_caught_up(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name)
    produce(unique_name, 5)
    produced = time.time()
    tp = TopicPartition(unique_name, 0)
    behind, ahead, done = (f"{unique_name}-{n}" for n in ("behind", "ahead", "done"))
    # Two groups at different offsets of the same partition, one at the end.
    admin.alter_group_offsets(behind, {tp: OffsetAndMetadata(1, None, -1)})
    admin.alter_group_offsets(ahead, {tp: OffsetAndMetadata(3, None, -1)})
    admin.alter_group_offsets(done, {tp: OffsetAndMetadata(5, None, -1)})
    time.sleep(2)

    started = time.time()
    first = adapter.collect()
    finished = time.time()
    for gid in (behind, ahead):
        seconds = find(first, f"group/{gid}").extra["lag_seconds"]
        # The message at the committed offset was written before `produced`.
        assert started - produced - 0.1 <= seconds["max"] <= finished - produced + 5
        assert seconds["partitions"] == [[unique_name, 0, seconds["max"]]]
    assert find(first, f"group/{done}").extra["lag_seconds"]["max"] == 0.0

    # The timestamps are kept: the next collections read none again.
    second = adapter.collect()
    third = adapter.collect()
    assert first.requests > second.requests == third.requests
    later = find(third, f"group/{behind}").extra["lag_seconds"]["max"]
    assert later >= find(first, f"group/{behind}").extra["lag_seconds"]["max"]


def test_a_committed_offset_past_the_end_is_out_of_range(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name)
    produce(unique_name, 5)
    group = f"{unique_name}-group"
    admin.alter_group_offsets(
        group, {TopicPartition(unique_name, 0): OffsetAndMetadata(100, None, -1)}
    )

    dest = find(adapter.collect(), f"group/{group}")

    assert dest.extra["out_of_range"] == [[unique_name, 0, 100, 0, 5]]
    assert dest.lag == 0 and dest.extra["lag_seconds"]["max"] is None


def test_requests_do_not_grow_with_the_number_of_groups(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    create_topic(admin, unique_name)
    produce(unique_name, 2)
    tp = TopicPartition(unique_name, 0)
    admin.alter_group_offsets(f"{unique_name}-g0", {tp: OffsetAndMetadata(2, None, -1)})
    adapter.collect()
    before = adapter.collect()
    for i in range(1, 8):
        admin.alter_group_offsets(f"{unique_name}-g{i}", {tp: OffsetAndMetadata(2, None, -1)})
    adapter.collect()  # one batched FindCoordinator for the new groups
    after = adapter.collect()

    groups = [d for d in after.destinations if d.name.startswith(f"{unique_name}-g")]
    assert len(groups) == 8
    assert after.requests == before.requests
    # Metadata, ListGroups per broker, ListOffsets x2 per leader, OffsetFetch and
    # DescribeGroups per coordinator: nothing per group.
    brokers = after.health.facts["brokers"]
    assert after.requests <= 1 + brokers + 2 * brokers + 2 * brokers


def test_a_topic_created_after_the_first_collection_is_collected(
    adapter: Kafka, admin: Any, produce: Callable[..., None], unique_name: str
) -> None:
    adapter.collect()
    create_topic(admin, unique_name, partitions=2)
    produce(unique_name, 3, partition=1)

    topic = find(adapter.collect(), f"topic/{unique_name}")

    assert topic.extra["messages"] == 3
    assert [r["last"] for r in topic.extra["partition_details"]] == [0, 3]
