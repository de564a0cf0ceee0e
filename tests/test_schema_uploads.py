"""Schemas uploaded through the admin, checked on save, and used by pages and dead-letter filters."""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgpack
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from brokers.base import Message
from brokers.decode import decode
from dashboard import decoding
from dashboard.jobs import deadletters
from dashboard.models import AuditEntry, Schema
from tests.schema_samples import avro_bytes, avsc, confluent, order_descriptor_set

pytestmark = pytest.mark.django_db

ADD = "/admin/dashboard/schema/add/"


@pytest.fixture(autouse=True)
def fresh_schemas():
    """Each test parses the schemas its own database holds (rollbacks send no signal)."""
    decoding.forget()
    yield
    decoding.forget()


def admin_post(client: Any, url: str, data: dict[str, Any]) -> Any:
    client.get(url)
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def no_death(message: Message) -> dict[str, Any]:
    return {"reason": "", "queue": "orders", "exchange": "", "routing_key": "", "time": None}


# -- saving checks the schema --------------------------------------------------


def test_a_schema_that_does_not_parse_is_never_saved():
    bad = Schema(name="broken", kind="avro", destination="orders", content=b'{"type": "nosuch"}')
    with pytest.raises(ValidationError) as refused:
        bad.save()
    assert refused.value.messages == ["Not a valid Avro schema: {'type': 'nosuch'}"]
    assert not Schema.objects.exists()


def test_a_protobuf_schema_naming_no_type_of_its_set_is_refused_on_that_field():
    bad = Schema(
        name="p",
        kind="protobuf",
        destination="*",
        message_type="shop.Nope",
        content=order_descriptor_set(),
    )
    with pytest.raises(ValidationError) as refused:
        bad.save()
    assert refused.value.message_dict == {
        "message_type": ["No message type 'shop.Nope' in the set; it has shop.Order, shop.Line."]
    }


def test_a_good_schema_is_saved_and_read_by_the_next_page():
    assert decoding.schemas() == ()
    Schema.objects.create(name="orders-value", kind="avro", destination="orders*", content=avsc())
    [compiled] = decoding.schemas()
    assert compiled.label == "Avro (orders-value)"
    body = confluent(7, avro_bytes({"id": 1, "item": "pen"}))
    found = decode(body, decoding.schemas(), ["orders.eu"])
    assert found is not None
    assert found.encoding == "Confluent wire format, schema id 7 → Avro (orders-value)"
    assert found.value == {"id": 1, "item": "pen", "note": None}


# -- the admin -----------------------------------------------------------------


def test_admin_uploads_a_protobuf_schema_and_it_is_audited(client_for):
    alice = client_for("alice")
    assert alice.get(ADD).status_code == 200
    answer = admin_post(
        alice,
        ADD,
        {
            "name": "shop-order",
            "kind": "protobuf",
            "destination": "",
            "header_name": "type",
            "header_value": "shop.Order",
            "message_type": "shop.Order",
            "upload": SimpleUploadedFile("shop.desc", order_descriptor_set()),
        },
    )
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    stored = Schema.objects.get(name="shop-order")
    assert bytes(stored.content) == order_descriptor_set()
    assert (stored.created_by, stored.header_name, stored.message_type) == (
        "alice",
        "type",
        "shop.Order",
    )
    assert AuditEntry.objects.filter(action="admin.add.schema", user="alice").exists()
    page = alice.get(f"/admin/dashboard/schema/{stored.pk}/change/").content.decode()
    assert f"{len(order_descriptor_set()):,} bytes, SHA-256" in page
    # A change without a new file keeps the stored one.
    kept = admin_post(
        alice,
        f"/admin/dashboard/schema/{stored.pk}/change/",
        {
            "name": "shop-order",
            "kind": "protobuf",
            "destination": "orders.*",
            "header_name": "type",
            "header_value": "shop.Order",
            "message_type": "shop.Order",
        },
    )
    assert kept.status_code == 302
    stored.refresh_from_db()
    assert stored.destination == "orders.*" and bytes(stored.content) == order_descriptor_set()


