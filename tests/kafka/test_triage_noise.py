"""Healthy Kafka traffic opens no incident: the false positives triage must not raise.

On the real Kafka-protocol broker, collections stamped 5 s apart (the default
interval) and evaluated at the same stamp: a group that commits only every 30 s
(its lag a sawtooth), groups keeping up with steady producers at several rates, and
a bursty producer whose group catches up between bursts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dashboard.models import Broker, Destination
from tests.app_fixtures import collect_and_triage as step
from tests.kafka.test_triage import commit, mine

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]

INTERVAL = 5


def test_a_group_committing_every_30_s_is_not_an_incident(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-clicks")
    gid = f"{unique_name}-batch"
    produce(topic, 1)
    commit(kafka_admin, gid, {(topic, 0): 1})
    t0 = time.time()
    written = 1
    lags = []
    for n in range(30):  # 150 s of a 10 msg/s producer
        produce(topic, 50)
        written += 50
        if n % 6 == 5:  # every 30 s it commits all it has read
            commit(kafka_admin, gid, {(topic, 0): written})
        step(kafka_broker, t0 + n * INTERVAL)
        lags.append(Destination.objects.get(broker=kafka_broker, key=f"group/{gid}").lag)
    assert max(lags) >= 250 and min(lags) == 0  # the sawtooth really happened
    assert mine(kafka_broker, unique_name) == []


def test_groups_keeping_up_with_steady_producers_at_several_rates_are_quiet(
    kafka: dict[str, str], kafka_broker: Broker, kafka_admin: Any,
    make_topic: Callable[..., str], produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    rates = {"slow": 1, "medium": 20, "fast": 200}  # records per interval
    topics = {name: make_topic(f"{unique_name}-{name}") for name in rates}
    written = dict.fromkeys(rates, 0)
    t0 = time.time()
    for n in range(14):
        for name, count in rates.items():
            produce(topics[name], count)
            written[name] += count
            # Consumers a little behind: they commit what was there one interval ago.
            commit(
                kafka_admin,
                f"{unique_name}-{name}-readers",
                {(topics[name], 0): written[name] - count},
            )
        step(kafka_broker, t0 + n * INTERVAL)
    for name in rates:
        group = Destination.objects.get(
            broker=kafka_broker, key=f"group/{unique_name}-{name}-readers"
        )
        assert group.lag == rates[name]
    assert mine(kafka_broker, unique_name) == []


def test_a_bursty_producer_with_a_group_catching_up_between_bursts_is_quiet(
    kafka_broker: Broker, kafka_admin: Any, make_topic: Callable[..., str],
    produce: Callable[..., Any], unique_name: str,
) -> None:  # fmt: skip
    topic = make_topic(f"{unique_name}-events")
    gid = f"{unique_name}-events-readers"
    produce(topic, 1)
    commit(kafka_admin, gid, {(topic, 0): 1})
    written = read = 1
    t0 = time.time()
    for n in range(20):
        if n % 4 == 0:  # a burst of 400 every 20 s
            produce(topic, 400)
            written += 400
        read = min(written, read + 150)  # the group reads 30 records/s
        commit(kafka_admin, gid, {(topic, 0): read})
        step(kafka_broker, t0 + n * INTERVAL)
    assert mine(kafka_broker, unique_name) == []
