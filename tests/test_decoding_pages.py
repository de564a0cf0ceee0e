"""Decoded bodies on the message pages, read from the real RabbitMQ and NATS, and masked."""

from __future__ import annotations

import gzip
import html
import json
import re
from typing import Any
from urllib.parse import quote

import msgpack
import pika
import pytest
import zstandard

from brokers.base import Message
from dashboard import decoding
from dashboard.models import Destination, Schema
from dashboard.views import messageview
from tests.schema_samples import (
    avro_bytes,
    avsc,
    confluent,
    order_descriptor_set,
    protobuf_order,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_schemas():
    decoding.forget()
    yield
    decoding.forget()


def page_text(response: Any) -> str:
    """The page as a reader sees it: tags gone, runs of spaces and lines as one space."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def bodies(response: Any) -> list[str]:
    """Each message's decoded block and raw block, in order, as HTML."""
    return re.findall(
        r'<p class="small decoded-as">.*?</details></details>', response.content.decode(), re.S
    )


def test_rabbitmq_messages_show_gzip_msgpack_and_confluent_avro_decoded(
    rabbit_broker, amqp, unique_name, client_for
):
    queue = f"orders-{unique_name}"
    amqp.queue_declare(queue)
    Destination.objects.create(
        broker=rabbit_broker, kind="queue", key=f"//{queue}", name=queue, vhost="/", type="classic"
    )
    Schema.objects.create(name="orders-value", kind="avro", destination="orders-*", content=avsc())
    order = {"id": 41, "item": "fountain pen", "note": "<script>alert(1)</script>"}
    sent = [
        gzip.compress(json.dumps(order).encode()),
        msgpack.packb({"id": 42, "tags": ["a", "<b>"]}),
        confluent(7, avro_bytes(order)),
    ]
    for n, body in enumerate(sent):
        amqp.basic_publish("", queue, body, pika.BasicProperties(message_id=f"m{n}"))

    bob = client_for("bob")
    bob.get("/")
    page = bob.post(
        f"/brokers/rabbit/messages/{quote('//' + queue, safe='')}",
        {"count": "3"},
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert page.status_code == 200
    text = page_text(page)
    assert "Decoded: gzip → JSON" in text
    assert "Decoded: MessagePack" in text
    assert "Decoded: Confluent wire format, schema id 7 → Avro (orders-value)" in text
    assert '"item": "fountain pen"' in text and '"id": 42' in text
    # The structure is escaped like every other value: no markup from a body gets through.
    content = page.content.decode()
    assert "<script>alert" not in content and "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert "<b>" not in content
    # The raw bytes, one click away: a closed <details> with the hex of each body.
    shown = bodies(page)
    assert len(shown) == 3
    for block, body in zip(shown, sent, strict=True):
        assert '<details class="raw-body"><summary>Raw body</summary>' in block
        assert body[:16].hex(" ") in block
    # Looking left the messages where they were.
    assert amqp.queue_declare(queue, passive=True).method.message_count == 3


def test_nats_messages_show_protobuf_by_header_and_zstd_decoded(
    nats_broker, js, unique_name, client_for
):
    stream = f"S{unique_name}"
    js.add_stream(stream, [f"{unique_name}.>"], allow_direct=True)
    Schema.objects.create(
        name="shop-order",
        kind="protobuf",
        header_name="type",
        header_value="shop.Order",
        message_type="shop.Order",
        content=order_descriptor_set(),
    )

    async def publish(ctx: Any) -> None:
        await ctx.publish(
            f"{unique_name}.orders",
            protobuf_order(id=9, item="ink"),
            headers={"type": "shop.Order"},
        )
        await ctx.publish(
            f"{unique_name}.events", zstandard.ZstdCompressor().compress(b'{"event": "shipped"}')
        )

    js(publish)
    page = client_for("carol").get(f"/brokers/nats/streams/{stream}/messages", {"count": 10})
    assert page.status_code == 200
    text = page_text(page)
    assert "Decoded: Protobuf (shop-order)" in text and '"item": "ink"' in text
    assert "Decoded: zstd → JSON" in text and '"event": "shipped"' in text
    assert text.count("Raw body") == 2
    assert "28 b5 2f fd" in page.content.decode()  # the zstd magic, in the raw hex


def test_a_mask_sees_what_decoding_reveals():
    """Masking the raw bytes of a gzip body finds nothing; the decoded structure is masked too."""
    card = "4111 1111 1111 1111"

    def mask(data: bytes) -> bytes:
        return re.sub(rb"\d{4}( \d{4}){3}", "••••".encode(), data)

    body = gzip.compress(json.dumps({"card": card, "item": "pen"}).encode())
    assert mask(body) == body  # nothing readable to mask in the compressed bytes
    plain = messageview.shown(Message(body=body, id="g"))
    assert card in plain["decoded"]["text"]
    shown = messageview.shown(Message(body=body, id="g"), mask=mask)
    assert card not in shown["decoded"]["text"]
    assert json.loads(shown["decoded"]["text"]) == {"card": "••••", "item": "pen"}
    parts = messageview.body_parts(gzip.compress(card.encode()), mask=mask)
    assert parts["decoded"]["text"] == "••••"
