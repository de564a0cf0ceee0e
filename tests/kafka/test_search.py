"""Whole-topic searches against the real Kafka-protocol broker: run, results, cancel, sharing, who may."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kafka import KafkaProducer

from dashboard.auth import VIEWER, ensure_user
from dashboard.kinds.kafka import search as kafka_search
from dashboard.models import AuditEntry, Search

pytestmark = pytest.mark.django_db

UUID = re.compile(r"/searches/([0-9a-f-]{36})/")


def search_id_in(location: str) -> str:
    found = UUID.search(location)
    assert found is not None, location
    return found.group(1)


def csrf(client) -> str:
    client.get("/")
    return client.cookies["csrftoken"].value


def fill(
    bootstrap: str,
    topic: str,
    n: int,
    partitions: int,
    marked: set[int],
    batch_size: int = 1 << 20,
    compression: str | None = None,
) -> None:
    """`n` JSON records round-robin over the partitions, batched (so Tansu's ListOffsets falls short)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=50,
        batch_size=batch_size,
        compression_type=compression,
    )
    for i in range(n):
        note = "needle" if i in marked else "hay"
        body = json.dumps({"order": {"id": i}, "note": note}).encode()
        producer.send(topic, body, key=f"k{i}".encode(), partition=i % partitions)
    producer.flush()
    producer.close()


def start(client, topic: str, **filters: str):
    return client.post(
        f"/brokers/kafka/topics/{topic}/search", filters, HTTP_X_CSRFTOKEN=csrf(client)
    )