def test_admin_refuses_a_bad_file_with_the_reason_beside_it(client_for):
    alice = client_for("alice")
    answer = admin_post(
        alice,
        ADD,
        {
            "name": "orders-value",
            "kind": "avro",
            "destination": "orders",
            "upload": SimpleUploadedFile("orders.avsc", b'{"type": "record", "name": "Order"'),
        },
    )
    assert answer.status_code == 200
    form = answer.context["adminform"].form
    assert list(form.errors) == ["upload"]
    assert form.errors["upload"][0].startswith(
        "An Avro schema is JSON (an .avsc file); this is not"
    )
    assert "An Avro schema is JSON" in answer.content.decode()
    assert not Schema.objects.exists()
    # The .proto text instead of protoc's output says what to upload instead.
    proto = admin_post(
        alice,
        ADD,
        {
            "name": "p",
            "kind": "protobuf",
            "destination": "x",
            "upload": SimpleUploadedFile("shop.proto", b'syntax = "proto3";\nmessage Order {}\n'),
        },
    )
    assert "--descriptor_set_out" in proto.context["adminform"].form.errors["upload"][0]
    missing = admin_post(alice, ADD, {"name": "q", "kind": "avro", "destination": "x"})
    assert missing.context["adminform"].form.errors["upload"] == ["Choose the schema file."]


def test_only_the_admin_role_may_upload_schemas(personas):
    from django.test import Client

    for name in ("bob", "carol", "dave", None):
        client = Client()  # no CSRF check: the role alone must refuse
        if name:
            client.force_login(personas[name])
        assert client.get(ADD).status_code in (302, 403), name  # the admin's sign-in, or refused
        upload = SimpleUploadedFile("x.avsc", avsc())
        answer = client.post(
            ADD, {"name": "x", "kind": "avro", "destination": "*", "upload": upload}
        )
        assert answer.status_code in (302, 403), name
        if answer.status_code == 302:
            assert "login/?next=" in answer["Location"]
    assert not Schema.objects.exists()


# -- dead-letter filters look inside decoded bodies ------------------------------


def picks(rule: dict[str, Any], death_info: Any = no_death):
    """The test a job applies to each message, as the job engine builds it."""
    return deadletters.selector({"filter": rule}, death_info)


def test_body_contains_finds_words_inside_msgpack_gzip_and_avro_bodies():
    Schema.objects.create(name="orders-value", kind="avro", destination="orders", content=avsc())
    wanted, other = (
        picks({"body_contains": '"item": "fountain pen"'}),
        picks({"body_contains": "pencil"}),
    )
    bodies = {
        "msgpack": msgpack.packb({"id": 3, "item": "fountain pen"}),
        "gzip": gzip.compress(json.dumps({"id": 3, "item": "fountain pen"}).encode()),
        "avro": confluent(7, avro_bytes({"id": 3, "item": "fountain pen"})),
    }
    for name, body in bodies.items():
        message = Message(body=body, id=name)
        assert wanted(message), name
        assert not other(message), name
    # Plain text is matched as bytes, as before, and never decoded.
    text = Message(body=b'{"item":"fountain pen"}', id="t")
    assert picks({"body_contains": "fountain"})(text)
    assert not wanted(text)  # no space after the colon here


def test_body_contains_uses_schemas_of_the_queue_the_message_died_in():
    Schema.objects.create(name="orders-value", kind="avro", destination="orders", content=avsc())
    message = Message(body=confluent(7, avro_bytes({"id": 3, "item": "fountain pen"})), id="a")
    elsewhere = lambda message: {**no_death(message), "queue": "payments"}  # noqa: E731
    assert not picks({"body_contains": '"id": 3'}, elsewhere)(message)
    assert picks({"body_contains": '"id": 3'})(message)
