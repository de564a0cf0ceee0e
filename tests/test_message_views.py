"""The message pages and API on the real RabbitMQ: download, publish, dead-letter discovery."""

from __future__ import annotations

import json
from urllib.parse import quote

import pika
import pytest

from dashboard.jobs import deadletters
from dashboard.kinds.rabbitmq import deadletters as rabbit_deadletters
from dashboard.models import AuditEntry, Broker, Destination

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(rabbit_broker) -> Broker:
    return rabbit_broker


@pytest.fixture
def channel(rabbitmq):
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    yield connection.channel()
    connection.close()


def csrf(client) -> str:
    client.get("/")
    return client.cookies["csrftoken"].value


def test_a_long_body_downloads_whole(broker, channel, unique_name, client_for):
    queue = f"big-{unique_name}"
    channel.queue_declare(queue)
    body = b"<b>" + bytes(range(256)) * 800  # 200 KB, binary, past the display limit
    channel.basic_publish("", queue, body, pika.BasicProperties(message_id="big-1"))
    Destination.objects.create(
        broker=broker, kind="queue", key=f"//{queue}", name=queue, vhost="/", type="classic"
    )
    try:
        bob = client_for("bob")
        page = bob.post(
            f"/brokers/rabbit/messages/{quote('//' + queue, safe='')}",
            {"count": "1"},
            HTTP_X_CSRFTOKEN=csrf(bob),
        )
        assert page.status_code == 200
        assert b"Download the whole body" in page.content
        assert b"&lt;b&gt;" in page.content  # the start of the body, shown as text, escaped
        got = bob.post(
            f"/brokers/rabbit/body/{quote('//' + queue, safe='')}?id=big-1",
            HTTP_X_CSRFTOKEN=csrf(bob),
        )
        assert got.status_code == 200
        assert got["Content-Disposition"].startswith("attachment")
        assert got.content == body
        # Looking left the message where it was.
        assert channel.queue_declare(queue, passive=True).method.message_count == 1
        assert AuditEntry.objects.filter(action="queue.browse", user="bob").exists()
    finally:
        channel.queue_delete(queue)


def test_publish_through_the_api_says_whether_it_was_routed(
    broker, channel, unique_name, token_for, client
):
    queue = f"pub-{unique_name}"
    channel.queue_declare(queue)
    token = token_for("bob")
    try:

        def publish(routing_key: str, **extra) -> dict:
            body = {
                "vhost": "/",
                "exchange": "",
                "routing_key": routing_key,
                "body": '{"a": 1}',
                "body_kind": "json",
                **extra,
            }
            response = client.post(
                "/api/v1/brokers/rabbit/publish",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
            return {"status": response.status_code, **response.json()}

        assert publish(queue, headers={"tenant": "acme"}) == {
            "status": 200,
            "confirmed": True,
            "routed": True,
        }
        assert publish(f"nowhere-{unique_name}") == {
            "status": 200,
            "confirmed": True,
            "routed": False,
        }
        bad = publish(queue, body="{not json")
        assert bad["status"] == 400 and "not valid JSON" in bad["error"]
        method, props, body = channel.basic_get(queue, auto_ack=True)
        assert body == b'{"a": 1}' and props.headers == {"tenant": "acme"}
        assert (
            channel.queue_declare(queue, passive=True).method.message_count == 0
        )  # the bad one never went
        assert AuditEntry.objects.filter(action="message.publish", user="bob").count() == 2
    finally:
        channel.queue_delete(queue)


def test_dead_letter_queues_are_found_by_their_binding_alone(db):
    broker = Broker.objects.create(
        name="r",
        kind="rabbitmq",
        options={"management_url": "http://x"},
        topology={
            "bindings": [
                {
                    "vhost": "/",
                    "source": "failures",
                    "destination": "parking",
                    "destination_type": "queue",
                    "routing_key": "",
                },
                {
                    "vhost": "/",
                    "source": "events",
                    "destination": "orders",
                    "destination_type": "queue",
                    "routing_key": "o",
                },
            ]
        },
    )
    limits = {"dead-letter-exchange": {"value": "failures", "source": "policy"}}
    Destination.objects.create(
        broker=broker,
        kind="queue",
        key="//orders",
        name="orders",
        vhost="/",
        details={"extra": {"limits": limits}},
    )
    Destination.objects.create(
        broker=broker, kind="queue", key="//parking", name="parking", vhost="/"
    )
    Destination.objects.create(
        broker=broker, kind="queue", key="//audit.dlq", name="audit.dlq", vhost="/"
    )
    found = {f["queue"].name: f["why"] for f in rabbit_deadletters.find(broker)}
    assert set(found) == {"parking", "audit.dlq"}
    assert "dead-letter exchange of orders" in found["parking"][0]
    assert "matches" in found["audit.dlq"][0]


def test_dead_letters_group_by_any_header():
    from brokers.base import Message

    def dead(reason: str, **headers) -> dict:
        death = [
            {
                "queue": "q",
                "reason": reason,
                "count": 1,
                "exchange": "",
                "routing-keys": ["q"],
                "time": 1,
            }
        ]
        message = Message(
            body=b"{}",
            id="m",
            headers={"x-death": death, "x-first-death-reason": reason, **headers},
        )
        return deadletters.summary(message, rabbit_deadletters.death_info)

    msgs = [
        dead("rejected", **{"x-exception": "ValueError"}),
        dead("rejected", **{"x-exception": "ValueError"}),
        dead("expired"),
    ]
    assert "x-death" not in msgs[0]["headers"]
    assert deadletters.groups(msgs, "reason") == [("rejected", 2), ("expired", 1)]
    assert deadletters.groups(msgs, "header", "x-exception") == [("ValueError", 2), ("(none)", 1)]


@pytest.mark.parametrize("ticked,mode", [(True, 2), (False, 1)])
def test_the_publish_form_honours_the_persistent_box(
    broker, channel, unique_name, client_for, ticked, mode
):
    queue = f"form-{unique_name}"
    channel.queue_declare(queue)
    try:
        bob = client_for("bob")
        form = {
            "vhost": "/",
            "exchange": "",
            "routing_key": queue,
            "body": "hi",
            "body_kind": "text",
        }
        if ticked:
            form["persistent"] = "on"
        page = bob.post("/brokers/rabbit/publish/", form, HTTP_X_CSRFTOKEN=csrf(bob))
        assert b"Published" in page.content
        _, props, body = channel.basic_get(queue, auto_ack=True)
        assert (body, props.delivery_mode) == (b"hi", mode)
    finally:
        channel.queue_delete(queue)
