"""Exports on any kind: what one line holds, hostile and binary bodies, the page's buttons,
and the errors of a broker that cannot be read."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from brokers.base import Message
from dashboard.jobs.export import filename, line
from dashboard.models import AuditEntry, Broker, Destination
from tests.app_fixtures import closed_port

HOSTILE = '</script><script>alert(1)</script>&amp;\u2028\u2029"\\\n\r\x00 ☃ 😀'.encode()


def info(message: Message) -> dict[str, Any]:
    return {"reason": "rejected", "queue": "orders", "exchange": "", "routing_key": "o", "time": 1}


def test_a_line_holds_a_hostile_body_exactly_and_inertly() -> None:
    message = Message(body=HOSTILE, id="m1", routing_key="o<b>", headers={"x-e": "<i>"}, size=9)
    encoded = line(message, info)
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert encoded.isascii()
    assert not any(c in encoded for c in (b"<", b">", b"&"))
    obj = json.loads(encoded)
    assert obj["body"].encode() == HOSTILE
    assert (obj["routing_key"], obj["headers"]) == ("o<b>", {"x-e": "<i>"})
    assert obj["death"]["reason"] == "rejected"


def test_a_line_holds_a_binary_body_and_binary_headers_as_base64() -> None:
    body = bytes(range(256))
    message = Message(body=body, id="m2", headers={"trace": b"\xff\x00"}, position=7)
    obj = json.loads(line(message, info))
    assert "body" not in obj
    assert base64.b64decode(obj["body_base64"]) == body
    assert obj["headers"] == {"trace": {"base64": base64.b64encode(b"\xff\x00").decode()}}
    assert (obj["position"], obj["size"]) == (7, 256)


def test_a_file_name_is_safe_whatever_the_source_is_called() -> None:
    broker = Broker(name="prod eu")
    name = filename(broker, '%2F/q "x"; rm -rf ☃')
    assert name.endswith(".ndjson")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


@pytest.fixture
def unreachable(db: Any) -> Broker:
    broker = Broker.objects.create(
        name="rabbit",
        kind="rabbitmq",
        options={"management_url": f"http://127.0.0.1:{closed_port()}"},
    )
    Destination.objects.create(
        broker=broker,
        kind="queue",
        key="//orders.dlq",
        name="orders.dlq",
        vhost="/",
        type="classic",
    )
    return broker


def test_an_unreachable_broker_gets_a_clear_error_and_no_download(
    unreachable: Broker, client_for: Any, token_for: Any, client: Any
) -> None:
    response = client.post(
        "/api/v1/brokers/rabbit/dead-letters/export",
        data=json.dumps({"source": "//orders.dlq"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_for('bob')}",
    )
    assert response.status_code == 400
    assert "could not read //orders.dlq" in response.json()["error"]
    bob = client_for("bob")
    bob.get("/brokers/rabbit/dead-letters/?queue=//orders.dlq")  # the form's CSRF cookie
    page = bob.post(
        "/brokers/rabbit/dead-letters/export",
        {"queue": "//orders.dlq", "select": "all"},
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert page.status_code == 302 and page["Location"].endswith("?queue=//orders.dlq")
    shown = bob.get(page["Location"]).content.decode()
    assert "Not exported: could not read //orders.dlq" in shown
    assert not AuditEntry.objects.filter(action="messages.export").exists()


def test_the_page_offers_the_download_to_those_who_may_and_says_what_it_does(
    unreachable: Broker, client_for: Any
) -> None:
    url = "/brokers/rabbit/dead-letters/?queue=//orders.dlq"
    operator = client_for("bob").get(url).content.decode()
    assert "Download all as NDJSON" in operator
    assert "marked redelivered" in operator
    viewer = client_for("carol").get(url).content.decode()
    assert "Download all as NDJSON" not in viewer  # reading it would change it: operators only
