"""Exports of dead letters as NDJSON, on every kind: every message once, byte for byte, the
source left as it was, and an audit record whose digest is that of the bytes downloaded."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from dashboard.models import AuditEntry, Broker
from tests.contract.flow import collect
from tests.contract.kinds import Registration

pytestmark = pytest.mark.django_db


def export(api: Any, broker: Broker, body: dict[str, Any]) -> tuple[Any, bytes]:
    response = api.raw("POST", f"/brokers/{broker.name}/dead-letters/export", body)
    data = b"".join(response.streaming_content) if response.status_code == 200 else b""
    return response, data


def body_of(obj: dict[str, Any]) -> bytes:
    if "body_base64" in obj:
        return base64.b64decode(obj["body_base64"])
    return str(obj["body"]).encode("utf-8")


def test_an_export_holds_every_message_once_and_leaves_the_source_as_it_was(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(6)
    collect(broker)
    response, data = export(api, broker, {"source": src.key})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    assert response["Content-Disposition"].endswith('.ndjson"')
    lines = data.splitlines()
    objects = [json.loads(line) for line in lines]
    assert Counter(body_of(o) for o in objects) == Counter(src.bodies)
    assert sorted(o["id"] for o in objects) == sorted(src.ids)
    assert all(o["size"] == len(body_of(o)) for o in objects)
    assert all(isinstance(o["headers"], dict) and "death" in o for o in objects)
    # Looking changed nothing that is there.
    assert kind.source_bodies(src) == Counter(src.bodies)
    entry = AuditEntry.objects.get(action="messages.export")
    assert (entry.user, entry.broker, entry.destination) == ("bob", broker.name, src.key)
    assert (entry.count, entry.result) == (6, "ok")
    assert entry.detail["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry.detail["bytes"] == len(data)


def test_an_export_of_chosen_messages_holds_those_alone(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(8)
    collect(broker)
    chosen = [src.ids[1], src.ids[6]]
    response, data = export(api, broker, {"source": src.key, "selection": {"ids": chosen}})
    assert response.status_code == 200
    objects = [json.loads(line) for line in data.splitlines()]
    assert sorted(o["id"] for o in objects) == sorted(chosen)
    assert sorted(body_of(o) for o in objects) == sorted([src.bodies[1], src.bodies[6]])
    assert kind.source_bodies(src) == Counter(src.bodies)
    entry = AuditEntry.objects.get(action="messages.export")
    assert entry.count == 2 and entry.detail["selection"] == {"ids": chosen}


def test_a_bad_export_request_gets_a_clear_error_and_reads_nothing(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(2)
    collect(broker)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "which dead-letter source"),
        ({"source": src.key + "-none"}, "no "),
        ({"source": src.key, "selection": {"ids": []}}, "ids"),
        ({"source": src.key, "selection": {"filter": {"colour": "red"}}}, "unknown filter"),
    ]
    for body, words in cases:
        response, _ = export(api, broker, body)
        assert response.status_code == 400, body
        assert words in response.json()["error"], (body, response.json())
    response = api.raw("POST", f"/brokers/{broker.name}/dead-letters/export", "[1, 2")
    assert response.status_code == 400
    assert not AuditEntry.objects.filter(action="messages.export").exists()
    assert kind.source_bodies(src) == Counter(src.bodies)
