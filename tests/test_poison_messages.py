"""Poison messages on the real brokers: a field no page can read shows as "unreadable: ...",
and the rest of the page, the dead-letters scan and job previews work as usual.

Each poison is published for real (pika, kafka-python, a raw NATS socket) with the
headers or times a careless or hostile producer can write.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from urllib.parse import quote

import pika
import pytest
from kafka import KafkaProducer

from dashboard.kinds.kafka import search as kafka_search
from dashboard.models import DeadLetterScan, Destination
from tests.nats.test_messages import raw_publish

pytestmark = pytest.mark.django_db

NOW = int(time.time())


def death(**odd) -> dict:
    """An x-death entry as RabbitMQ writes it, with some fields replaced."""
    return {
        "count": 1,
        "reason": "rejected",
        "queue": "orders",
        "time": NOW,
        "exchange": "shop",
        "routing-keys": ["order.created"],
        **odd,
    }


# Each poison body names the field it spoils.
POISONS = {
    "count-as-text": death(count="3"),
    "count-as-list": death(count=[1, 2]),
    "keys-as-table": death(**{"routing-keys": {"a": 1}}),
    "time-far-future": death(time=10**17),
}


def text_of(response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode()))


def csrf(client) -> str:
    client.get("/")
    return client.cookies["csrftoken"].value


@pytest.fixture
def dlq(rabbit_broker, declare, unique_name) -> str:
    """A dead-letter queue holding a healthy dead letter and one of each poison, in order."""
    top = declare()
    name = top.queue(f"{unique_name}.dlq")
    first = {"x-first-death-queue": "orders", "x-first-death-reason": "rejected"}
    top.publish("", name, b"healthy", pika.BasicProperties(headers={"x-death": [death()], **first}))
    for body, entry in POISONS.items():
        headers = {"x-death": [entry], **first}
        top.publish("", name, body.encode(), pika.BasicProperties(headers=headers))
    Destination.objects.create(
        broker=rabbit_broker, kind="queue", key=f"//{name}", name=name, vhost="/", type="classic"
    )
    return name


def test_odd_x_death_fields_read_as_unreadable_on_the_messages_page(dlq, client_for):
    bob = client_for("bob")
    page = bob.post(
        f"/brokers/rabbit/messages/{quote('//' + dlq, safe='')}",
        {"count": "10"},
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert page.status_code == 200
    text = text_of(page)
    assert all(body in text for body in ("healthy", *POISONS))  # every message is shown
    assert "unreadable: not a whole number ('3')" in text
    assert "unreadable: not a whole number ([1, 2])" in text
    assert "unreadable: not a list of text ({'a': 1})" in text
    assert "unreadable: a time out of range (100000000000000000)" in text
    assert "order.created" in text  # the readable routing keys still show


def test_the_dead_letters_scan_and_page_survive_odd_x_death(dlq, client_for):
    bob = client_for("bob")
    scanned = bob.post(
        "/brokers/rabbit/dead-letters/scan", {"queue": f"//{dlq}"}, HTTP_X_CSRFTOKEN=csrf(bob)
    )
    assert scanned.status_code == 302
    [scan] = DeadLetterScan.objects.filter(queue=f"//{dlq}")
    assert len(scan.messages) == 5
    # The page after the scan, for anyone: it read the history once and stored plain values.
    pages = {
        who: client_for(who).get("/brokers/rabbit/dead-letters/", {"queue": f"//{dlq}"})
        for who in ("carol", "bob")
    }
    assert [p.status_code for p in pages.values()] == [200, 200]
    text = text_of(pages["bob"])  # an operator's page lists the messages, to act on them
    assert "unreadable: a time out of range (100000000000000000)" in text
    assert "unreadable: not a list of text" in text  # the routing key of keys-as-table
    assert "rejected (5)" in text  # grouped by reason, the poisons with the rest


def test_a_stored_scan_with_times_out_of_range_still_renders(rabbit_broker, client_for, dlq):
    """Scans stored before the fix kept whatever time the headers held; they must show."""
    rows = [
        {"id": "a", "reason": "rejected", "time": 10**17, "headers": {}, "preview": "far"},
        {"id": "b", "reason": "rejected", "time": "soon", "headers": {}, "preview": "text"},
        {"id": "c", "reason": "rejected", "time": NOW, "headers": {}, "preview": "fine"},
    ]
    DeadLetterScan.objects.create(broker=rabbit_broker, queue=f"//{dlq}", by="bob", messages=rows)
    page = client_for("bob").get("/brokers/rabbit/dead-letters/", {"queue": f"//{dlq}"})
    assert page.status_code == 200
    text = text_of(page)
    assert "unreadable: a time out of range (100000000000000000)" in text
    assert "unreadable: not a Unix time ('soon')" in text
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(NOW)) in text  # oldest and newest


def test_a_filtered_job_preview_reads_past_odd_x_death(dlq, token_for, client):
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps(
            {
                "broker": "rabbit",
                "action": "replay",
                "source": f"//{dlq}",
                "selection": {"filter": {"reason": "rejected", "queue": "orders"}},
                "dry_run": True,
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_for('bob')}",
    )
    assert response.status_code == 201, response.content
    preview = response.json()["preview"]
    assert preview["selected"] == 5
    # Replay goes where the history says, unless the part that says it is unreadable.
    assert preview["targets"] == [["shop → order.created", 4]]
    assert preview["origin_unknown"] == 1


def test_a_message_that_died_twice_in_its_first_queue_is_read_from_its_first_death(
    rabbit_broker, declare, unique_name, token_for, client, client_for
):
    top = declare()
    dlq = top.queue(f"{unique_name}.dlq")
    work = top.queue(
        f"{unique_name}.work", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    )
    shop = top.exchange(f"{unique_name}.shop", "direct")
    top.channel.queue_bind(work, shop, "order.created")
    top.publish(shop, "order.created", b"twice")
    method = None
    deadline = time.monotonic() + 10
    while method is None and time.monotonic() < deadline:
        method, _props, _body = top.channel.basic_get(work)
    assert method is not None
    top.channel.basic_reject(method.delivery_tag, requeue=False)  # first death: rejected
    while top.count(dlq) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    _m, props, body = top.channel.basic_get(dlq, auto_ack=True)
    # Sent back to its queue with its history, it dies there again, for another reason.
    top.publish("", work, body, pika.BasicProperties(headers=props.headers, expiration="0"))
    while top.count(dlq) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    Destination.objects.create(
        broker=rabbit_broker, kind="queue", key=f"//{dlq}", name=dlq, vhost="/", type="classic"
    )
    bob = client_for("bob")
    bob.post("/brokers/rabbit/dead-letters/scan", {"queue": f"//{dlq}"}, HTTP_X_CSRFTOKEN=csrf(bob))
    [summary] = DeadLetterScan.objects.get(queue=f"//{dlq}").messages
    assert (summary["reason"], summary["queue"]) == ("rejected", work)
    assert (summary["exchange"], summary["routing_key"]) == (shop, "order.created")
    assert summary["count"] == 2
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps(
            {
                "broker": "rabbit",
                "action": "replay",
                "source": f"//{dlq}",
                "selection": {"filter": {"routing_key": "order.created"}},
                "dry_run": True,
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_for('bob')}",
    )
    preview = response.json()["preview"]
    assert preview["selected"] == 1 and preview["targets"] == [[f"{shop} → order.created", 1]]


def test_an_amqp_timestamp_out_of_range_reads_as_unreadable(
    rabbit_broker, declare, unique_name, client_for
):
    top = declare()
    queue = top.queue(f"{unique_name}.ts")
    top.publish("", queue, b"far future", pika.BasicProperties(timestamp=2**63 - 1))
    top.publish("", queue, b"on time", pika.BasicProperties(timestamp=NOW))
    Destination.objects.create(
        broker=rabbit_broker, kind="queue", key=f"//{queue}", name=queue, vhost="/", type="classic"
    )
    bob = client_for("bob")
    page = bob.post(
        f"/brokers/rabbit/messages/{quote('//' + queue, safe='')}",
        {"count": "10"},
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert page.status_code == 200
    text = text_of(page)
    assert "unreadable: a time out of range (9223372036854775807)" in text
    assert "far future" in text and "on time" in text
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW)) in text


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_header_nested_thousands_deep_breaks_no_page_and_replays_intact(
    rabbit_broker, rabbitmq, declare, unique_name, client_for
):
    from django.template.loader import render_to_string

    from brokers.base import Outgoing
    from brokers.rabbitmq.amqp import AmqpTransfer
    from dashboard.kinds.rabbitmq import deadletters as rabbit_deadletters
    from dashboard.views import messageview

    top = declare()
    dlq, copies = top.queue(f"{unique_name}.deep.dlq"), top.queue(f"{unique_name}.copies")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # pika encodes tables recursively; RabbitMQ takes any depth
    try:
        props = pika.BasicProperties(headers={"deep": nested(3000), "plain": "kept"})
        top.publish("", dlq, b"deep body", props)
    finally:
        sys.setrecursionlimit(limit)
    Destination.objects.create(
        broker=rabbit_broker, kind="queue", key=f"//{dlq}", name=dlq, vhost="/", type="classic"
    )
    # The management API's JSON is too deep for Python to read: the page says so.
    bob = client_for("bob")
    page = bob.post(
        f"/brokers/rabbit/messages/{quote('//' + dlq, safe='')}",
        {"count": "5"},
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert page.status_code == 200
    assert "nested too deeply to read" in text_of(page)
    # Read over AMQP, as a replay reads it, the header is cut at 32 levels and shows so.
    where = rabbitmq["amqp_url"].split("://", 1)[1].rpartition("@")[2]
    auth = f"{rabbitmq['username']}:{rabbitmq['password']}"
    transfer = AmqpTransfer(f"amqp://{auth}@{where}", "/", dlq)
    try:
        [message] = transfer.fetch(1, timeout=5)
        shown = render_to_string(
            "dashboard/_message.html",
            {"s": messageview.shown(message, rabbit_deadletters.death_info)},
        )
        assert "unreadable: nested deeper than 32 levels" in html.unescape(shown)
        assert "deep body" in shown and "kept" in shown
        # A replay copies the header as it was received, every level of it.
        [sent] = transfer.send([Outgoing(message, "", copies, message.headers)])
        assert sent.confirmed and sent.routed
        transfer.settle([message])
    finally:
        transfer.close()
    sys.setrecursionlimit(20000)
    try:
        [(_m, got, body)] = top.drain(copies)
        assert got.headers["deep"] == nested(3000) and body == b"deep body"
    finally:
        sys.setrecursionlimit(limit)


# -- Kafka ------------------------------------------------------------------------------------


def test_a_kafka_record_timestamp_out_of_range_reads_as_unreadable(
    kafka, kafka_broker, make_topic, unique_name, client_for, personas
):
    topic = make_topic(f"ts-{unique_name}.DLT")
    producer = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], acks="all")
    producer.send(topic, b"far future", timestamp_ms=2**62).get(timeout=10)
    producer.send(topic, b"on time", timestamp_ms=NOW * 1000).get(timeout=10)
    producer.close()
    carol = client_for("carol")
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", {"from": "offset"})
    assert page.status_code == 200
    text = text_of(page)
    assert "unreadable: a time out of range (4611686018427387904)" in text
    assert "far future" in text and "on time" in text
    api = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages", {"from": "offset"})
    assert api.status_code == 200
    assert [r["timestamp"] for r in api.json()["records"]] == [2**62, NOW * 1000]
    # A whole-topic search finds it and its page shows it.
    search = kafka_search.create(personas["carol"], kafka_broker, topic, {"body": "far"}, False)
    kafka_search.run(search.pk)
    found = carol.get(f"/searches/{search.public_id}/")
    assert found.status_code == 200
    assert "unreadable: a time out of range (4611686018427387904)" in text_of(found)
    # So does a look at it as a dead-letter topic.
    Destination.objects.create(broker=kafka_broker, kind="topic", key=f"topic/{topic}", name=topic)
    carol.post(
        "/brokers/kafka/dead-letters/scan",
        {"queue": f"topic/{topic}"},
        HTTP_X_CSRFTOKEN=csrf(carol),
    )
    assert DeadLetterScan.objects.filter(queue=f"topic/{topic}").exists()
    dead = client_for("bob").get("/brokers/kafka/dead-letters/", {"queue": f"topic/{topic}"})
    assert dead.status_code == 200
    assert "unreadable: a time out of range (4611686018427387)" in text_of(dead)


class NotUtf8(str):
    """A header name kafka-python writes as bytes that are not UTF-8, as any client may."""

    def encode(self, *args, **kwargs) -> bytes:
        return b"\xff\xfename"


def test_a_kafka_header_name_that_is_not_utf8_is_the_records_fault_not_the_clusters(
    kafka, kafka_broker, make_topic, unique_name, client_for, personas
):
    topic = make_topic(f"hdr-{unique_name}")
    producer = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], acks="all")
    producer.send(topic, b"odd", headers=[(NotUtf8("x"), b"v")]).get(timeout=10)
    producer.close()
    carol = client_for("carol")
    says = "in the range read cannot be decoded"
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages")
    assert page.status_code == 400 and says in text_of(page)
    api = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages")
    assert api.status_code == 400 and says in api.json()["error"]
    search = kafka_search.create(personas["carol"], kafka_broker, topic, {"body": "odd"}, False)
    search = kafka_search.run(search.pk)
    assert search.state == "failed" and says in search.error


# -- NATS -------------------------------------------------------------------------------------


def test_nats_messages_with_odd_header_blocks_browse(nats_broker, js, unique_name, client_for):
    stream = f"S{unique_name}"
    js.add_stream(stream, [f"{unique_name}.>"], allow_direct=True)
    url = nats_broker.options["url"]
    # What a publisher can put in a block: no value, odd names, invalid UTF-8, and names
    # the server appends to a direct get's answer (Nats-Stream, Nats-Time-Stamp) itself.
    odd = [
        (b"Empty", b""),
        (b"Nats-Time-Stamp", b"not a time"),
        (b"Bin", b"\xff\xfe"),
        (b"Nats-Sequence", b"x"),
        (b"Nats-Stream", b"elsewhere"),
    ]
    raw_publish(url, f"{unique_name}.a", odd, b"odd headers")
    raw_publish(url, f"{unique_name}.b", [(b"Plain", b"1")], b"plain")
    deadline = time.monotonic() + 5
    carol = client_for("carol")
    while time.monotonic() < deadline:
        api = carol.get(f"/api/v1/brokers/nats/streams/{stream}/messages").json()
        if len(api.get("messages", [])) == 2:
            break
        time.sleep(0.05)
    first, second = api["messages"]
    assert [h["name"] for h in first["headers"]] == [n.decode() for n, _ in odd]
    assert first["subject"] == f"{unique_name}.a" and first["seq"] == 1
    assert first["time"] and first["time"][:4] == time.strftime("%Y")  # the server's clock
    assert second["seq"] == 2
    page = carol.get(f"/brokers/nats/streams/{stream}/messages")
    assert page.status_code == 200
    assert "odd headers" in text_of(page) and "plain" in text_of(page)
