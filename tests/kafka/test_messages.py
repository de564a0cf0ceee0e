"""Browsing, filtering and publishing a Kafka topic's messages, against the real Kafka-protocol broker."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from brokers.kafka.filters import FilterError, compile_filters, parse_path
from dashboard.models import AuditEntry, Broker
from tests.app_fixtures import closed_port
from tests.kafka_fixtures import read_all

pytestmark = pytest.mark.django_db

RECORD = re.compile(r'data-partition="(\d+)" data-offset="(\d+)"')


def csrf(client) -> str:
    client.get("/")
    return client.cookies["csrftoken"].value


def shown(response) -> list[tuple[int, int]]:
    """(partition, offset) of each record on a browse page, in page order."""
    return [(int(p), int(o)) for p, o in RECORD.findall(response.content.decode())]


@pytest.fixture
def topic(make_topic, unique_name) -> str:
    return make_topic(f"msgs-{unique_name}", partitions=3)


@pytest.fixture
def timed(topic, producer) -> tuple[int, list[Any]]:
    """Nine records, one a second apart in producer time, round-robin over 3 partitions."""
    t0 = int(time.time() * 1000) - 60_000
    futures = [
        producer.send(
            topic,
            json.dumps({"n": i}).encode(),
            key=f"k{i}".encode(),
            partition=i % 3,
            timestamp_ms=t0 + i * 1000,
        )
        for i in range(9)
    ]
    producer.flush()
    return t0, [f.get(timeout=10) for f in futures]


# -- filters, on their own ---------------------------------------------------


def test_json_path_reads_names_indexes_quoted_names_and_literals():
    path = parse_path('$.order.items[1]["unit price"] == 9.5')
    assert path.steps == ("order", "items", 1, "unit price")
    assert path.op == "==" and path.literal == 9.5
    assert parse_path("$.customer.email").op == ""  # the path exists
    assert parse_path('$.a != "x"').literal == "x"
    for bad, says in [
        ("order.id == 1", "starts with $"),
        ("$.order.id = 1", "expected == or !="),
        ("$.order.id == forty", "must be JSON"),
        ("$.items[x]", "must be an index"),
        ("$.items[0", "never closed"),
        ('$.a == {"b": 1}', "not an object or array"),
        ("$..a", "expected a name"),
    ]:
        with pytest.raises(FilterError, match=re.escape(says)):
            parse_path(bad)


class R:
    """A record as filters see it."""

    def __init__(self, value: bytes | None, key: bytes | None = None, headers=()) -> None:
        self.value, self.key, self.headers = value, key, list(headers)


def test_json_path_equality_keeps_json_types_apart():
    def hits(expr: str, *values: bytes) -> list[bytes | None]:
        m = compile_filters({"body": expr, "mode": "json"})
        return [r.value for r in m.select([R(v) for v in values])]

    assert hits("$.ok == true", b'{"ok": true}', b'{"ok": 1}') == [b'{"ok": true}']
    assert hits("$.n == 1", b'{"n": 1.0}', b'{"n": true}', b'{"n": "1"}') == [b'{"n": 1.0}']
    assert hits('$.a[0].b == "x"', b'{"a": [{"b": "x"}]}', b'{"a": []}', b"not json") == [
        b'{"a": [{"b": "x"}]}'
    ]
    # A producer that escapes plain letters is still matched (the raw pre-filter lets it through).
    assert hits('$.name == "bob"', b'{"n\\u0061me": "b\\u006fb"}') == [
        b'{"n\\u0061me": "b\\u006fb"}'
    ]
    assert hits('$.name != "bob"', b'{"name": "eve"}', b'{"name": "bob"}', b"{}") == [
        b'{"name": "eve"}'
    ]
    deep = b"[" * 100_000 + b"]" * 100_000
    assert hits("$[0]", deep) == []  # too deep to parse: no match, no crash


def test_bad_regex_and_unknown_modes_are_refused_with_a_reason():
    with pytest.raises(FilterError, match="regular expression is not valid"):
        compile_filters({"body": "(unclosed", "mode": "regex"})
    with pytest.raises(FilterError, match="mode must be one of"):
        compile_filters({"body": "x", "mode": "xpath"})
    with pytest.raises(FilterError, match="needs the header's name"):
        compile_filters({"header_value": "x"})
    assert compile_filters({}).empty


# -- browsing ----------------------------------------------------------------


def test_newest_messages_are_merged_across_partitions_newest_first(
    kafka_broker, client_for, topic, timed
):
    carol = client_for("carol")  # a viewer: reading Kafka has no side effect
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", {"count": "4"})
    assert page.status_code == 200
    # Records 8, 7, 6, 5 by time: partitions 2, 1, 0, 2.
    assert shown(page) == [(2, 2), (1, 2), (0, 2), (2, 1)]
    assert b'<span class="jkey">n</span>: <span class="jint">8</span>' in page.content
    body = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages", {"count": "2"}).json()
    assert [json.loads(r["value"])["n"] for r in body["records"]] == [8, 7]
    assert body["bounds"] == {"0": [0, 3], "1": [0, 3], "2": [0, 3]}
    assert body["records"][0]["key"] == "k8"
    assert not AuditEntry.objects.exists()  # reading changes nothing, so nothing to audit


def test_reading_from_an_offset_pages_forward(kafka_broker, client_for, topic, produce):
    produce(topic, [f"p1-{i}".encode() for i in range(7)], partition=1)
    carol = client_for("carol")
    url = f"/brokers/kafka/topics/{topic}/messages"
    page = carol.get(url, {"from": "offset", "partition": "1", "offset": "2", "count": "3"})
    assert shown(page) == [(1, 2), (1, 3), (1, 4)]
    nxt = re.search(r'href="(\?[^"]*offset=5[^"]*)"', page.content.decode())
    assert nxt, "a link to the next page"
    page2 = carol.get(url + nxt.group(1).replace("&amp;", "&"))
    assert shown(page2) == [(1, 5), (1, 6)]
    assert "offset=7" not in page2.content.decode()  # the end: no further link


def test_reading_from_a_time_starts_at_the_first_record_at_or_after_it(
    kafka_broker, client_for, topic, timed
):
    t0, _ = timed
    carol = client_for("carol")
    url = f"/api/v1/brokers/kafka/topics/{topic}/messages"
    body = carol.get(url, {"from": "time", "time": str(t0 + 4500), "count": "3"}).json()
    assert [json.loads(r["value"])["n"] for r in body["records"]] == [5, 6, 7]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((t0 + 6000) // 1000))
    body = carol.get(url, {"from": "time", "time": iso, "partition": "0", "count": "5"}).json()
    # Partition 0 holds 0, 3 and 6; the time is 6's, cut to the second.
    assert [json.loads(r["value"])["n"] for r in body["records"]] == [6]
    later = carol.get(url, {"from": "time", "time": str(t0 + 3_600_000)}).json()
    assert later["records"] == []


def test_reads_reach_the_high_watermark_when_list_offsets_falls_short(
    kafka_broker, client_for, make_topic, unique_name, kafka
):
    """Tansu answers ListOffsets(latest) with the last batch's base offset + 1."""
    topic = make_topic(f"batched-{unique_name}")
    producer = KafkaProducer(
        bootstrap_servers=kafka["bootstrap_servers"], linger_ms=200, batch_size=1 << 20
    )
    for i in range(30):
        producer.send(topic, f"b{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    carol = client_for("carol")
    body = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages", {"count": "3"}).json()
    assert body["bounds"] == {"0": [0, 30]}
    assert [r["offset"] for r in body["records"]] == [29, 28, 27]
    tail = carol.get(
        f"/api/v1/brokers/kafka/topics/{topic}/messages",
        {"from": "offset", "offset": "25", "count": "10"},
    ).json()
    assert [r["value"] for r in tail["records"]] == [f"b{i}" for i in range(25, 30)]


def test_filters_by_key_header_and_body(kafka_broker, client_for, topic, produce):
    produce(topic, [b'{"order": {"id": 41}}'], partition=0, key=b"order-41")
    produce(
        topic,
        [b'{"order": {"id": 42}}'],
        partition=1,
        key=b"order-42",
        headers=[("tenant", b"acme")],
    )
    produce(topic, [b"plain text ERROR 17"], partition=2, key=b"log", headers=[("tenant", b"zen")])
    carol = client_for("carol")
    url = f"/api/v1/brokers/kafka/topics/{topic}/messages"

    def keys(**params: str) -> list[str]:
        body = carol.get(url, {"count": "10", **params}).json()
        assert "error" not in body, body
        return sorted(r["key"] for r in body["records"])

    assert keys(key="order") == ["order-41", "order-42"]
    assert keys(key="order-4", key_mode="exact") == []
    assert keys(key="log", key_mode="exact") == ["log"]
    assert keys(header="tenant") == ["log", "order-42"]
    assert keys(header="tenant", header_value="acme") == ["order-42"]
    assert keys(body="ERROR") == ["log"]
    assert keys(body=r"ERROR \d+$", mode="regex") == ["log"]
    assert keys(body="$.order.id == 42", mode="json") == ["order-42"]
    assert keys(body="$.order.id", mode="json") == ["order-41", "order-42"]
    assert keys(key="order", body="$.order.id != 42", mode="json") == ["order-41"]
    page = carol.get(
        f"/brokers/kafka/topics/{topic}/messages",
        {"body": "$.order.id == 42", "mode": "json"},
    )
    assert shown(page) == [(1, 0)]
    assert b"Looked at 3 messages" in page.content
    assert b"Search the whole topic" in page.content


def test_a_bad_filter_is_a_clear_error(kafka_broker, client_for, topic, produce):
    produce(topic, 1, partition=0)
    carol = client_for("carol")
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", {"body": "(", "mode": "regex"})
    assert page.status_code == 400
    assert b"regular expression is not valid" in page.content
    api_resp = carol.get(
        f"/api/v1/brokers/kafka/topics/{topic}/messages", {"body": "order.id == 1", "mode": "json"}
    )
    assert api_resp.status_code == 400
    assert "starts with $" in api_resp.json()["error"]


def test_an_offset_out_of_range_says_what_the_partition_holds(
    kafka_broker, client_for, topic, produce
):
    produce(topic, 42, partition=0)
    carol = client_for("carol")
    page = carol.get(
        f"/brokers/kafka/topics/{topic}/messages",
        {"from": "offset", "partition": "0", "offset": "500"},
    )
    assert page.status_code == 400
    assert b"partition 0 holds offsets 0 to 41; 500 is out of range" in page.content
    empty = carol.get(
        f"/api/v1/brokers/kafka/topics/{topic}/messages",
        {"from": "offset", "partition": "1", "offset": "3"},
    )
    assert empty.status_code == 400
    assert "partition 1 is empty" in empty.json()["error"]
    at_end = carol.get(
        f"/api/v1/brokers/kafka/topics/{topic}/messages",
        {"from": "offset", "partition": "0", "offset": "42"},
    )
    assert at_end.status_code == 200 and at_end.json()["records"] == []
    bad = carol.get(f"/brokers/kafka/topics/{topic}/messages", {"from": "offset", "offset": "-1"})
    assert bad.status_code == 400 and b"offset must be from 0" in bad.content


def test_unknown_topic_and_partition_are_clear_errors(kafka_broker, client_for, topic, unique_name):
    carol = client_for("carol")
    missing = carol.get(f"/brokers/kafka/topics/nope-{unique_name}/messages")
    assert missing.status_code == 404
    assert f"no topic &#x27;nope-{unique_name}&#x27;".encode() in missing.content
    part = carol.get(
        f"/api/v1/brokers/kafka/topics/{topic}/messages", {"from": "offset", "partition": "7"}
    )
    assert part.status_code == 404
    assert part.json()["error"] == f"topic {topic!r} has partitions 0 to 2; there is no partition 7"
    odd = carol.get("/brokers/kafka/topics/a%20b%3Cscript%3E/messages")
    assert odd.status_code == 404
    assert b"<script>" not in odd.content
    Broker.objects.create(name="rabbit", kind="rabbitmq", options={"management_url": "http://x"})
    assert carol.get(f"/brokers/rabbit/topics/{topic}/messages").status_code == 404
    assert carol.get(f"/brokers/rabbit/topics/{topic}/search").status_code == 404


def test_an_unreachable_cluster_is_an_error_state_not_a_crash(db, client_for, settings):
    settings.SLUICE_BROKER_TIMEOUT = 1
    Broker.objects.create(
        name="gone", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
    )
    carol = client_for("carol")
    page = carol.get("/brokers/gone/topics/orders/messages")
    assert page.status_code == 200
    assert b"The cluster cannot be read now" in page.content
    assert b"connection refused" in page.content
    body = carol.get("/api/v1/brokers/gone/topics/orders/messages")
    assert body.status_code == 502
    assert "connection refused" in body.json()["error"]


def test_a_long_value_is_cut_and_downloads_whole(
    kafka_broker, client_for, topic, produce, settings
):
    settings.SLUICE_BODY_LIMIT = 1024
    value = b"<b>" + bytes(range(256)) * 20  # binary, past the limit
    produce(topic, [value], partition=2)
    carol = client_for("carol")
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", {"count": "1"})
    assert b"first 1.0 KiB of 5.0 KiB" in page.content
    assert b"Binary: not valid UTF-8" in page.content
    got = carol.get(f"/brokers/kafka/topics/{topic}/body", {"partition": "2", "offset": "0"})
    assert got.status_code == 200
    assert got["Content-Disposition"].startswith("attachment")
    assert got.content == value
    assert (
        carol.get(
            f"/brokers/kafka/topics/{topic}/body", {"partition": "2", "offset": "9"}
        ).status_code
        == 404
    )
    assert carol.get(f"/brokers/kafka/topics/{topic}/body", {"partition": "x"}).status_code == 400


def test_keys_headers_and_values_show_as_text_hex_or_json_escaped(
    kafka_broker, client_for, topic, produce
):
    produce(
        topic,
        [b'{"html": "<script>alert(1)</script>", "list": [1, {"deep": null}]}'],
        partition=0,
        key=b"\xff\xfe<key>",
        headers=[
            ("<h>", b"<img src=x onerror=alert(1)>"),
            ("bin", b"\x00\xff"),
            ("h", b"1"),
            ("h", b"2"),
        ],
    )
    carol = client_for("carol")
    html = carol.get(f"/brokers/kafka/topics/{topic}/messages").content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "ff fe 3c 6b 65 79 3e" in html  # the key is not UTF-8: hex
    assert "00 ff" in html
    assert 'class="json-tree"' in html and '<span class="jkey">deep</span>' in html
    body = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages").json()["records"][0]
    assert body["key"] is None and base64.b64decode(body["key_base64"]) == b"\xff\xfe<key>"
    assert [h["name"] for h in body["headers"]] == [
        "<h>",
        "bin",
        "h",
        "h",
    ]  # order and repeats kept


# -- publishing --------------------------------------------------------------


def test_an_operator_publishes_and_sees_where_it_landed(kafka_broker, client_for, topic, kafka):
    bob = client_for("bob")
    form = bob.get("/brokers/kafka/publish/", {"topic": topic})
    assert form.status_code == 200 and f'value="{topic}"'.encode() in form.content
    page = bob.post(
        "/brokers/kafka/publish/",
        {
            "topic": topic,
            "key": "order-7",
            "partition": "2",
            "headers": '{"tenant": "acme"}',
            "body_kind": "json",
            "body": '{"id": 7}',
        },
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert page.status_code == 200, page.content[:500]
    text = page.content.decode()
    found = re.search(r"partition <strong>(\d+)</strong> .* offset <strong>(\d+)</strong>", text)
    assert found and found.groups() == ("2", "0")
    [record] = read_all(kafka["bootstrap_servers"], topic)
    assert (record.partition, record.offset, record.key, record.value) == (
        2,
        0,
        b"order-7",
        b'{"id": 7}',
    )
    assert record.headers == [("tenant", b"acme")]
    entry = AuditEntry.objects.get(action="message.publish")
    assert (entry.user, entry.destination, entry.result) == ("bob", f"topic/{topic}", "ok")
    assert entry.detail["partition"] == 2 and entry.detail["offset"] == 0


def test_the_api_publishes_base64_with_repeated_headers(kafka_broker, client_for, topic, kafka):
    bob = client_for("bob")
    raw = b"\x00\x01binary\xff"
    response = bob.post(
        "/api/v1/brokers/kafka/publish",
        data=json.dumps(
            {
                "topic": topic,
                "key": "k",
                "headers": [["h", "1"], ["h", "2"]],
                "body_kind": "base64",
                "body": base64.b64encode(raw).decode(),
            }
        ),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert response.status_code == 200, response.content
    out = response.json()
    assert out["confirmed"] is True and out["topic"] == topic
    consumer = KafkaConsumer(bootstrap_servers=kafka["bootstrap_servers"], enable_auto_commit=False)
    tp = TopicPartition(topic, out["partition"])
    consumer.assign([tp])
    consumer.seek(tp, out["offset"])
    got = consumer.poll(5000).get(tp, [])
    consumer.close()
    assert got and got[0].value == raw and got[0].headers == [("h", b"1"), ("h", b"2")]
    # The same key goes to the same partition.
    again = bob.post(
        "/api/v1/brokers/kafka/publish",
        data=json.dumps({"topic": topic, "key": "k", "body": "x"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf(bob),
    ).json()
    assert again["partition"] == out["partition"] and again["offset"] == out["offset"] + 1


@pytest.mark.parametrize(
    "change,status,says",
    [
        ({"body_kind": "json", "body": "{nope"}, 400, "not valid JSON"),
        ({"body_kind": "base64", "body": "@@@"}, 400, "not valid base64"),
        ({"topic": "missing-topic-zz"}, 404, "no topic 'missing-topic-zz'"),
        ({"partition": 3}, 404, "there is no partition 3"),
        ({"partition": -1}, 400, "partition must be 0 or more"),
        ({"headers": {"h": 1}}, 400, "must have a text value"),
        ({"topic": "bad name!"}, 400, "topic must be a Kafka topic name"),
        ({"body": "x" * (10 * 1024 * 1024 + 1)}, 400, "takes at most 1,048,588"),
    ],
)
def test_bad_publishes_are_refused_and_send_nothing(
    kafka_broker, client_for, topic, kafka, change, status, says
):
    bob = client_for("bob")
    data = {"topic": topic, "body": "hello", **change}
    response = bob.post(
        "/api/v1/brokers/kafka/publish",
        data=json.dumps(data),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert response.status_code == status, response.content[:300]
    assert says in response.json()["error"]
    assert read_all(kafka["bootstrap_servers"], topic, timeout=1.5) == []


def test_the_publish_page_shows_a_refusal(kafka_broker, client_for, topic, kafka):
    bob = client_for("bob")
    page = bob.post(
        "/brokers/kafka/publish/",
        {"topic": topic, "body": "x" * (2 * 1024 * 1024)},
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert page.status_code == 400
    assert b"Not sent: the record is 2,097,152 bytes" in page.content
    assert read_all(kafka["bootstrap_servers"], topic, timeout=1.5) == []
    entry = AuditEntry.objects.get(action="message.publish")
    assert entry.result == "failed"


# -- who may do what ---------------------------------------------------------


def test_who_may_browse_and_publish(kafka_broker, client_for, topic, produce, kafka):
    produce(topic, 1, partition=0)
    url = f"/brokers/kafka/topics/{topic}/messages"
    anonymous = client_for(None)
    assert anonymous.get(url).status_code == 302
    assert "/login/" in anonymous.get(url)["Location"]
    assert anonymous.get(f"/api/v1/brokers/kafka/topics/{topic}/messages").status_code == 401
    assert (
        anonymous.get(f"/brokers/kafka/topics/{topic}/body?partition=0&offset=0").status_code == 302
    )
    assert client_for("dave").get(url).status_code == 403  # signed in, no role
    carol = client_for("carol")
    assert carol.get(url).status_code == 200
    assert carol.get(f"/brokers/kafka/topics/{topic}/body?partition=0&offset=0").status_code == 200
    publish = {"topic": topic, "body": "from carol"}
    assert carol.get("/brokers/kafka/publish/").status_code == 200  # the form, without a button
    assert (
        carol.post("/brokers/kafka/publish/", publish, HTTP_X_CSRFTOKEN=csrf(carol)).status_code
        == 403
    )
    refused = carol.post(
        "/api/v1/brokers/kafka/publish",
        data=json.dumps(publish),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf(carol),
    )
    assert refused.status_code == 403
    bob = client_for("bob")
    assert bob.post("/brokers/kafka/publish/", publish).status_code == 403  # no CSRF token
    assert (
        bob.post(
            "/api/v1/brokers/kafka/publish",
            data=json.dumps(publish),
            content_type="application/json",
        ).status_code
        == 403
    )
    assert len(read_all(kafka["bootstrap_servers"], topic, timeout=1.5)) == 1  # only the first
    assert not AuditEntry.objects.filter(action="message.publish").exists()


def test_re_produce_fills_the_form_with_a_copy_of_a_record(
    kafka_broker, client_for, make_topic, produce, unique_name, kafka
):
    """Reprocessing one record: the form holds its key, text headers and value; it can
    go to another topic, byte for byte, and the audit names the source."""
    source = make_topic(f"src-{unique_name}")
    target = make_topic(f"dst-{unique_name}")
    value = b'\r\n{"id": 9,\r\n "note": "<b>bold</b>"}'  # CRLF only, one leading
    produce(
        source,
        [value],
        key=b"order-9",
        headers=[("tenant", b"acme"), ("tenant", b"beta"), ("blob", b"\xff\x00")],
    )
    mixed = b"one\r\ntwo\nthree"
    produce(source, [mixed])
    bob = client_for("bob")
    page = bob.get("/brokers/kafka/publish/", {"topic": source, "from": "0:0"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "A copy of the record at offset 0 of partition 0 of" in text
    assert "Not copied: header &#x27;blob&#x27; is binary or null." in text
    assert 'name="key" value="order-9"' in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold" not in text  # shown inert
    assert '<input type="hidden" name="body_crlf" value="1">' in text
    assert 'class="button reproduce"' in (
        bob.get(f"/brokers/kafka/topics/{source}/messages", {"count": "5"}).content.decode()
    )
    # Line breaks of both kinds cannot survive a textarea: that copy comes as base64.
    other = bob.get("/brokers/kafka/publish/", {"topic": source, "from": "0:1"}).content.decode()
    assert base64.b64encode(mixed).decode() in other
    assert '<option value="base64" selected>' in other

    # What a browser sends back: the fields as shown, the textarea's line breaks as CRLF.
    sent = bob.post(
        "/brokers/kafka/publish/",
        {
            "topic": target,
            "key": "order-9",
            "headers": json.dumps([["tenant", "acme"], ["tenant", "beta"]]),
            "body_kind": "text",
            "body": value.decode(),
            "body_crlf": "1",
            "from": "0:0",
            "from_topic": source,
        },
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert sent.status_code == 200, sent.content[:500]
    [copy] = read_all(kafka["bootstrap_servers"], target)
    assert (copy.key, copy.value) == (b"order-9", value)
    assert copy.headers == [("tenant", b"acme"), ("tenant", b"beta")]
    entry = AuditEntry.objects.get(action="message.publish")
    assert entry.detail["copied_from"] == f"{source} 0:0"
    assert len(read_all(kafka["bootstrap_servers"], source)) == 2  # the source is untouched

    # A body typed into the form without that mark: CRLF goes back to LF.
    bob.post(
        "/brokers/kafka/publish/",
        {"topic": target, "body_kind": "text", "body": "a\r\nb"},
        HTTP_X_CSRFTOKEN=csrf(bob),
    )
    assert [r.value for r in read_all(kafka["bootstrap_servers"], target)][-1] == b"a\nb"

    for params, status, says in (
        ({"topic": source, "from": "0:5"}, 404, "There is no record at offset 5 of partition 0"),
        ({"topic": source, "from": "zero"}, 400, "from must be partition:offset"),
        ({"topic": source, "from": "7:0"}, 404, "partition"),
    ):
        refused = bob.get("/brokers/kafka/publish/", params)
        assert refused.status_code == status, (params, refused.status_code)
        assert says in refused.content.decode()
    viewer = client_for("carol")
    shown_to_viewer = viewer.get("/brokers/kafka/publish/", {"topic": source, "from": "0:0"})
    assert shown_to_viewer.status_code == 200
    assert "Publishing needs the operator role" in shown_to_viewer.content.decode()
