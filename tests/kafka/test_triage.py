"""Kafka triage on the real Kafka-protocol broker (Tansu): cluster faults, stalled and failing
groups, records racing retention, lag in seconds, and Kafka's one meaning of backlog.

Collections are stamped STEP seconds apart (`collect_at`) and evaluated at the
same stamp, as tests/kafka/test_status.py does, so a window of history builds
up without waiting. What the broker says is always real.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from dashboard.kinds import kind_of
from dashboard.kinds.kafka import detectors as kafka_detectors
from dashboard.models import AlertRule, Broker, Destination, Incident
from dashboard.triage import evaluate as triage
from dashboard.triage.detectors import Context
from tests.app_fixtures import STEP, collect_at
from tests.app_fixtures import collect_and_triage as step
from tests.kafka_fixtures import joined_consumer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]

MINUTE, HOUR = 60, 3600


def live(broker: Broker, cause: str, key: str = "") -> Incident | None:
    return Incident.objects.filter(broker=broker, cause=cause, key=key, state="open").first()


def mine(broker: Broker, unique_name: str) -> list[tuple[str, str, str]]:
    """Every incident, of any state, on this test's destinations."""
    return list(
        Incident.objects.filter(broker=broker, key__contains=unique_name).values_list(
            "cause", "key", "state"
        )
    )


def dest(broker: Broker, key: str) -> Destination:
    return Destination.objects.get(broker=broker, key=key)


def commit(admin: Any, gid: str, offsets: dict[tuple[str, int], int]) -> None:
    admin.alter_group_offsets(
        gid, {TopicPartition(t, p): OffsetAndMetadata(o, None, -1) for (t, p), o in offsets.items()}
    )


def produce_at(producer: Any, topic: str, count: int, written: float) -> None:
    """`count` records whose timestamps (CreateTime) say they were written at Unix time `written`."""
    futures = [
        producer.send(topic, f"old{i}".encode(), timestamp_ms=int(written * 1000))
        for i in range(count)
    ]
    producer.flush()
    for f in futures:
        f.get(timeout=10)


# -- the cluster ------------------------------------------------------------------------


def test_cluster_detectors_find_nothing_on_the_healthy_broker_and_name_partition_faults(
    kafka_broker: Broker, make_topic: Callable[..., str], unique_name: str
) -> None:
    make_topic(f"{unique_name}-parts", partitions=3)
    t = time.time()
    collect_at(kafka_broker, t)
    kafka_broker.refresh_from_db()
    ctx = Context(broker=kafka_broker, now=t, kind=kind_of(kafka_broker))
    facts = dict(kafka_broker.health["facts"])
    assert facts["offline"] == 0 and facts["under_replicated"] == 0 and facts["controller"]
    assert list(kafka_detectors.partitions(ctx)) == []
    assert list(kafka_detectors.no_controller(ctx)) == []
    assert triage.evaluate(kafka_broker, now=t).open == []

    # Tansu is a single node: its partitions are never offline or under-replicated and it
    # always names itself controller, so these faults cannot be produced here. The facts
    # of the real collection above are edited to show them (the one fake in this file).
    kafka_broker.health["facts"].update(offline=2, under_replicated=1, controller=None)
    kafka_broker.save(update_fields=["health"])
    outcome = triage.evaluate(kafka_broker, now=t + STEP)

    parts, nobody = live(kafka_broker, "partitions"), live(kafka_broker, "no_controller")
    assert parts is not None and nobody is not None
    assert {parts.pk, nobody.pk} <= {i.pk for i in outcome.opened}
    assert parts.severity == "critical" and nobody.severity == "critical"
    assert parts.summary.startswith(
        "2 partition(s) offline (no leader): they can be neither written nor read; "
        "1 partition(s) under-replicated"
    )
    assert parts.evidence["offline"] == 2 and parts.actions == ["broker"]
    assert nobody.summary.startswith(f"no controller among the cluster's {facts['brokers']}")

    kafka_broker.health["facts"].update(offline=0, controller=facts["controller"])
    kafka_broker.save(update_fields=["health"])
    triage.evaluate(kafka_broker, now=t + 2 * STEP)
    held = live(kafka_broker, "partitions")
    assert held is not None and held.pk == parts.pk and held.severity == "warning"
    assert live(kafka_broker, "no_controller") is None

    # The next real collection shows the healthy cluster again: everything resolves.
    outcome = step(kafka_broker, t + 3 * STEP)
    assert live(kafka_broker, "partitions") is None
    assert {parts.pk, nobody.pk} <= {i.pk for i in Incident.objects.filter(state="resolved")}
    assert parts.pk in {i.pk for i in outcome.resolved}


