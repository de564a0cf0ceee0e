"""The services devservices starts answer the way Sluice's adapters need."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pika
import psycopg
import redis as redis_client
from kafka import KafkaAdminClient

from dashboard import devservices


def get_json(url: str, auth: tuple[str, str] | None = None) -> Any:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_nats_monitoring_reports_jetstream_enabled(nats):
    varz = get_json(f"{nats['monitoring_url']}/varz")
    assert varz["jetstream"]["config"]["store_dir"]
    assert nats["url"].startswith("nats://127.0.0.1:")


def test_kafka_creates_and_lists_a_topic(kafka, unique_name):
    admin = KafkaAdminClient(bootstrap_servers=kafka["bootstrap_servers"])
    try:
        topic = f"devservices-{unique_name}"
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_rabbitmq_management_answers_with_shovel_plugin(rabbitmq):
    auth = (rabbitmq["username"], rabbitmq["password"])
    overview = get_json(f"{rabbitmq['management_url']}/api/overview", auth)
    assert overview["rabbitmq_version"]
    # /api/shovels only exists with rabbitmq_shovel_management enabled.
    assert isinstance(get_json(f"{rabbitmq['management_url']}/api/shovels", auth), list)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    assert connection.is_open
    connection.close()


def test_redis_answers_ping(redis_url):
    client = redis_client.Redis.from_url(redis_url, socket_timeout=5)
    assert client.ping()
    client.close()


def test_postgres_is_a_private_cluster_not_the_machines_own(monkeypatch):
    monkeypatch.delenv("SLUICE_TEST_POSTGRES_URL", raising=False)
    url = devservices.postgres()
    assert devservices.postgres() == url  # the running one is reused
    with psycopg.connect(url, connect_timeout=5) as conn:
        data = conn.execute("SHOW data_directory").fetchone()
        port = conn.execute("SHOW port").fetchone()
    assert data == (str(devservices.STATE_DIR / "postgres"),)
    assert port != ("5432",)


def test_services_named_in_the_environment_are_reused_not_started(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:1/0")
    monkeypatch.setenv("SLUICE_TEST_NATS_URL", "nats://example.invalid:1")
    monkeypatch.setenv("SLUICE_TEST_NATS_MONITORING_URL", "http://example.invalid:2")
    monkeypatch.setenv("SLUICE_TEST_KAFKA_BOOTSTRAP", "example.invalid:3")
    monkeypatch.setenv("SLUICE_TEST_RABBITMQ_MANAGEMENT_URL", "http://example.invalid:4/")
    monkeypatch.setenv("SLUICE_TEST_RABBITMQ_AMQP_URL", "amqp://ann:s%3Acret@example.invalid:5/%2F")
    monkeypatch.setenv("SLUICE_TEST_POSTGRES_URL", "postgres://ann@example.invalid:6/postgres")
    assert devservices.redis() == "redis://example.invalid:1/0"
    assert devservices.nats()["monitoring_url"] == "http://example.invalid:2"
    assert devservices.kafka() == {"bootstrap_servers": "example.invalid:3"}
    rabbit = devservices.rabbitmq(install=True)
    assert rabbit["management_url"] == "http://example.invalid:4"
    assert (rabbit["username"], rabbit["password"]) == ("ann", "s:cret")
    assert devservices.postgres() == "postgres://ann@example.invalid:6/postgres"
