"""Secrets are never rendered in pages, JSON, logs or errors."""

from __future__ import annotations

import logging

import pytest

from brokers.base import redact_url
from dashboard import collector
from dashboard.models import Broker, Destination

pytestmark = pytest.mark.django_db

SECRET = "hunter2-Sup3rSecret"


def test_redact_url_hides_passwords():
    assert redact_url(f"amqp://ops:{SECRET}@host:5672/%2F") == "amqp://ops:•••@host:5672/%2F"
    assert redact_url("http://host:15672") == "http://host:15672"
    assert SECRET not in redact_url(f"http://:{SECRET}@h/")


def test_no_secret_in_any_response(rabbitmq, client_for, monkeypatch, caplog, amqp, unique_name):
    monkeypatch.setenv("SLUICE_TEST_SECRET", SECRET)
    # A queue of its own, so that destination pages are covered whatever else the broker holds.
    amqp.queue_declare(f"secrets-{unique_name}")
    host = rabbitmq["management_url"].split("://", 1)[1]
    # Wrong credentials, so that the broker's refusal travels through every error path too.
    wrong = Broker.objects.create(
        name="wrong",
        kind="rabbitmq",
        options={
            "management_url": f"http://guest:{SECRET}@{host}",
            "amqp_url": f"amqp://ops:{SECRET}@127.0.0.1:5672/%2F",
        },
    )
    via_env = Broker.objects.create(
        name="env",
        kind="rabbitmq",
        options={
            "management_url": rabbitmq["management_url"],
            "password": "${SLUICE_TEST_SECRET}",
            "username": "guest",
        },
    )
    good = Broker.objects.create(
        name="good",
        kind="rabbitmq",
        options={"management_url": rabbitmq["management_url"], "amqp_url": rabbitmq["amqp_url"]},
    )
    caplog.set_level(logging.DEBUG)
    for broker in (wrong, via_env, good):
        collector.collect(broker)
    wrong.refresh_from_db()
    assert wrong.status == "down"
    assert Destination.objects.filter(broker=good).exists()

    alice = client_for("alice")
    urls = [
        "/",
        "/brokers/wrong/",
        "/brokers/env/",
        "/brokers/good/",
        "/api/v1/brokers",
        "/api/v1/brokers/wrong/destinations",
        "/audit/",
        "/audit/export.csv",
        f"/admin/dashboard/broker/{wrong.pk}/change/",
    ]
    for dest in Destination.objects.filter(broker=good)[:3]:
        from urllib.parse import quote

        urls.append(f"/brokers/good/d/{quote(dest.key, safe='')}")
        urls.append(f"/api/v1/brokers/good/destinations/{quote(dest.key, safe='')}")
    for url in urls:
        response = alice.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, url
        assert SECRET.encode() not in body, url
    assert SECRET not in caplog.text
    assert SECRET not in wrong.error