# -- groups -----------------------------------------------------------------------------


def test_a_group_joined_but_not_committing_is_stalled_not_growing(
    kafka: dict[str, str], kafka_broker: Broker, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-stuck"
    key = f"group/{gid}"
    produce(topic, 6)
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, gid)
    try:
        # It commits once, then stays joined without committing while producers go on.
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, None, -1)})
        t0 = time.time()
        for i in range(4):
            produce(topic, 5)
            step(kafka_broker, t0 + i * STEP)
            consumer.poll(50)
        group = dest(kafka_broker, key)
        incident = live(kafka_broker, "stalled", key)

        assert group.consumers == 1 and group.lag == 24
        assert group.details["status"]["status"] == "STALL" and group.trouble_label == "stalled"
        assert incident is not None and incident.severity == "warning"
        assert incident.summary == "1 member(s) joined, commits have not moved for 45 s; lag 24"
        assert incident.actions == ["open", "reset"] and incident.worsening
        # Its backlog grew all along, but "stalled" explains that: never "growing".
        assert not Incident.objects.filter(key=key, cause="backlog_growing").exists()

        # It commits again: the stall is over.
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(26, None, -1)})
        step(kafka_broker, t0 + 4 * STEP)
    finally:
        consumer.close()
    incident.refresh_from_db()
    assert incident.state == "resolved"
    assert mine(kafka_broker, unique_name) == [("stalled", key, "resolved")]


def test_a_group_catching_up_opens_no_incident(
    kafka: dict[str, str], kafka_broker: Broker, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-catching-up"
    produce(topic, 40)
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, gid)
    tp = TopicPartition(topic, 0)
    lags = []
    try:
        t0 = time.time()
        # Producers go on (3 per interval) while it commits unevenly, always more than that.
        for i, offset in enumerate((0, 10, 14, 26, 34, 45)):
            consumer.commit({tp: OffsetAndMetadata(offset, None, -1)})
            step(kafka_broker, t0 + i * STEP)
            lags.append(dest(kafka_broker, f"group/{gid}").lag)
            produce(topic, 3)
    finally:
        consumer.close()
    group = dest(kafka_broker, f"group/{gid}")

    assert lags == [40, 33, 32, 23, 18, 10]
    assert group.details["status"]["status"] == "OK" and group.trouble == 0
    assert mine(kafka_broker, unique_name) == []


