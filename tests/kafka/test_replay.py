"""Replaying Kafka dead letters with the job engine, on the real Kafka-protocol broker.

What every kind does (lineage, bad requests, an unreachable broker, cancel, kill -9)
is in the contract suite, tests/contract/; here is what is Kafka's own.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from dashboard.collection import collector
from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.models import AuditEntry, Destination, Job
from tests.app_fixtures import wait_for
from tests.kafka_fixtures import read_all
from tests.test_permissions import csrf_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def dlt(kafka_broker, make_topic, produce, unique_name) -> dict[str, Any]:
    """An origin topic and its dead-letter topic holding 40 records that name it."""
    origin = make_topic(f"orders-{unique_name}", partitions=2)
    dead = make_topic(f"orders-{unique_name}.DLT", partitions=2)
    for n in range(40):
        produce(
            dead,
            [json.dumps({"n": n}).encode()],
            partition=n % 2,
            key=f"k{n}".encode(),
            headers=[
                ("x-original-topic", origin.encode()),
                ("x-exception-message", b"boom" if n % 4 else b"timeout"),
                ("trace", bytes([0xFF, 0x00, n])),  # not UTF-8: must travel byte for byte
            ],
        )
    collector.collect(kafka_broker)
    return {"origin": origin, "dead": dead, "broker": kafka_broker}


def topic_known(broker, name: str) -> bool:
    return Destination.objects.filter(broker=broker, key=f"topic/{name}").exists()


def make_job(broker, personas, **data: Any) -> Job:
    fields = {"action": "replay", "selection": {"all": True}, **data}
    return Job.objects.create(broker=broker, created_by="bob", **jobservice.check(broker, fields))


def run(job: Job) -> Job:
    return jobs.run(job.pk, jobservice.transfer_for, jobservice.router)


def test_replay_sends_every_record_to_its_origin_with_key_headers_and_lineage(
    dlt, personas, kafka
) -> None:
    job = run(make_job(dlt["broker"], personas, source=f"topic/{dlt['dead']}"))
    assert (job.state, job.total, job.done, job.replayed, job.kept, job.failed) == (
        "done",
        40,
        40,
        40,
        0,
        0,
    )
    copies = read_all(kafka["bootstrap_servers"], dlt["origin"])
    assert len(copies) == 40
    by_key = {c.key: c for c in copies}
    assert set(by_key) == {f"k{n}".encode() for n in range(40)}
    one = by_key[b"k5"]
    headers = dict(one.headers)
    assert json.loads(one.value) == {"n": 5}
    assert headers["trace"] == bytes([0xFF, 0x00, 5])
    assert headers["x-original-topic"] == dlt["origin"].encode()
    assert headers["sluice-replay-id"] == str(job.public_id).encode()
    assert headers["sluice-replayed-from"] == f"kafka:topic/{dlt['dead']}".encode()
    assert headers["sluice-replay-count"] == b"1"
    assert headers["sluice-replayed-by"] == b"bob"
    # The dead-letter topic still holds its records: a log is not drained.
    assert len(read_all(kafka["bootstrap_servers"], dlt["dead"])) == 40
    assert {o[1] for o in jobs.outcomes(job)} == {"replayed"}
    assert job.cursor["next"] == {str(p): r[1] for p, r in job.cursor["ranges"].items()}


def test_replay_of_a_filter_and_an_offset_range_to_another_topic(
    dlt, personas, kafka, make_topic, unique_name
) -> None:
    other = make_topic(f"retry-{unique_name}")
    wait_for(lambda: collector.collect(dlt["broker"]) and topic_known(dlt["broker"], other))
    job = run(
        make_job(
            dlt["broker"],
            personas,
            source=f"topic/{dlt['dead']}",
            destination=other,
            selection={"filter": {"reason": "timeout"}},
            ranges=[{"partition": 0, "from": 0, "to": 9}],
        )
    )
    # Partition 0 holds the even n; offsets 0..9 are n = 0, 2, ..., 18; timeouts: n % 4 == 0.
    assert (job.state, job.total, job.replayed, job.kept) == ("done", 10, 5, 5)
    copies = read_all(kafka["bootstrap_servers"], other)
    assert sorted(json.loads(c.value)["n"] for c in copies) == [0, 4, 8, 12, 16]
    assert read_all(kafka["bootstrap_servers"], dlt["origin"]) == []


def test_records_without_an_origin_header_are_kept_and_reported(
    kafka_broker, make_topic, produce, personas, unique_name
) -> None:
    dead = make_topic(f"{unique_name}-dlq")
    produce(dead, [b"no origin"])
    collector.collect(kafka_broker)
    job = run(make_job(kafka_broker, personas, source=f"topic/{dead}"))
    assert (job.state, job.done, job.replayed, job.kept) == ("done", 1, 0, 1)
    assert jobs.outcomes(job, "kept")[0][1] == "kept: origin unknown"


def test_a_replay_never_touches_the_offsets_of_the_users_groups(
    dlt, personas, kafka, kafka_admin
) -> None:
    group = f"app-{dlt['dead']}"
    tp = TopicPartition(dlt["dead"], 0)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka["bootstrap_servers"], group_id=group, enable_auto_commit=False
    )
    consumer.commit({tp: OffsetAndMetadata(3, "", -1)})
    consumer.close()
    before = kafka_admin.list_group_offsets(group)
    groups_before = {g["group_id"] for g in kafka_admin.list_groups()}
    run(make_job(dlt["broker"], personas, source=f"topic/{dlt['dead']}"))
    assert kafka_admin.list_group_offsets(group) == before
    assert {g["group_id"] for g in kafka_admin.list_groups()} == groups_before


def test_a_resumed_replay_goes_on_from_its_cursor_and_counts_duplicates(
    dlt, personas, kafka
) -> None:
    job = make_job(dlt["broker"], personas, source=f"topic/{dlt['dead']}", batch_size=10)
    # As if a run had sent and recorded nothing past offset 5 of partition 0 and
    # 7 of partition 1, then died with the next batch in flight.
    Job.objects.filter(pk=job.pk).update(
        cursor=dict(job.cursor, next={"0": 5, "1": 7}), done=12, in_flight=["0:5", "0:6"]
    )
    job = run(job)
    assert (job.state, job.total, job.done, job.duplicates) == ("done", 40, 40, 2)
    copies = read_all(kafka["bootstrap_servers"], dlt["origin"])
    assert sorted(c.key for c in copies) == sorted(
        [
            f"k{n}".encode()
            for n in range(40)
            if (n % 2 == 0 and n // 2 >= 5) or (n % 2 and n // 2 >= 7)
        ]
    )


def test_dry_run_then_start_through_the_api(dlt, personas, token_for, client, settings) -> None:
    token = token_for("bob")
    body = {
        "broker": "kafka",
        "action": "replay",
        "source": f"topic/{dlt['dead']}",
        "selection": {"filter": {"reason": "boom"}},
        "dry_run": True,
    }
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201, response.content
    preview = response.json()["preview"]
    assert preview["queue_length"] == 40 and preview["selected"] == 30
    assert preview["targets"] == [[f"topic {dlt['origin']}", 30]]
    assert AuditEntry.objects.filter(action="job.replay.preview").exists()


def test_dead_letters_page_finds_topics_by_name_and_by_origin_header(
    dlt, client_for, make_topic, produce, unique_name
) -> None:
    broker = dlt["broker"]
    hidden = make_topic(f"parking-{unique_name}")
    produce(hidden, [b"late"], headers=[("kafka_dlt-original-topic", dlt["origin"].encode())])
    wait_for(lambda: collector.collect(broker) and topic_known(broker, hidden))
    viewer = client_for("carol")
    page = viewer.get("/brokers/kafka/dead-letters/").content.decode()
    assert dlt["dead"] in page and "name matches" in page
    assert hidden not in page  # nothing says so yet
    response = csrf_post(viewer, "/brokers/kafka/dead-letters/headers", {})
    assert response.status_code == 302
    page = viewer.get("/brokers/kafka/dead-letters/").content.decode()
    assert hidden in page and "kafka_dlt-original-topic" in page


def test_a_viewer_looks_at_a_dead_letter_topic_and_an_operator_replays_from_the_page(
    dlt, client_for, kafka
) -> None:
    key = f"topic/{dlt['dead']}"
    viewer = client_for("carol")
    assert csrf_post(viewer, "/brokers/kafka/dead-letters/scan", {"queue": key}).status_code == 302
    page = viewer.get("/brokers/kafka/dead-letters/", {"queue": key}).content.decode()
    assert "timeout (10)" in page and "boom (30)" in page  # grouped by reason
    assert "Copy to the topic below" not in page  # viewers get no action form
    assert (
        viewer.post(
            "/brokers/kafka/dead-letters/act", {"queue": key, "action": "replay"}
        ).status_code
        == 403
    )
    operator = client_for("bob")
    response = csrf_post(
        operator,
        "/brokers/kafka/dead-letters/act",
        {
            "queue": key,
            "action": "replay",
            "select": "filter",
            "f_reason": "timeout",
            "r_partition": "1",
            "batch_size": "100",
        },
    )
    assert response.status_code == 302 and "/jobs/" in response["Location"]
    job = Job.objects.get()
    assert job.state == Job.PREVIEW
    assert job.preview["selected"] == 0  # odd n live in partition 1, and n % 4 == 0 is even
    assert job.cursor["ranges"] == {"1": [0, 20]}
    page = operator.get(response["Location"]).content.decode()
    assert "partition 1: 0–19" in page and "origin header names" in page
    assert AuditEntry.objects.filter(action="job.replay.preview", user="bob").exists()


def test_batch_producer_partitions_like_kafkas_producer_and_splits_large_batches(
    kafka, kafka_admin, make_topic, produce, unique_name
) -> None:
    from brokers.kafka.produce import BatchProducer

    topic = make_topic(f"lean-{unique_name}", partitions=5)
    keys = [f"customer-{n}".encode() for n in range(40)]
    by_kafka = {k: produce(topic, [b"ref"], key=k)[0].partition for k in keys}
    big = b"y" * (400 * 1024)
    records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (topic, k, b"lean", [("h", b"\xff")]) for k in keys
    ]
    records += [(topic, b"same-key", big, []) for _ in range(3)]
    records.append((f"missing-{unique_name}", b"k", b"v", []))
    outcome = BatchProducer(kafka_admin, 10000).send(records)
    assert outcome[:-1] == [""] * (len(records) - 1)
    assert "missing" in outcome[-1] or "Unknown" in outcome[-1]
    got = read_all(kafka["bootstrap_servers"], topic)
    lean = {r.key: r.partition for r in got if r.value == b"lean"}
    assert lean == by_kafka
    assert all(dict(r.headers) == {"h": b"\xff"} for r in got if r.value == b"lean")
    assert sum(1 for r in got if r.value == big) == 3


def test_an_operator_edits_one_record_then_replays_only_it(
    dlt, client_for, personas, kafka
) -> None:
    """Edit before replay: the body and a text header change, binary and x- headers travel
    as they were, the key is kept, and the job reads that one record, not the topic."""
    key = f"topic/{dlt['dead']}"
    operator = client_for("bob")
    # The record n=6 lives in partition 0 at offset 3 (even n go to partition 0, in order).
    form = csrf_post(operator, "/brokers/kafka/dead-letters/edit", {"queue": key, "id": "0:3"})
    assert form.status_code == 200
    page = form.content.decode()
    assert "&quot;n&quot;: 6" in page  # the body, in the textarea
    assert '<input type="hidden" name="r_from" value="3">' in page
    assert "<code>trace</code>" in page  # named as kept: binary, not in the editable JSON
    edited_headers = json.dumps({"note": "fixed by hand <b>"})
    response = csrf_post(
        operator,
        "/brokers/kafka/dead-letters/act",
        {
            "queue": key,
            "action": "replay",
            "select": "ids",
            "edit_id": "0:3",
            "edit_body": '{"n": 6, "fixed": true}',
            "edit_headers": edited_headers,
            "r_partition": "0",
            "r_from": "3",
            "r_to": "3",
        },
    )
    assert response.status_code == 302 and "/jobs/" in response["Location"]
    job = Job.objects.get()
    assert job.cursor["ranges"] == {"0": [3, 4]}
    assert job.preview["selected"] == 1
    jobservice.start(personas["bob"], job)  # the "Start" button; the test runs it here
    job = run(job)
    assert (job.state, job.total, job.replayed, job.kept) == ("done", 1, 1, 0)

    (copy,) = read_all(kafka["bootstrap_servers"], dlt["origin"])
    headers = dict(copy.headers)
    assert json.loads(copy.value) == {"n": 6, "fixed": True}
    assert copy.key == b"k6"
    assert headers["note"] == b"fixed by hand <b>"
    assert headers["trace"] == bytes([0xFF, 0x00, 6])  # binary: byte for byte
    assert headers["x-original-topic"] == dlt["origin"].encode()
    assert headers["x-exception-message"] == b"boom"
    assert headers["sluice-replay-id"] == str(job.public_id).encode()
    # The dead-letter topic keeps the record as it was.
    (original,) = [r for r in read_all(kafka["bootstrap_servers"], dlt["dead"]) if r.key == b"k6"]
    assert json.loads(original.value) == {"n": 6} and "note" not in dict(original.headers)
    entry = AuditEntry.objects.get(action="job.replay.start")
    assert entry.user == "bob" and entry.detail["edit"]["id"] == "0:3"
    assert entry.detail["edit"]["headers"] == {"note": "fixed by hand <b>"}
    assert entry.detail["selection"] == {"ids": ["0:3"]}


def test_editing_a_record_the_log_no_longer_holds_says_so(dlt, client_for) -> None:
    key = f"topic/{dlt['dead']}"
    operator = client_for("bob")
    for record, message in (
        ("0:999", "That message is no longer in the topic."),
        ("zero:1", "is not a record (partition:offset)"),
    ):
        response = csrf_post(
            operator, "/brokers/kafka/dead-letters/edit", {"queue": key, "id": record}
        )
        assert response.status_code == 302
        page = operator.get(response["Location"]).content.decode()
        assert html.escape(message) in page
    assert not Job.objects.exists()


def test_a_job_over_ticked_records_reads_only_where_they_lie(dlt, personas, kafka) -> None:
    """Two records of a 40-record topic chosen by id: the job reads from the first to the
    last of them in their partition, and nothing of the other."""
    job = make_job(
        dlt["broker"], personas, source=f"topic/{dlt['dead']}", selection={"ids": ["0:7", "0:4"]}
    )
    assert job.cursor["ranges"] == {"0": [4, 8], "1": [0, 0]}
    job = run(job)
    assert (job.state, job.replayed, job.kept) == ("done", 2, 2)
    assert job.done == 4  # offsets 4 to 7: two chosen, two passed over on the way
    copies = read_all(kafka["bootstrap_servers"], dlt["origin"])
    assert sorted(c.key for c in copies) == [b"k14", b"k8"]
