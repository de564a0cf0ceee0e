"""kill -9 the worker in the middle of a Kafka replay; resume; no record is lost."""

from __future__ import annotations

from collections import Counter

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.app_fixtures import wait_for
from tests.kafka_fixtures import read_all

COUNT = 60_000
PARTITIONS = 4


@pytest.fixture
def dead_letter_topic(stack, unique_name):
    servers = stack.brokers["kafka"]["bootstrap_servers"]
    origin, dead = f"kill-{unique_name}", f"kill-{unique_name}.DLT"
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic(origin, PARTITIONS, 1), NewTopic(dead, PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    for n in range(COUNT):
        producer.send(
            dead,
            b"x" * 200,
            key=f"k{n:06d}".encode(),
            partition=n % PARTITIONS,
            headers=[("x-original-topic", origin.encode())],
        )
    producer.flush()
    producer.close()
    yield {"servers": servers, "origin": origin, "dead": dead}
    admin.delete_topics([origin, dead])
    admin.close()


def test_kill_the_worker_mid_kafka_replay_then_resume_loses_nothing(stack, dead_letter_topic):
    t = dead_letter_topic
    api = stack.api_client("bob", "operator")

    key = f"topic/{t['dead']}"
    api.collected("kafka", key)
    job = api(
        "POST",
        "/jobs",
        {"broker": "kafka", "action": "replay", "source": key, "batch_size": 1000},
    )
    assert job["total"] == 0 or job["total"] == COUNT
    wait_for(lambda: api("GET", f"/jobs/{job['id']}")["done"] >= COUNT // 4, timeout=120, every=0.2)

    at_kill, final = stack.kill_and_resume(api, job["id"])
    assert at_kill["done"] < COUNT, "the replay finished before the kill"
    assert final["total"] == COUNT

    copies = read_all(t["servers"], t["origin"], timeout=120)
    delivered = Counter(r.key.decode() for r in copies)
    lost = {f"k{n:06d}" for n in range(COUNT)} - set(delivered)
    duplicates = sum(n - 1 for n in delivered.values() if n > 1)
    print(
        f"\nkilled at {at_kill['done']:,} of {COUNT:,}; after resume: {len(delivered):,} keys "
        f"delivered, {duplicates} twice (job reported {final['duplicates']}), {len(lost)} lost"
    )
    assert lost == set()
    assert final["replayed"] >= COUNT
    assert duplicates <= final["duplicates"], "every duplicate is counted by the job"
    # The dead-letter topic is untouched: a replay reads a log, it does not drain it.
    assert len(read_all(t["servers"], t["dead"], timeout=120)) == COUNT
