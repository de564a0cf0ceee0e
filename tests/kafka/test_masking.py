"""Mask rules on Kafka: a search's results (page, API, export) and the live tail hide what
the rules name from a viewer, and an opted-in admin sees it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dashboard.kinds.kafka import search as kafka_search
from dashboard.masking import MASK
from tests.kafka.test_search import csrf
from tests.kafka.test_tail import Tail, run

pytestmark = pytest.mark.django_db

CARD = "4111 1111 1111 1111"
EMAIL = "ann@example.com"


@pytest.fixture
def rules(mask_rules: Any, unique_name: str) -> None:
    mask_rules(
        f"""
[[mask]]
name = "pii"
destinations = ["*{unique_name}*"]
json_paths = ["$.card"]
headers = ["x-customer"]
patterns = ["email"]
"""
    )


def body(n: int) -> bytes:
    return json.dumps({"n": n, "card": CARD, "note": f"mail {EMAIL}"}).encode()


def test_search_results_and_their_export_are_masked_for_a_viewer(
    rules, kafka_broker, make_topic, produce, unique_name, personas, client_for
):
    topic = make_topic(f"pii-{unique_name}")
    produce(topic, [body(n) for n in range(3)], headers=[("x-customer", b"Ann Smith")])
    search = kafka_search.create(personas["carol"], kafka_broker, topic, {}, enqueue=False)
    search = kafka_search.run(search.pk)
    assert search.matched == 3
    carol = client_for("carol")
    page = carol.get(f"/searches/{search.public_id}/").content.decode()
    api = carol.get(f"/api/v1/brokers/kafka/searches/{search.public_id}").content.decode()
    export = carol.post(f"/searches/{search.public_id}/export", HTTP_X_CSRFTOKEN=csrf(carol))
    ndjson = b"".join(export.streaming_content).decode()
    for shown in (page, api, ndjson):
        for secret in ("4111", EMAIL, "Ann Smith"):
            assert secret not in shown, (secret, shown[:300])
    assert MASK in json.loads(ndjson.splitlines()[0])["body"]
    assert json.loads(json.loads(ndjson.splitlines()[0])["body"])["n"] == 0
    # An admin who opted in sees the raw values; the opt-in is audited.
    alice = client_for("alice")
    alice.post("/masking/raw", {"on": "1"}, HTTP_X_CSRFTOKEN=csrf(alice))
    raw = alice.get(f"/api/v1/brokers/kafka/searches/{search.public_id}").content.decode()
    assert "Ann Smith" in raw and EMAIL in raw


def test_the_live_tail_masks_bodies_and_headers(
    rules, personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"pii-tail-{unique_name}")

    async def go() -> Tail:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(
            lambda: produce(topic, [body(1)], headers=[("x-customer", b"Ann Smith")])
        )
        await t.until(lambda: len(t.rows) >= 1)
        await t.close()
        return t

    t = run(go)
    row = t.rows[0]
    assert "4111" not in t.text and EMAIL not in t.text and "Ann Smith" not in t.text
    assert row["headers"] == f"x-customer={MASK}"
    assert MASK in row["body"] and '"n": 1' in row["body"]
