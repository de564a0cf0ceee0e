"""A Kafka search's matches exported as NDJSON: all of them, not only the 500 it keeps."""

from __future__ import annotations

import hashlib
import json

import pytest

from dashboard.kinds.kafka import search as kafka_search
from dashboard.models import AuditEntry
from tests.kafka.test_search import csrf, fill

pytestmark = pytest.mark.django_db


def test_a_search_exports_every_match_not_only_those_it_keeps(
    kafka_broker, make_topic, unique_name, kafka, personas, client_for, token_for
):
    topic = make_topic(f"exp-{unique_name}", partitions=2)
    marked = {i for i in range(1400) if i % 4 < 2}  # 700: more than the 500 a search keeps
    fill(kafka["bootstrap_servers"], topic, 1400, 2, marked)
    search = kafka_search.create(
        personas["carol"], kafka_broker, topic, {"body": "needle"}, enqueue=False
    )
    search = kafka_search.run(search.pk)
    assert (search.matched, len(search.results)) == (700, kafka_search.RESULT_LIMIT)

    carol = client_for("carol")  # a viewer: reading a topic changes nothing
    page = carol.get(f"/searches/{search.public_id}/").content.decode()
    assert "Download all 700 matches as NDJSON" in page
    response = carol.post(f"/searches/{search.public_id}/export", HTTP_X_CSRFTOKEN=csrf(carol))
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    objects = [json.loads(line) for line in data.splitlines()]
    assert sorted(o["routing_key"] for o in objects) == sorted(f"k{i}" for i in marked)
    assert all(json.loads(o["body"])["note"] == "needle" for o in objects)
    assert {(o["exchange"], o["properties"]["partition"]) for o in objects} == {
        (topic, 0),
        (topic, 1),
    }
    entry = AuditEntry.objects.get(action="messages.export")
    assert (entry.user, entry.count, entry.destination) == ("carol", 700, f"topic/{topic}")
    assert entry.detail["selection"]["search"] == str(search.public_id)
    assert entry.detail["sha256"] == hashlib.sha256(data).hexdigest()

    api = client_for(None).post(
        f"/api/v1/brokers/kafka/searches/{search.public_id}/export",
        HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}",
    )
    assert api.status_code == 200
    assert b"".join(api.streaming_content).count(b"\n") == 700
    elsewhere = client_for(None).post(
        f"/api/v1/brokers/other/searches/{search.public_id}/export",
        HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}",
    )
    assert elsewhere.status_code == 404