def test_a_viewer_searches_a_whole_topic_and_gets_every_match(
    kafka_broker, client_for, make_topic, unique_name, kafka
):
    topic = make_topic(f"search-{unique_name}", partitions=3)
    marked = {7, 150, 151, 299}
    fill(kafka["bootstrap_servers"], topic, 300, 3, marked)
    carol = client_for("carol")
    response = start(carol, topic, body="needle")
    assert response.status_code == 302
    search_id = search_id_in(response["Location"])
    search = Search.objects.get(public_id=search_id)
    assert search.state == Search.QUEUED and search.created_by == "carol"
    entry = AuditEntry.objects.get(action="search.start")
    assert (entry.user, entry.destination) == ("carol", f"topic/{topic}")
    assert entry.detail["filters"] == {"body": "needle", "mode": "substring"}

    search = kafka_search.run(search.pk)  # what the Celery task does

    assert search.state == Search.DONE, search.error
    # The ranges come from the high watermark: every record, though produced in batches.
    assert search.partitions == {"0": [0, 100], "1": [0, 100], "2": [0, 100]}
    assert (search.total, search.scanned, search.matched) == (300, 300, 4)
    found = sorted((r["partition"], r["offset"]) for r in search.results)
    assert found == sorted((i % 3, i // 3) for i in marked)
    first = next(r for r in search.results if r["offset"] == 7 // 3 and r["partition"] == 1)
    assert first["key"]["text"] == "k7" and '"needle"' in first["preview"]["text"]
    page = carol.get(f"/searches/{search_id}/")
    assert page.status_code == 200
    assert b"4</strong> matched" in page.content
    assert b"hx-trigger" not in page.content  # finished: the page stops polling
    assert page.content.count(b"<tr>") == 1 + 4


def test_a_search_keeps_the_first_500_matches_and_counts_the_rest(
    kafka_broker, make_topic, unique_name, kafka, personas
):
    topic = make_topic(f"many-{unique_name}")
    fill(kafka["bootstrap_servers"], topic, 700, 1, set())
    search = kafka_search.create(
        personas["carol"],
        kafka_broker,
        topic,
        {"body": '$.note == "hay"', "mode": "json"},
        enqueue=False,
    )
    search = kafka_search.run(search.pk)
    assert (search.state, search.scanned, search.matched) == (Search.DONE, 700, 700)
    assert len(search.results) == kafka_search.RESULT_LIMIT
    assert [r["offset"] for r in search.results] == list(range(500))


def test_a_search_can_be_cancelled_while_it_runs(
    kafka_broker, client_for, make_topic, unique_name, kafka, monkeypatch
):
    topic = make_topic(f"cancel-{unique_name}")
    fill(kafka["bootstrap_servers"], topic, 3000, 1, {2999}, batch_size=2048)
    # One small batch per fetch and a report after each, so the scan takes many steps.
    monkeypatch.setattr(kafka_search, "PARTITION_FETCH_BYTES", 1)
    monkeypatch.setattr(kafka_search, "REPORT_EVERY", 0.0)
    carol = client_for("carol")
    search_id = search_id_in(start(carol, topic, body="needle")["Location"])
    search = Search.objects.get(public_id=search_id)
    # Carol presses Cancel as the first progress is written. (In the same
    # thread: SQLite's in-memory test database does not share writes well.)
    pages: list[bytes] = []
    report = kafka_search._Progress.report

    def report_then_cancel(self, scanned, matched, new):
        if not pages:
            pages.append(carol.get(f"/searches/{search_id}/").content)
            response = carol.post(f"/searches/{search_id}/cancel", HTTP_X_CSRFTOKEN=csrf(carol))
            assert response.status_code == 302
        return report(self, scanned, matched, new)

    monkeypatch.setattr(kafka_search._Progress, "report", report_then_cancel)
    search = kafka_search.run(search.pk)
    assert b'hx-trigger="every 1s"' in pages[0]  # running: the page polls
    assert b"Cancel</button>" in pages[0]
    assert search.state == Search.CANCELLED
    assert 0 < search.scanned < 3000
    assert search.matched == 0
    assert AuditEntry.objects.filter(action="search.cancel", user="carol").exists()


def test_a_queued_search_cancels_at_once_and_never_runs(
    kafka_broker, make_topic, unique_name, personas
):
    topic = make_topic(f"queued-{unique_name}")
    search = kafka_search.create(
        personas["carol"], kafka_broker, topic, {"key": "x"}, enqueue=False
    )
    kafka_search.cancel(personas["bob"], search)
    assert search.state == Search.CANCELLED
    assert kafka_search.run(search.pk).scanned == 0
    with pytest.raises(kafka_search.Invalid, match="cannot be cancelled"):
        kafka_search.cancel(personas["bob"], search)


def test_the_search_page_is_shared_with_any_viewer_and_polls_while_running(
    kafka_broker, client_for, make_topic, unique_name, personas
):
    topic = make_topic(f"share-{unique_name}")
    search = kafka_search.create(
        personas["carol"], kafka_broker, topic, {"body": "<script>x</script>"}, enqueue=False
    )
    erin = Client(enforce_csrf_checks=True)  # a second viewer, who did not start it
    erin.force_login(ensure_user("erin", VIEWER)[0])
    page = erin.get(f"/searches/{search.public_id}/")
    assert page.status_code == 200
    assert b"Queued" in page.content
    assert b'hx-trigger="every 1s"' in page.content
    assert b"&lt;script&gt;x&lt;/script&gt;" in page.content and b"<script>x" not in page.content
    assert b"Cancel</button>" not in page.content  # erin did not start it
    fragment = erin.get(f"/searches/{search.public_id}/", HTTP_HX_REQUEST="true")
    assert fragment.content.lstrip().startswith(b'<div id="search-progress"')
    assert b"<html" not in fragment.content
    kafka_search.run(search.pk)
    done = erin.get(f"/searches/{search.public_id}/", HTTP_HX_REQUEST="true")
    assert b'data-state="done"' in done.content and b"hx-trigger" not in done.content
    assert b"No message matched" in done.content
    listing = erin.get(f"/brokers/kafka/topics/{topic}/search")
    assert str(search.public_id).encode() in listing.content


def test_a_search_of_a_missing_topic_fails_with_the_reason(kafka_broker, personas, unique_name):
    search = kafka_search.create(
        personas["carol"], kafka_broker, f"gone-{unique_name}", {}, enqueue=False
    )
    search = kafka_search.run(search.pk)
    assert search.state == Search.FAILED
    assert f"no topic 'gone-{unique_name}'" in search.error


def test_a_silent_running_search_shows_as_interrupted(kafka_broker, personas, settings):
    search = Search.objects.create(
        broker=kafka_broker,
        topic="t",
        created_by="carol",
        state=Search.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        heartbeat=timezone.now() - timedelta(seconds=settings.SLUICE_JOB_STALL_SECONDS + 5),
    )
    assert kafka_search.as_json(search)["state"] == "interrupted"
    kafka_search.cancel(personas["carol"], search)
    assert search.state == Search.CANCELLED  # nobody runs it to notice, so at once


def test_bad_filters_start_nothing(kafka_broker, client_for, make_topic, unique_name):
    topic = make_topic(f"bad-{unique_name}")
    carol = client_for("carol")
    page = start(carol, topic, body="([", mode="regex")
    assert page.status_code == 400
    assert b"regular expression is not valid" in page.content
    api = carol.post(
        f"/api/v1/brokers/kafka/topics/{topic}/searches",
        data=json.dumps({"body": "$.a ==", "mode": "json"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf(carol),
    )
    assert api.status_code == 400 and "must be JSON" in api.json()["error"]
    assert not Search.objects.exists()
    assert not AuditEntry.objects.filter(action="search.start").exists()


def test_the_api_starts_and_reports_a_search(
    kafka_broker, client_for, token_for, make_topic, unique_name, kafka
):
    topic = make_topic(f"api-{unique_name}")
    fill(kafka["bootstrap_servers"], topic, 20, 1, {3})
    token = token_for("carol")
    created = client_for(None).post(
        f"/api/v1/brokers/kafka/topics/{topic}/searches",
        data=json.dumps({"key": "k3", "key_mode": "exact"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["state"] == "queued" and body["filters"] == {"key": "k3", "key_mode": "exact"}
    kafka_search.run(Search.objects.get(public_id=body["id"]).pk)
    got = (
        client_for(None)
        .get(f"/api/v1/brokers/kafka/searches/{body['id']}", HTTP_AUTHORIZATION=f"Bearer {token}")
        .json()
    )
    assert (got["state"], got["scanned"], got["matched"]) == ("done", 20, 1)
    assert got["results"][0]["offset"] == 3 and got["progress"] == 1.0


def test_who_may_search_and_cancel(kafka_broker, client_for, make_topic, unique_name, personas):
    topic = make_topic(f"perm-{unique_name}")
    url = f"/brokers/kafka/topics/{topic}/search"
    anonymous = client_for(None)
    assert anonymous.get(url).status_code == 302
    assert anonymous.post(url, {"body": "x"}).status_code in (302, 403)
    assert anonymous.post(f"/api/v1/brokers/kafka/topics/{topic}/searches").status_code == 401
    assert client_for("dave").get(url).status_code == 403
    carol = client_for("carol")
    assert carol.get(url).status_code == 200
    assert carol.post(url, {"body": "x"}).status_code == 403  # no CSRF token
    assert not Search.objects.exists()
    search = kafka_search.create(personas["bob"], kafka_broker, topic, {}, enqueue=False)
    assert anonymous.get(f"/searches/{search.public_id}/").status_code == 302
    assert carol.get(f"/searches/{search.public_id}/").status_code == 200
    assert carol.get("/searches/not-a-uuid/").status_code == 404
    # Only whoever started it, or an operator, may stop someone's search.
    refused = carol.post(f"/searches/{search.public_id}/cancel", HTTP_X_CSRFTOKEN=csrf(carol))
    assert refused.status_code == 403
    assert Search.objects.get(pk=search.pk).state == Search.QUEUED
    alice = client_for("alice")
    assert alice.post(f"/searches/{search.public_id}/cancel").status_code == 403  # no CSRF token
    ok = alice.post(f"/searches/{search.public_id}/cancel", HTTP_X_CSRFTOKEN=csrf(alice))
    assert ok.status_code == 302
    assert Search.objects.get(pk=search.pk).state == Search.CANCELLED


def test_search_progress_moves_while_the_runner_reports(
    kafka_broker, make_topic, unique_name, kafka, personas, monkeypatch
):
    """The page's bar reads scanned/total from the row as the scan goes."""
    topic = make_topic(f"progress-{unique_name}", partitions=2)
    fill(kafka["bootstrap_servers"], topic, 400, 2, {1}, batch_size=2048)
    monkeypatch.setattr(kafka_search, "PARTITION_FETCH_BYTES", 1)
    monkeypatch.setattr(kafka_search, "REPORT_EVERY", 0.0)
    seen: list[tuple[int, int]] = []
    original = kafka_search._Progress.report

    def spy(self, scanned, matched, new):
        keep_going = original(self, scanned, matched, new)
        row = Search.objects.get(pk=self.search.pk)
        seen.append((row.scanned, row.total))
        return keep_going

    monkeypatch.setattr(kafka_search._Progress, "report", spy)
    search = kafka_search.create(
        personas["carol"], kafka_broker, topic, {"body": "needle"}, enqueue=False
    )
    search = kafka_search.run(search.pk)
    assert search.state == Search.DONE and search.matched == 1
    assert len(seen) >= 4, seen
    assert all(total == 400 for _, total in seen)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen) and seen[-1][0] == 400


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_batches_ruled_out_by_their_bytes_hide_no_match(
    kafka_broker, make_topic, unique_name, kafka, personas, compression
):
    """The scanner skips batches without the filters' bytes; every match must still be found."""
    topic = make_topic(f"prefilter-{unique_name}", partitions=2)
    bootstrap = kafka["bootstrap_servers"]
    fill(bootstrap, topic, 2000, 2, {4, 1001, 1999}, batch_size=4096, compression=compression)
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
    # The same JSON written with \u escapes, and a header-only match.
    producer.send(topic, b'{"n\\u006fte": "n\\u0065edle", "order": {"id": -1}}', partition=0)
    producer.send(topic, b"{}", key=b"kx", headers=[("trace", b"needle")], partition=1)
    producer.flush()
    producer.close()

    def found(**filters: str) -> list[tuple[int, int]]:
        search = kafka_search.create(personas["carol"], kafka_broker, topic, filters, enqueue=False)
        search = kafka_search.run(search.pk)
        assert search.state == Search.DONE and search.scanned == 2002, (search.state, search.error)
        return sorted((r["partition"], r["offset"]) for r in search.results)

    marked = [(0, 2), (1, 500), (1, 999)]
    assert found(body="needle") == marked
    assert found(body='$.note == "needle"', mode="json") == sorted([*marked, (0, 1000)])
    assert found(header="trace", header_value="needle") == [(1, 1000)]
    assert found(key="k1001", key_mode="exact") == [(1, 500)]
    assert found(body=r"ne+dle", mode="regex") == marked
