"""Masking on RabbitMQ, end to end: a masked field is in no answer a viewer or operator gets
(pages, JSON, NDJSON, the audit CSV), and a replay still sends the original bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pika
import pytest

from dashboard.masking import MASK
from dashboard.models import AuditEntry
from tests.contract.flow import start_job
from tests.rabbitmq.test_export import collected, export

pytestmark = pytest.mark.django_db

CARD = "4111 1111 1111 1111"
EMAIL = "ann@example.com"
SECRETS = ("4111", EMAIL, "Ann Smith")


@pytest.fixture
def rules(mask_rules: Any, unique_name: str) -> None:
    mask_rules(
        f"""
[[mask]]
name = "pii"
destinations = ["{unique_name}*"]
json_paths = ["$.card.number"]
headers = ["x-customer"]
patterns = ["email"]
operators = true
"""
    )


def originals(n: int) -> list[bytes]:
    return [
        json.dumps({"n": i, "card": {"number": CARD}, "note": f"from {EMAIL}"}).encode()
        for i in range(n)
    ]


def test_a_masked_field_is_in_no_answer_and_the_replay_sends_the_original(
    rules: None,
    rabbit_broker: Any,
    declare: Callable[..., Any],
    unique_name: str,
    client_for: Any,
    token_for: Any,
    client: Any,
) -> None:
    t = declare()
    origin = t.queue(f"{unique_name}-origin")
    dlq = t.queue(f"{unique_name}.dlq")
    bodies = originals(4)
    for body in bodies:
        props = pika.BasicProperties(headers={"x-customer": "Ann Smith"}, message_id=body[:8].hex())
        t.publish("", dlq, body, props)
    key = collected(rabbit_broker, dlq)
    collected(rabbit_broker, origin)

    answers: dict[str, str] = {}
    response = export(client, token_for("bob"), key)
    answers["NDJSON export"] = b"".join(response.streaming_content).decode()
    first = json.loads(answers["NDJSON export"].splitlines()[0])
    assert json.loads(first["body"])["card"] == {"number": MASK}
    assert first["headers"]["x-customer"] == MASK
    assert first["masked"] is True
    # Such a file cannot be imported: it would publish the masks.
    refused_import = client.post(
        f"/api/v1/brokers/rabbit/import?queue={origin}",
        data=answers["NDJSON export"],
        content_type="application/x-ndjson",
        HTTP_AUTHORIZATION=f"Bearer {token_for('bob')}",
    )
    assert refused_import.status_code == 400
    assert "exported with masking rules applied" in refused_import.json()["error"]
    bob = client_for("bob")
    bob.get("/")
    token = bob.cookies["csrftoken"].value
    answers["dead-letters look"] = bob.post(
        "/brokers/rabbit/dead-letters/scan", {"queue": key}, HTTP_X_CSRFTOKEN=token, follow=True
    ).content.decode()
    answers["dead-letters page"] = bob.get(
        f"/brokers/rabbit/dead-letters/?queue={key}"
    ).content.decode()
    answers["messages page"] = bob.post(
        f"/brokers/rabbit/messages/{key.replace('/', '%2F')}",
        {"count": "10"},
        HTTP_X_CSRFTOKEN=token,
    ).content.decode()
    alice = client_for("alice")
    audit_csv = alice.get("/audit/export.csv")
    answers["audit CSV"] = b"".join(audit_csv.streaming_content).decode()
    for where, text in answers.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in the {where}"
    assert MASK in answers["messages page"] and MASK in answers["dead-letters page"]

    # Editing what one sees masked would replay the masks: refused.
    refused = bob.post(
        "/brokers/rabbit/dead-letters/edit",
        {"queue": key, "id": first["id"]},
        HTTP_X_CSRFTOKEN=token,
        follow=True,
    ).content.decode()
    assert "cannot be edited here" in refused
    # An admin who opts in sees raw values until signing out; both are audited.
    alice.get("/masking/")
    alice.post("/masking/raw", {"on": "1"}, HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value)
    raw = alice.post(
        f"/brokers/rabbit/messages/{key.replace('/', '%2F')}",
        {"count": "10"},
        HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value,
    ).content.decode()
    assert "Ann Smith" in raw and EMAIL in raw
    assert AuditEntry.objects.filter(
        user="alice", action="masking.raw_values", result="on"
    ).exists()

    # The replay copies the original bytes, whatever was shown.
    job = start_job(
        lambda method, path, body=None: json.loads(
            client.generic(
                method,
                f"/api/v1{path}",
                json.dumps(body) if body else "",
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token_for('bob')}",
            ).content
        ),
        {
            "broker": "rabbit",
            "action": "move",
            "source": key,
            "destination": {"queue": origin},
        },
    )
    from dashboard.models import Job
    from dashboard.tasks import run_job

    run_job(Job.objects.get(public_id=job["id"]).pk)
    copies = t.drain(origin)
    assert sorted(body for _, _, body in copies) == sorted(bodies)
    assert {props.headers["x-customer"] for _, props, _ in copies} == {"Ann Smith"}
    assert AuditEntry.objects.filter(action="messages.export", detail__masked_by=["pii"]).exists()
