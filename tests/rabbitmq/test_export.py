"""Exporting a RabbitMQ queue: a classic queue is walked and comes back whole and in order,
a stream is read by offset, and a quorum queue with a delivery limit is not read at all."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from dashboard.models import AuditEntry, Destination
from tests.app_fixtures import wait_for
from tests.contract.flow import collect

pytestmark = pytest.mark.django_db

BINARY = bytes(range(256))


def export(client: Any, token: str, source: str, selection: Any = None) -> Any:
    body: dict[str, Any] = {"source": source}
    if selection is not None:
        body["selection"] = selection
    return client.post(
        "/api/v1/brokers/rabbit/dead-letters/export",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def collected(broker: Any, name: str) -> str:
    """The key of queue `name` once a collection has seen it (the plugin shows a new
    queue on its next refresh)."""

    def seen() -> str | None:
        collect(broker)
        dest = Destination.objects.filter(broker=broker, name=name).first()
        return str(dest.key) if dest else None

    key: str = wait_for(seen, timeout=20)
    return key


def test_a_classic_queue_is_walked_whole_and_put_back_in_order(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client: Any, token_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name} ex/port %#é.dlq")
    bodies = [f"message {i} — ünïcode".encode() for i in range(40)] + [BINARY]
    for body in bodies:
        t.publish("", queue, body)
    key = collected(rabbit_broker, queue)

    refused = export(client, token_for("carol"), key)  # looking takes and requeues: operators
    assert refused.status_code == 403
    response = export(client, token_for("bob"), key)
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    objects = [json.loads(line) for line in data.splitlines()]
    got = [o["body"].encode() if "body" in o else None for o in objects[:-1]]
    assert got == bodies[:-1]
    assert "body" not in objects[-1]
    assert base64.b64decode(objects[-1]["body_base64"]) == BINARY
    assert all(o["position"] is None and o["routing_key"] == queue for o in objects)

    # Every message is back, in the order it was, marked redelivered.
    drained = t.drain(queue)
    assert [body for _, _, body in drained] == bodies
    assert all(method.redelivered for method, _, _ in drained)
    entry = AuditEntry.objects.get(action="messages.export")
    assert entry.count == len(bodies) and entry.result == "ok"
    assert "redelivered" in entry.detail["effect"]


def test_a_walk_cut_off_half_way_puts_every_message_back(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client: Any, token_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name}.dlq")
    t.fill(queue, 2500)
    response = export(client, token_for("bob"), collected(rabbit_broker, queue))
    chunks = iter(response.streaming_content)
    first = next(chunks)  # one batch read, 1,000 messages held unacknowledged
    assert len(first.splitlines()) == 1000
    response.close()  # the browser went away
    entry = AuditEntry.objects.get(action="messages.export")
    assert (entry.count, entry.result) == (1000, "partial")
    assert entry.detail["stopped"] == "the download was cut off"
    assert [body for _, _, body in t.drain(queue)] == [f"message {i}".encode() for i in range(2500)]


def test_a_stream_is_read_by_offset_and_a_viewer_may_export_it(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client: Any, token_for: Any
) -> None:
    t = declare()
    stream = t.queue(f"{unique_name}-dead-letters", **{"x-queue-type": "stream"})
    t.fill(stream, 30)
    response = export(client, token_for("carol"), collected(rabbit_broker, stream))
    assert response.status_code == 200
    objects = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [o["position"] for o in objects] == list(range(30))
    assert [o["body"] for o in objects] == [f"message {i}" for i in range(30)]
    entry = AuditEntry.objects.get(action="messages.export")
    assert entry.count == 30 and "effect" not in entry.detail


def test_a_quorum_queue_with_a_delivery_limit_is_not_read(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client: Any, token_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name}.dlq", **{"x-queue-type": "quorum", "x-delivery-limit": 3})
    t.fill(queue, 5)
    response = export(client, token_for("bob"), collected(rabbit_broker, queue))
    assert response.status_code == 400
    assert "delivery limit of 3" in response.json()["error"]
    assert not AuditEntry.objects.filter(action="messages.export").exists()
    drained = t.drain(queue)
    assert len(drained) == 5
    assert not any(method.redelivered for method, _, _ in drained)


def test_a_preview_shows_the_first_lines_and_puts_every_message_back(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name}.dlq")
    t.fill(queue, 1500)
    key = collected(rabbit_broker, queue)
    bob = client_for("bob")
    bob.get(f"/brokers/rabbit/dead-letters/?queue={key}")
    response = bob.post(
        "/brokers/rabbit/dead-letters/export",
        {"queue": key, "select": "all", "preview": "1"},
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "The first 20 lines" in page and page.count("message 1") >= 11
    entry = AuditEntry.objects.get(action="messages.export.preview")
    assert entry.result == "ok" and entry.count >= 20
    assert [body for _, _, body in t.drain(queue)] == [f"message {i}".encode() for i in range(1500)]
