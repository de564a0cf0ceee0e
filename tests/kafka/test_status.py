"""Kafka monitoring through the collector, against the real Kafka-protocol broker (Tansu).

Group statuses are judged from the samples of recent collections. These tests
drive real groups into each state and run real collections; the collections
are stamped 15 s apart (`collector.collect(now=...)`) so that a window of
history builds up without the test waiting minutes. What the broker says is
always real; only the collections' clock is advanced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from dashboard.collection import collector, queries
from dashboard.kinds.kafka import status as kafkastatus
from dashboard.models import Broker, Destination
from tests.app_fixtures import STEP, closed_port, collect_at, collect_series
from tests.kafka_fixtures import joined_consumer

pytestmark = pytest.mark.django_db


def group(broker: Broker, gid: str) -> Destination:
    return Destination.objects.get(broker=broker, key=f"group/{gid}")


def status(dest: Destination) -> str:
    return str(dest.details["status"]["status"])


def commit(admin: Any, gid: str, topic: str, offset: int, partition: int = 0) -> None:
    admin.alter_group_offsets(
        gid, {TopicPartition(topic, partition): OffsetAndMetadata(offset, None, -1)}
    )


def page(client: Any, dest: Destination) -> str:
    response = client.get(f"/brokers/{dest.broker.name}/d/{quote(dest.key, safe='')}")
    assert response.status_code == 200
    return str(response.content.decode())


@pytest.fixture(autouse=True)
def fresh_adapters() -> Any:
    # Each test's Broker row gets its own adapter (and caches).
    yield
    for broker in Broker.objects.all():
        collector.forget_adapter(broker)


# -- statuses -------------------------------------------------------------------


def test_a_group_with_lag_no_members_and_no_commits_is_STOP_and_ranks_as_trouble(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    produce(topic, 5)
    stopped, done = f"{unique_name}-stopped", f"{unique_name}-done"
    commit(kafka_admin, stopped, topic, 1)
    commit(kafka_admin, done, topic, 5)

    t0 = time.time()
    collect_at(kafka_broker, t0)
    first = group(kafka_broker, stopped)
    assert status(first) == kafkastatus.OK
    assert "too little history" in first.details["status"]["rule"]

    collect_series(kafka_broker, t0 + STEP, count=2)
    dest, caught_up = group(kafka_broker, stopped), group(kafka_broker, done)

    assert status(dest) == kafkastatus.STOP
    assert "no active members" in dest.details["status"]["rule"]
    assert dest.trouble >= 1 and dest.trouble_label == "stopped"
    assert status(caught_up) == kafkastatus.OK and caught_up.trouble == 0
    ranked = [d.name for d in queries.destinations(queries.Listing(q=unique_name, kind="group"))]
    assert ranked == [stopped, done]


def test_a_group_with_members_whose_offsets_do_not_move_is_STALL(
    kafka: dict[str, str], kafka_broker: Broker, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    produce(topic, 6)
    gid = f"{unique_name}-stuck"
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, gid)
    try:
        # It commits once, then reads on without committing again: stuck.
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, None, -1)})
        last = collect_series(kafka_broker, time.time())
        consumer.poll(100)
        collect_at(kafka_broker, last + STEP)
        dest = group(kafka_broker, gid)
    finally:
        consumer.close()

    assert dest.consumers == 1 and dest.lag == 4
    assert status(dest) == kafkastatus.STALL
    rule = dest.details["status"]["rule"]
    assert "1 member(s)" in rule and "Kafka keeps no commit times" in rule
    assert dest.trouble == 2 and dest.trouble_label == "stalled"


def test_records_that_just_came_to_a_group_caught_up_in_the_window_are_not_a_STALL(
    kafka: dict[str, str], kafka_broker: Broker, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-rare")
    produce(topic, 1)
    gid = f"{unique_name}-slow-handler"
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, gid)
    try:
        # Caught up, with nothing to commit for a while; then a record it is still handling.
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, None, -1)})
        last = collect_series(kafka_broker, time.time())
        produce(topic, 1)
        collect_at(kafka_broker, last + STEP)
        just_came = group(kafka_broker, gid)
        # Once every collection of the window saw it unread, it is stuck.
        for i in range(2, 6):
            collect_at(kafka_broker, last + i * STEP)
        dest = group(kafka_broker, gid)
    finally:
        consumer.close()

    assert just_came.lag == 1 and status(just_came) == kafkastatus.OK
    assert "too soon to call it stuck" in just_came.details["status"]["rule"]
    assert status(dest) == kafkastatus.STALL


def test_a_group_whose_offsets_move_but_whose_lag_keeps_growing_is_WARN(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-slow"
    produce(topic, 5)
    commit(kafka_admin, gid, topic, 1)
    t0 = time.time()
    collect_at(kafka_broker, t0)
    for i in (1, 2):
        produce(topic, 3)  # three more arrive while it reads one
        commit(kafka_admin, gid, topic, 1 + i)
        collect_at(kafka_broker, t0 + i * STEP)
    dest = group(kafka_broker, gid)

    assert dest.lag == 8 and dest.out_rate and dest.out_rate > 0
    assert status(dest) == kafkastatus.WARN
    assert "lag grew from 4 to 8" in dest.details["status"]["rule"]
    assert dest.trouble == 2 and dest.trouble_label == "lag growing"


def test_a_group_that_keeps_up_is_OK(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-fine"
    t0 = time.time()
    for i in range(3):
        produce(topic, 2)
        commit(kafka_admin, gid, topic, 2 * i + 1)  # one behind, moving along
        collect_at(kafka_broker, t0 + i * STEP)
    dest = group(kafka_broker, gid)

    assert dest.lag == 1
    assert status(dest) == kafkastatus.OK
    assert "lag is not growing" in dest.details["status"]["rule"]


def test_a_committed_offset_outside_the_log_is_ERROR_and_ranks_first(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    produce(topic, 5)
    broken, stopped = f"{unique_name}-broken", f"{unique_name}-stopped"
    commit(kafka_admin, broken, topic, 2)
    commit(kafka_admin, stopped, topic, 0)
    tp = TopicPartition(topic, 0)
    try:
        # Retention deleting what the group has not read yet.
        kafka_admin.delete_records({tp: 4}, timeout_ms=3000)
        deleted = True
    except KafkaError:
        # Tansu 0.6 drops the connection on DeleteRecords (not implemented) and
        # applies no retention: the nearest real fault is an offset past the
        # end, as a group left with offsets restored from elsewhere has.
        deleted = False
        commit(kafka_admin, broken, topic, 100)

    collect_series(kafka_broker, time.time())
    dest = group(kafka_broker, broken)

    assert status(dest) == kafkastatus.ERROR
    rule = dest.details["status"]["rule"]
    if deleted:
        assert "below the log start 4" in rule and "2 message(s) were deleted" in rule
    else:
        assert "Committed offset 100" in rule and "past the log end 5" in rule
    assert dest.trouble == 3 and dest.trouble_label == "error"
    ranked = [d.name for d in queries.destinations(queries.Listing(q=unique_name, kind="group"))]
    assert ranked == [broken, stopped]


def test_the_rule_for_messages_deleted_before_they_were_read() -> None:
    # Tansu can delete no records (see above); the rule's words are checked here.
    extra = {"out_of_range": [["orders", 3, 120, 500, 900]]}
    got = kafkastatus.judge(extra, "Empty", kafkastatus.Point(0, 780, None, 0), [])
    assert got.status == kafkastatus.ERROR
    assert got.rule.startswith("Committed offset 120 on orders/3 is below the log start 500")
    assert "380 message(s) were deleted" in got.rule


# -- rates, lag in seconds, API and pages ----------------------------------------------


def test_rates_lag_seconds_and_status_reach_the_api_and_the_overview(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], client_for: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-reader"
    produce(topic, 4)
    commit(kafka_admin, gid, topic, 1)
    collect_at(kafka_broker, time.time())
    time.sleep(1.5)
    produce(topic, 10)
    commit(kafka_admin, gid, topic, 3)  # the next to read was written 1.5 s ago
    collect_at(kafka_broker, time.time())

    dest, topic_dest = group(kafka_broker, gid), Destination.objects.get(key=f"topic/{topic}")
    assert topic_dest.in_rate and topic_dest.in_rate > 0  # produce rate from end offsets
    assert dest.out_rate and dest.out_rate > 0  # consume rate from commits
    behind = dest.details["extra"]["lag_seconds"]["max"]
    assert behind is not None and behind >= 1.5

    carol = client_for("carol")
    api = carol.get("/api/v1/brokers/kafka/destinations", {"q": gid}).json()
    [row] = api["destinations"]
    assert row["status"] == "OK" and row["lag_seconds"] == behind and row["lag"] == 11
    assert "too little history" in row["status_rule"]
    overview = carol.get("/", {"q": unique_name}).content.decode()
    assert "behind</span>" in overview
    assert 'data-key="group/' + gid in overview


def test_topic_and_group_panels_render_partitions_configs_members_and_status(
    kafka: dict[str, str], kafka_broker: Broker, kafka_admin: Any,
    make_topic: Callable[..., str], produce: Callable[..., Any],
    client_for: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(
        f"{unique_name}.orders_v-2", partitions=2, configs={"retention.ms": "86400000"}
    )
    produce(topic, 3, partition=0)
    produce(topic, 1, partition=1)
    # Tansu 0.6 lists a group id holding <, >, " or / percent-encoded (and so
    # not as itself), so hostile group ids cannot be tried against it.
    gid = f"{unique_name}.reader-1_a"
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, gid)
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, None, -1)})
        collect_at(kafka_broker, time.time())
    finally:
        consumer.close()

    carol = client_for("carol")
    topic_page = page(carol, Destination.objects.get(key=f"topic/{topic}"))
    assert 'id="kafka-topic"' in topic_page
    assert topic_page.count('<tr data-partition="') == 2
    assert "retention.ms" in topic_page and "86400000" in topic_page
    if kafka_broker.health["facts"]["log_sizes"] == "not reported by this broker":
        assert "not reported by this broker" in topic_page
    assert f'<a href="/brokers/kafka/d/group%2F{gid}">{gid}</a>' in topic_page  # a reader

    group_page = page(carol, group(kafka_broker, gid))
    assert 'id="kafka-group"' in group_page
    assert 'class="flag ok group-status" data-status="OK"' in group_page
    assert f'data-partition="{topic}/0"' in group_page
    assert "too little history" in group_page
    assert "Members" in group_page and "Consumed /s (commits)" in group_page
    [member] = group(kafka_broker, gid).details["extra"]["members"]
    if not member["client_id"]:  # Tansu 0.6 describes members without it
        assert "members-unreported" in group_page


def test_the_broker_page_names_the_controller(
    kafka_broker: Broker, client_for: Callable[..., Any]
) -> None:
    collect_at(kafka_broker, time.time())
    body = client_for("carol").get("/brokers/kafka/").content.decode()
    assert "(controller)" in body and "Controller" in body


def test_an_unreachable_kafka_is_down_while_the_other_keeps_updating(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], client_for: Callable[..., Any], settings: Any,
    unique_name: str,
) -> None:  # fmt: skip
    settings.SLUICE_BROKER_TIMEOUT = 1
    port = closed_port()
    dead = Broker.objects.create(
        name="dead-kafka", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{port}"}
    )
    topic = make_topic(f"{unique_name}-alive")
    produce(topic, 2)

    assert collector.collect(dead) is False
    collect_at(kafka_broker, time.time())
    produce(topic, 3)
    assert collector.collect(dead) is False
    collect_at(kafka_broker, time.time())

    dead.refresh_from_db()
    assert dead.status == "down" and dead.down_since is not None
    assert dead.error == f"cannot reach 127.0.0.1:{port}: connection refused"
    kafka_broker.refresh_from_db()
    assert kafka_broker.status == "up"
    assert Destination.objects.get(key=f"topic/{topic}").details["extra"]["messages"] == 5
    carol = client_for("carol")
    assert "Unreachable since" in carol.get("/").content.decode()
    assert carol.get("/brokers/dead-kafka/").status_code == 200


def test_topic_configs_are_read_again_only_on_the_slow_topology_cycle(
    kafka_broker: Broker, make_topic: Callable[..., str], settings: Any, unique_name: str
) -> None:
    topic = make_topic(f"{unique_name}-cfg", configs={"retention.ms": "7200000"})
    t0 = time.time()
    collect_at(kafka_broker, t0)  # the first collection reads the topology
    collect_at(kafka_broker, t0 + 5)
    fast = kafka_broker.health["requests"]
    collect_at(kafka_broker, t0 + 5 + settings.SLUICE_TOPOLOGY_INTERVAL)
    slow = kafka_broker.health["requests"]

    kafka_broker.refresh_from_db()
    assert kafka_broker.topology_at is not None
    assert kafka_broker.topology_at.timestamp() == pytest.approx(
        t0 + 5 + settings.SLUICE_TOPOLOGY_INTERVAL
    )
    log_dirs = (
        0 if kafka_broker.health["facts"]["log_sizes"] == "not reported by this broker" else 1
    )
    assert slow == fast + 1 + log_dirs * kafka_broker.health["facts"]["brokers"]
    configs = Destination.objects.get(key=f"topic/{topic}").details["extra"]["configs"]
    assert configs["retention.ms"]["value"] == "7200000"