def test_a_group_in_error_opens_group_error_with_the_status_rule(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    gid = f"{unique_name}-broken"
    key = f"group/{gid}"
    produce(topic, 5)
    # An offset past the end, as a group left with offsets restored from elsewhere has.
    # (Tansu implements no DeleteRecords, so "below the log start" cannot be made here.)
    commit(kafka_admin, gid, {(topic, 0): 100})
    t0 = time.time()
    first = step(kafka_broker, t0)
    assert first.opened == [] and live(kafka_broker, "group_error", key) is None
    second = step(kafka_broker, t0 + STEP)  # read from one collection: opens on the second

    incident = live(kafka_broker, "group_error", key)
    assert incident is not None and incident in second.opened
    assert incident.severity == "critical"
    assert incident.summary == f"Committed offset 100 on {topic}/0 is past the log end 5."
    assert incident.evidence["out_of_range"] == [[topic, 0, 100, 0, 5]]
    assert incident.actions == ["open", "reset"]


def test_records_about_to_fall_off_retention_open_an_incident_by_time_left(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    producer: Any, unique_name: str,
) -> None:  # fmt: skip
    now = time.time()
    cases = {  # name: (retention.ms, written seconds ago)
        "soon": (HOUR, 50 * MINUTE),
        "half": (4 * HOUR, 150 * MINUTE),
        "fresh": (HOUR, 0),
        "forever": (-1, 30 * 24 * HOUR),
    }
    for name, (keep, ago) in cases.items():
        topic = make_topic(
            f"{unique_name}-{name}", configs={"retention.ms": str(keep * 1000 if keep > 0 else -1)}
        )
        produce_at(producer, topic, 3, now - ago)
        commit(kafka_admin, f"{unique_name}-{name}-readers", {(topic, 0): 0})
    step(kafka_broker, now)

    soon = live(kafka_broker, "retention", f"group/{unique_name}-soon-readers")
    assert soon is not None and soon.severity == "critical"
    assert soon.summary.startswith(
        "falls off retention in 10 min: records will be lost unread "
        f"(oldest unread record on {unique_name}-soon written 50 min ago; retention.ms 1 h"
    )
    assert soon.impact_seconds == pytest.approx(10 * MINUTE, abs=30)
    assert soon.evidence["topic"] == f"{unique_name}-soon" and soon.evidence["retention_s"] == HOUR
    assert soon.actions == ["open", "reset"]

    half = live(kafka_broker, "retention", f"group/{unique_name}-half-readers")
    assert half is not None and half.severity == "warning"
    assert half.summary.startswith("falls off retention in 1 h 30 min: records will be lost unread")
    # Harm due sooner ranks higher.
    assert soon.urgency > half.urgency
    retained = {key for cause, key, _ in mine(kafka_broker, unique_name) if cause == "retention"}
    assert retained == {soon.key, half.key}  # fresh records, and a topic kept forever: none


def test_lag_seconds_fires_over_the_setting_and_a_rule_changes_it_per_group_pattern(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    producer: Any, settings: Any, unique_name: str,
) -> None:  # fmt: skip
    settings.SLUICE_LAG_SECONDS = 15 * MINUTE
    AlertRule.objects.create(
        name="orders-may-lag", detector="lag_seconds", destination=f"{unique_name}-orders-*",
        threshold=HOUR,
    )  # fmt: skip
    now = time.time()
    old, recent = make_topic(f"{unique_name}-old"), make_topic(f"{unique_name}-recent")
    produce_at(producer, old, 3, now - 20 * MINUTE)
    produce_at(producer, recent, 3, now - 10 * MINUTE)
    for gid, topic in (("orders-eu", old), ("billing", old), ("audit", recent)):
        commit(kafka_admin, f"{unique_name}-{gid}", {(topic, 0): 0})
    step(kafka_broker, now)

    billing = dest(kafka_broker, f"group/{unique_name}-billing")
    assert kind_of(kafka_broker).lag_seconds(billing) == pytest.approx(20 * MINUTE, abs=30)
    topic = dest(kafka_broker, f"topic/{old}")
    assert kind_of(kafka_broker).lag_seconds(topic) is None  # a topic's readers are its groups
    incident = live(kafka_broker, "lag_seconds", billing.key)
    assert incident is not None and incident.severity == "warning"
    assert incident.evidence["threshold_s"] == 15 * MINUTE and incident.evidence["lag"] == 3
    assert incident.summary.startswith("20 min behind")
    # orders-* may be an hour behind; audit is 10 min behind, under the 15 min setting.
    assert [key for cause, key, _ in mine(kafka_broker, unique_name) if cause == "lag_seconds"] == [
        billing.key
    ]


# -- one meaning of backlog -------------------------------------------------------------


def test_a_topics_backlog_is_the_furthest_behind_groups_lag_and_its_consumers_its_groups(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], client_for: Callable[..., Any], token_for: Callable[..., str],
    unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders", partitions=2)
    produce(topic, 6, partition=0)
    produce(topic, 4, partition=1)
    slow, fast = f"{unique_name}-slow", f"{unique_name}-fast"
    commit(kafka_admin, slow, {(topic, 0): 2, (topic, 1): 1})  # 4 + 3 behind
    commit(kafka_admin, fast, {(topic, 0): 6, (topic, 1): 3})  # 0 + 1 behind
    t0 = time.time()
    step(kafka_broker, t0)

    row, group = dest(kafka_broker, f"topic/{topic}"), dest(kafka_broker, f"group/{slow}")
    assert group.backlog == group.lag == 7  # a group's: its lag, summed over partitions
    assert dest(kafka_broker, f"group/{fast}").backlog == 1
    assert row.backlog == row.lag == 7 and row.consumers == 2
    assert row.details["extra"]["furthest_behind"] == slow

    # 3 more arrive while the slowest group reads 3: its backlog holds, and so the
    # topic's out-rate (how fast the furthest-behind group reads) matches its in-rate.
    produce(topic, 3, partition=0)
    commit(kafka_admin, slow, {(topic, 0): 5, (topic, 1): 1})
    step(kafka_broker, t0 + STEP)
    row = dest(kafka_broker, f"topic/{topic}")
    assert row.backlog == 7 and row.in_rate == pytest.approx(3 / STEP)
    assert row.out_rate == pytest.approx(3 / STEP) and row.trouble == 0

    # The API and /metrics show the same.
    api = client_for("carol").get("/api/v1/brokers/kafka/destinations", {"q": topic}).json()
    shown = {d["key"]: d for d in api["destinations"]}[f"topic/{topic}"]
    assert (shown["backlog"], shown["consumers"], shown["lag"]) == (7, 2, 7)
    scrape = (
        client_for(None)
        .get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}")
        .content.decode()
    )
    values = {
        (s.name, s.labels.get("kind"), s.labels.get("name")): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    assert values[("sluice_destination_backlog_messages", "topic", topic)] == 7
    assert values[("sluice_destination_consumers", "topic", topic)] == 2


def test_a_dead_letter_topic_nobody_reads_has_its_dead_letters_as_backlog(
    kafka_broker: Broker, make_topic: Callable[..., str], produce: Callable[..., Any],
    unique_name: str,
) -> None:  # fmt: skip
    dlt, plain = make_topic(f"{unique_name}.DLT"), make_topic(f"{unique_name}-plain")
    produce(dlt, 3)
    produce(plain, 2)
    t0 = time.time()
    step(kafka_broker, t0)
    assert f"topic/{dlt}" in kind_of(kafka_broker).dead_letter_keys(kafka_broker)
    assert f"topic/{plain}" not in kind_of(kafka_broker).dead_letter_keys(kafka_broker)
    dead, other = dest(kafka_broker, f"topic/{dlt}"), dest(kafka_broker, f"topic/{plain}")
    assert dead.backlog == 3 and dead.consumers == 0
    assert other.backlog == 0 and other.consumers == 0  # nobody reads it: no backlog

    produce(dlt, 2)
    step(kafka_broker, t0 + STEP)
    incident = live(kafka_broker, "dead_letters", f"topic/{dlt}")
    assert incident is not None
    # The generic detector's: the 2 that arrived, and the topic's backlog as "waiting".
    assert incident.evidence["arrived"] == 2 and incident.evidence["backlog"] == 5
    assert incident.summary.startswith("2 dead letter(s)")
    assert incident.summary.endswith("; 5 waiting")
    assert incident.actions == ["open", "deadletters"]
    assert dest(kafka_broker, f"topic/{dlt}").backlog == 5


def test_the_broker_page_counts_listed_groups_and_those_without_committed_offsets(
    kafka: dict[str, str], kafka_broker: Broker, kafka_admin: Any,
    make_topic: Callable[..., str], produce: Callable[..., Any],
    client_for: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-orders")
    produce(topic, 2)
    commit(kafka_admin, f"{unique_name}-committed", {(topic, 0): 1})
    idle = f"{unique_name}-never-committed"
    consumer = joined_consumer(kafka["bootstrap_servers"], topic, idle)
    try:
        collect_at(kafka_broker, time.time())
    finally:
        consumer.close()
    kafka_broker.refresh_from_db()
    facts = kafka_broker.health["facts"]

    listed = Destination.objects.filter(broker=kafka_broker, kind="group", gone_since__isnull=True)
    assert facts["groups"] == listed.count() >= 1
    assert listed.filter(name=f"{unique_name}-committed").exists()
    assert not listed.filter(name=idle).exists()
    # Tansu lists only groups that stored offsets: the idle group is not even a group id
    # to it, so none is without committed offsets here (Apache Kafka lists such groups).
    assert facts["groups_without_offsets"] == 0
    carol = client_for("carol")
    page = carol.get("/brokers/kafka/").content.decode()
    counted = f"{facts['groups']} group{'s' if facts['groups'] != 1 else ''}"
    assert f'<p class="kafka-groups">{counted}</p>' in page

    # What a broker that lists them shows; Tansu cannot make such a group, so the
    # real collection's count is edited (display only).
    kafka_broker.health["facts"]["groups_without_offsets"] = 5
    kafka_broker.save(update_fields=["health"])
    page = carol.get("/brokers/kafka/").content.decode()
    assert f"{counted} (5 more without committed offsets)" in page


def test_limits_are_the_retention_bytes_of_the_topics_a_group_reads_where_sizes_are_known(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-sized", configs={"retention.bytes": "1048576"})
    produce(topic, 4)
    gid = f"{unique_name}-reader"
    commit(kafka_admin, gid, {(topic, 0): 1})
    collect_at(kafka_broker, time.time())
    kafka_broker.refresh_from_db()
    found = kind_of(kafka_broker).limits(dest(kafka_broker, f"group/{gid}"))
    row = dest(kafka_broker, f"topic/{topic}")
    assert row.details["extra"]["configs"]["retention.bytes"]["value"] == "1048576"
    if kafka_broker.health["facts"]["log_sizes"] == "not reported by this broker":
        # Tansu reports no log sizes: the bytes the lag holds are unknown, so no limit.
        assert found == []
    else:
        [limit] = found
        assert limit.limit == 1048576 and limit.unit == "bytes"
        assert limit.used == pytest.approx(3 * row.details["extra"]["size"] / 4)
