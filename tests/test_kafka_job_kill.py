"""kill -9 the worker in the middle of a Kafka replay; resume; no record is lost."""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import quote

import pytest
import requests
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
    token = stack.token("bob", "operator")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def api(method: str, path: str, body: dict | None = None) -> dict:
        r = requests.request(
            method,
            f"{stack.url}/api/v1{path}",
            headers=headers,
            data=json.dumps(body) if body else None,
            timeout=30,
        )
        assert r.status_code < 300, r.text[:300]
        return r.json()

    key = f"topic/{t['dead']}"
    wait_for(
        lambda: (
            requests.get(
                f"{stack.url}/api/v1/brokers/kafka/destinations/{quote(key, safe='')}",
                headers=headers,
                timeout=10,
            ).ok
        ),
        timeout=30,
    )
    job = api(
        "POST",
        "/jobs",
        {"broker": "kafka", "action": "replay", "source": key, "batch_size": 1000},
    )
    assert job["total"] == 0 or job["total"] == COUNT
    wait_for(lambda: api("GET", f"/jobs/{job['id']}")["done"] >= COUNT // 4, timeout=120, every=0.2)

    stack.kill_worker()
    at_kill = api("GET", f"/jobs/{job['id']}")
    assert at_kill["done"] < COUNT, "the replay finished before the kill; nothing was tested"
    wait_for(lambda: api("GET", f"/jobs/{job['id']}")["state"] == "interrupted", timeout=30)
    stack.start_worker()
    api("POST", f"/jobs/{job['id']}/resume")
    final = wait_for(
        lambda: (j := api("GET", f"/jobs/{job['id']}"))["state"] in ("done", "failed") and j,
        timeout=300,
        every=0.5,
    )
    assert final["state"] == "done", final
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
