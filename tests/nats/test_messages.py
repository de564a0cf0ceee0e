"""NATS messages against the real nats-server: browse streams, publish, request/reply, who may."""

from __future__ import annotations

import base64
import html
import json
import re
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import RetentionPolicy

from brokers.nats.client import NatsClient
from tests.app_fixtures import closed_port

pytestmark = pytest.mark.django_db

SEQ = re.compile(r'<article class="card message nats-msg" data-seq="(\d+)">')


# -- helpers ---------------------------------------------------------------------


def raw_publish(
    url: str, subject: str, headers: list[tuple[bytes, bytes]], body: bytes, reply: str = ""
) -> None:
    """HPUB on a socket of its own: header names and values as bytes, repeated names,
    invalid UTF-8; none of which nats-py would send."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    block = b"NATS/1.0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    head = f"HPUB {subject} {reply} {len(block)} {len(block) + len(body)}\r\n".replace("  ", " ")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        s.sendall(head.encode() + block + body + b"\r\nPING\r\n")
        got = b""
        while b"PONG" not in got:
            got += s.recv(4096)
        assert b"-ERR" not in got, got


class Pub:
    """One nats-py connection for a test's JetStream publishes."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.nc = js.connect()
        self.ctx = self.nc.jetstream()

    def __call__(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        ack = self.js.run(self.ctx.publish(subject, body, headers=headers))
        return int(ack.seq)

    def info(self, stream: str) -> Any:
        return self.js.run(self.ctx.stream_info(stream))


@pytest.fixture
def pub(js: Any) -> Pub:
    return Pub(js)


@pytest.fixture
def stream(js: Any, unique_name: str) -> str:
    """A stream S<unique> on <unique>.> with direct gets allowed."""
    name = f"S{unique_name}"
    js.add_stream(name, [f"{unique_name}.>"], allow_direct=True)
    return name


def seqs(response: Any) -> list[int]:
    return [int(s) for s in SEQ.findall(response.content.decode())]


def page_text(response: Any) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode()))


# -- browsing --------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["direct-get", "message-get"])
def test_viewer_browses_by_sequence_and_pages_both_ways(
    client_for, nats_broker, js, pub, unique_name, direct
):
    name = f"S{unique_name}"
    js.add_stream(name, [f"{unique_name}.>"], allow_direct=direct)
    for i in range(1, 42):
        pub(f"{unique_name}.o{i % 3}", f"body-{i}".encode())
    carol = client_for("carol")
    url = f"/brokers/nats/streams/{name}/messages"

    first = carol.get(url, {"count": 10})
    assert first.status_code == 200
    assert seqs(first) == list(range(1, 11))
    text = first.content.decode()
    assert "body-1<" in text and f"{unique_name}.o1" in text
    assert f"Stream {name} holds 1 to 41" in page_text(first)
    assert "Previous" not in text
    assert "from=seq&amp;seq=11" in text

    second = carol.get(url, {"from": "seq", "seq": 11, "count": 10})
    assert seqs(second) == list(range(11, 21))
    assert "from=before&amp;seq=11" in second.content.decode()
    back = carol.get(url, {"from": "before", "seq": 11, "count": 10})
    assert seqs(back) == list(range(1, 11))

    newest = carol.get(url, {"from": "newest", "count": 10})
    assert seqs(newest) == list(range(32, 42))
    assert "Next" not in newest.content.decode()


def test_browse_by_time_finds_the_first_message_at_or_after_it(
    client_for, nats_broker, stream, pub, unique_name
):
    for i in range(5):
        pub(f"{unique_name}.early", f"early-{i}".encode())
    time.sleep(0.05)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    for i in range(3):
        pub(f"{unique_name}.late", f"late-{i}".encode())
    carol = client_for("carol")
    url = f"/brokers/nats/streams/{stream}/messages"
    response = carol.get(url, {"from": "time", "time": cut.isoformat(), "count": 10})
    assert seqs(response) == [6, 7, 8]
    # Unix milliseconds work too, and a time after the last message says so.
    later = carol.get(url, {"from": "time", "time": str(int(time.time() * 1000) + 60_000)})
    assert seqs(later) == []
    assert "No message at or after" in page_text(later)
    bad = carol.get(url, {"from": "time", "time": "yesterday"})
    assert bad.status_code == 400 and "time must be like" in page_text(bad)


def test_subject_filters_with_wildcards(client_for, nats_broker, stream, pub, unique_name):
    subjects = ["eu.created", "us.created", "eu.paid", "eu.created", "us.paid"]
    for i, s in enumerate(subjects):
        pub(f"{unique_name}.{s}", f"m{i}".encode())
    carol = client_for("carol")
    url = f"/brokers/nats/streams/{stream}/messages"

    def read(subject: str, **extra: Any) -> list[int]:
        response = carol.get(url, {"subject": subject, **extra})
        assert response.status_code == 200, page_text(response)
        return seqs(response)

    assert read(f"{unique_name}.eu.*") == [1, 3, 4]
    assert read(f"{unique_name}.*.created") == [1, 2, 4]
    assert read(f"{unique_name}.>") == [1, 2, 3, 4, 5]
    assert read(f"{unique_name}.us.paid") == [5]
    assert read(f"{unique_name}.eu.*", **{"from": "newest", "count": "2"}) == [3, 4]
    # Paging keeps the filter: page 1 of eu.* is [1], the next starts at 3.
    one = carol.get(url, {"subject": f"{unique_name}.eu.*", "count": 1})
    assert "from=seq&amp;seq=3" in one.content.decode()
    assert f"subject={unique_name}.eu.%2A" in one.content.decode()
    nothing = carol.get(url, {"subject": f"{unique_name}.asia.*"})
    assert seqs(nothing) == [] and "No message on" in page_text(nothing)
    for bad in ("a..b", "a b", "a.>.b", ".a"):
        response = carol.get(url, {"subject": bad})
        assert response.status_code == 400, bad
        assert "subject filter" in page_text(response)


def test_browsing_a_work_queue_stream_changes_nothing(
    client_for, nats_broker, js, pub, unique_name
):
    name = f"WQ{unique_name}"
    js.add_stream(
        name, [f"{unique_name}.>"], retention=RetentionPolicy.WORK_QUEUE, allow_direct=True
    )
    js.add_consumer(name, "worker", ack_policy="explicit")
    for i in range(6):
        pub(f"{unique_name}.job", f"job-{i}".encode())

    def state() -> tuple[Any, ...]:
        info = pub.info(name)
        c = js.run(pub.ctx.consumer_info(name, "worker"))
        return (
            info.state.messages,
            info.state.first_seq,
            info.state.consumer_count,
            c.num_pending,
            c.num_ack_pending,
            c.delivered.stream_seq,
            c.ack_floor.stream_seq,
        )

    consumers = lambda: sorted(c.name for c in js.run(pub.ctx.consumers_info(name)))  # noqa: E731
    before, named = state(), consumers()
    carol = client_for("carol")
    for params in ({}, {"from": "newest"}, {"from": "before", "seq": 5}, {"subject": "x.>"}):
        assert carol.get(f"/brokers/nats/streams/{name}/messages", params).status_code == 200
    assert seqs(carol.get(f"/brokers/nats/streams/{name}/messages")) == [1, 2, 3, 4, 5, 6]
    assert carol.get(f"/brokers/nats/streams/{name}/body", {"seq": 2}).content == b"job-1"
    assert carol.get(f"/api/v1/brokers/nats/streams/{name}/messages").status_code == 200
    assert state() == before == (6, 1, 1, 6, 0, 0, 0)
    assert consumers() == named == ["worker"]
    # And the work is all still there for the real worker.
    assert js.fetch(name, "worker", 10) == 6


def test_errors_say_what_is_wrong(client_for, nats_broker, stream, pub, unique_name):
    for i in range(41):
        pub(f"{unique_name}.o", f"m{i}".encode())
    js_delete = NatsClient({"url": nats_broker.options["url"]})
    js_delete.delete_msg(stream, 7)
    js_delete.close()
    carol = client_for("carol")
    url = f"/brokers/nats/streams/{stream}/messages"

    beyond = carol.get(url, {"seq": 500})
    assert beyond.status_code == 400
    assert f"Stream {stream} holds 1 to 41; 500 is beyond the last" in page_text(beyond)

    unknown = carol.get("/brokers/nats/streams/nope-stream/messages")
    assert unknown.status_code == 404
    assert "There is no stream 'nope-stream'" in page_text(unknown)
    assert carol.get("/brokers/nats/streams/a.b/messages").status_code == 404

    from_deleted = carol.get(url, {"seq": 7, "count": 2})
    assert seqs(from_deleted) == [8, 9]
    assert "7 is no longer in the stream; showing from 8." in page_text(from_deleted)

    gone = carol.get(f"/brokers/nats/streams/{stream}/body", {"seq": 7})
    assert gone.status_code == 404
    assert gone.content.decode() == f"Message 7 is no longer in the stream {stream}"
    api = carol.get(f"/api/v1/brokers/nats/streams/{stream}/messages/7")
    assert api.status_code == 404 and "no longer in the stream" in api.json()["error"]
    api = carol.get(f"/api/v1/brokers/nats/streams/{stream}/messages/500")
    assert api.status_code == 400 and "500 is beyond the last" in api.json()["error"]
    for params in ({"count": 0}, {"count": 201}, {"seq": "x"}, {"from": "sideways"}):
        assert carol.get(url, params).status_code == 400, params


def test_an_unreachable_server_and_one_without_jetstream_are_explained(
    client_for, nats_broker, private_nats, settings
):
    from dashboard.models import Broker

    settings.SLUICE_BROKER_TIMEOUT = 1
    port = closed_port()
    Broker.objects.create(
        name="gone",
        kind="nats",
        options={"url": f"nats://127.0.0.1:{port}", "monitoring_url": "http://127.0.0.1:1"},
    )
    plain = private_nats()  # no JetStream
    Broker.objects.create(
        name="plain",
        kind="nats",
        options={"url": plain.url, "monitoring_url": plain.monitoring_url},
    )
    Broker.objects.create(name="nourl", kind="nats", options={"monitoring_url": "http://x"})
    carol = client_for("carol")
    began = time.monotonic()
    gone = carol.get("/brokers/gone/streams/orders/messages")
    assert time.monotonic() - began < 5
    assert gone.status_code == 200
    assert f"cannot reach nats://127.0.0.1:{port}: connection refused" in page_text(gone)
    plain_page = carol.get("/brokers/plain/streams/orders/messages")
    assert "JetStream is not enabled on" in page_text(plain_page)
    nourl = carol.get("/brokers/nourl/streams/orders/messages")
    assert "has no client URL" in page_text(nourl)
    api = carol.get("/api/v1/brokers/gone/streams/orders/messages")
    assert api.status_code == 502 and "connection refused" in api.json()["error"]


def test_headers_multi_valued_and_big_bodies_cut_with_a_download(
    client_for, nats_broker, stream, unique_name, settings, pub
):
    settings.SLUICE_BODY_LIMIT = 1024
    url = nats_broker.options["url"]
    big = b"<b>" + b"x" * 5000
    raw_publish(
        url, f"{unique_name}.big", [(b"Tag", b"a"), (b"Tag", b"<b>"), (b"Bin", b"\xff\x00")], big
    )
    pub(f"{unique_name}.json", b'{"order": {"id": 42, "lines": [1, 2]}}')
    carol = client_for("carol")
    deadline = time.monotonic() + 5
    while pub.info(stream).state.messages < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    response = carol.get(f"/brokers/nats/streams/{stream}/messages")
    text = response.content.decode()
    assert seqs(response) == [1, 2]
    first = text[text.index('data-seq="1"') : text.index('data-seq="2"')]
    assert re.findall(r'<td class="mono">(Tag|Bin)</td>', first) == ["Tag", "Tag", "Bin"]
    assert '<span class="mono">&lt;b&gt;</span>' in first  # the second Tag value, escaped
    assert "<b>" not in first
    assert "ff 00" in first  # a binary header value as hex
    assert "first 1.0 KiB of 4.9 KiB" in first
    assert f"/brokers/nats/streams/{stream}/body?seq=1" in first
    download = carol.get(f"/brokers/nats/streams/{stream}/body", {"seq": 1})
    assert download.content == big
    assert download["Content-Disposition"] == f"attachment; filename*=UTF-8''{stream}-1.bin"
    assert '<span class="jkey">order</span>' in text  # JSON shown as an outline
    api = carol.get(f"/api/v1/brokers/nats/streams/{stream}/messages").json()
    assert api["first_seq"] == 1 and api["last_seq"] == 2
    m1 = api["messages"][0]
    assert [h["name"] for h in m1["headers"]] == ["Tag", "Tag", "Bin"]
    assert m1["headers"][2]["value"] is None and m1["headers"][2]["value_base64"] == "/wA="
    assert m1["size"] == len(big) and m1["truncated"] and len(m1["body"]) == 1024
    whole = carol.get(f"/api/v1/brokers/nats/streams/{stream}/messages/1").json()
    assert base64.b64decode(whole["body_base64"]) == big and not whole["truncated"]


# -- publishing --------------------------------------------------------------------


def test_operator_publishes_through_jetstream_and_reads_it_back(
    client_for, nats_broker, stream, pub, unique_name
):
    from dashboard.models import AuditEntry

    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")  # sets the CSRF cookie
    token = bob.cookies["csrftoken"].value
    response = bob.post(
        "/brokers/nats/nats/publish/",
        {
            "subject": f"{unique_name}.eu.created",
            "headers": '{"tenant": "acme", "tag": ["a", "b"]}',
            "body": '{"id": 7}',
            "body_kind": "json",
            "mode": "jetstream",
            "csrfmiddlewaretoken": token,
        },
    )
    assert response.status_code == 200, page_text(response)
    assert re.search(rf"Stored: stream\s+{stream}\s*, sequence\s+1\b", page_text(response))
    stored = pub.js.run(pub.ctx.get_msg(stream, 1))
    assert stored.data == b'{"id": 7}' and stored.subject == f"{unique_name}.eu.created"
    check = NatsClient({"url": nats_broker.options["url"]})
    checked = check.get(stream, 1)
    assert checked is not None
    assert checked.headers == (("tenant", b"acme"), ("tag", b"a"), ("tag", b"b"))
    check.close()
    entry = AuditEntry.objects.get(action="message.publish")
    assert (entry.user, entry.result, entry.destination) == (
        "bob",
        "ok",
        f"subject/{unique_name}.eu.created",
    )
    assert entry.detail["stream"] == stream and entry.detail["seq"] == 1

    # The API alike, with base64.
    api = bob.post(
        "/api/v1/brokers/nats/nats/publish",
        json.dumps({"subject": f"{unique_name}.x", "body": "AAH/", "body_kind": "base64"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert api.status_code == 200, api.content
    assert api.json() == {
        "subject": f"{unique_name}.x",
        "jetstream": True,
        "confirmed": True,
        "stream": stream,
        "seq": 2,
        "duplicate": False,
    }
    assert pub.js.run(pub.ctx.get_msg(stream, 2)).data == b"\x00\x01\xff"


def test_core_publish_reaches_a_subscriber_without_acknowledgement(
    client_for, nats_broker, js, unique_name
):
    nc = js.connect()
    sub = js.run(nc.subscribe(f"{unique_name}.>"))
    js.run(nc.flush())
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")
    response = bob.post(
        "/brokers/nats/nats/publish/",
        {
            "subject": f"{unique_name}.ping",
            "headers": '[["h", "1"], ["h", "2"]]',
            "body": "hello <core>",
            "mode": "core",
            "csrfmiddlewaretoken": bob.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 200
    assert "Published to" in page_text(response)
    assert "core NATS gives no acknowledgement" in page_text(response)
    msg = js.run(sub.next_msg(timeout=5))
    assert (msg.subject, msg.data) == (f"{unique_name}.ping", b"hello <core>")


def test_no_stream_listens_and_nothing_is_stored(client_for, nats_broker, js, unique_name):
    from dashboard.models import AuditEntry

    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")
    response = bob.post(
        "/brokers/nats/nats/publish/",
        {
            "subject": f"{unique_name}.orders.x",
            "body": "b",
            "mode": "jetstream",
            "csrfmiddlewaretoken": bob.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 404
    assert f"no stream listens on {unique_name}.orders.x" in page_text(response)
    assert AuditEntry.objects.get(action="message.publish").result == "failed"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("subject", "a b", "cannot contain spaces"),
        ("subject", "a..b", "empty token"),
        ("subject", ".a", "empty token"),
        ("subject", "a.", "empty token"),
        ("subject", "a.*", "has a wildcard"),
        ("subject", "a.*.b", "has a wildcard"),
        ("subject", "a.>", "has a wildcard"),
        ("subject", "", "the subject is empty"),
        ("subject", "a\r\nPUB x 1", "cannot contain spaces or control"),
        ("subject", "$JS.API.STREAM.DELETE.X", "$JS. subjects are NATS's own"),
        ("headers", '{"bad name": "v"}', "header name 'bad name'"),
        ("headers", '{"h": "a\\r\\nb"}', "cannot hold a line break"),
        ("headers", '{"Nats-Rollup": "all"}', "would purge"),
        ("headers", "not json", "headers must be JSON"),
        ("body", "%%%", "not valid base64"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_sent(
    client_for, nats_broker, js, stream, unique_name, field, value, message
):
    from dashboard.models import AuditEntry

    nc = js.connect()
    sub = js.run(nc.subscribe(">"))
    js.run(nc.flush())
    data = {"subject": f"{unique_name}.ok", "body": "x", "mode": "core", field: value}
    if field == "body":
        data["body_kind"] = "base64"
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")
    token = bob.cookies["csrftoken"].value
    page = bob.post("/brokers/nats/nats/publish/", {**data, "csrfmiddlewaretoken": token})
    assert page.status_code == 400
    assert message in page_text(page)
    api = bob.post(
        "/api/v1/brokers/nats/nats/request",
        json.dumps(data),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert api.status_code == 400 and message in api.json()["error"]
    time.sleep(0.2)
    seen = []
    while True:
        try:
            seen.append(js.run(sub.next_msg(timeout=0.05)).subject)
        except NatsTimeout:
            break
    ours = [s for s in seen if not s.startswith(("_INBOX.", "$JS."))]
    assert ours == []
    assert not AuditEntry.objects.exists()


def test_a_body_beyond_max_payload_is_refused(client_for, nats_broker, js, unique_name):
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")
    response = bob.post(
        "/api/v1/brokers/nats/nats/publish",
        json.dumps({"subject": f"{unique_name}.big", "body": "x" * (1024 * 1024 + 1)}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert response.status_code == 400
    assert "this server takes at most 1,048,576 (max_payload)" in response.json()["error"]


def test_unusual_tokens_publish_and_browse(client_for, nats_broker, stream, unique_name):
    subject = f"{unique_name}.ünï.<b>.$x.a-b_c.%2F.a/b"
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/publish/")
    response = bob.post(
        "/api/v1/brokers/nats/nats/publish",
        json.dumps({"subject": subject, "body": "odd"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert response.status_code == 200 and response.json()["seq"] == 1
    page = bob.get(f"/brokers/nats/streams/{stream}/messages", {"subject": subject})
    assert seqs(page) == [1]
    assert html.escape(subject, quote=False) in page.content.decode()
    wild = bob.get(
        f"/brokers/nats/streams/{stream}/messages", {"subject": f"{unique_name}.ünï.*.>"}
    )
    assert seqs(wild) == [1]


# -- request/reply -------------------------------------------------------------------


def responder(js: Any, subject: str, answer: bool = True) -> Any:
    """A service on `subject` that replies with headers and the request echoed, hostile bits included."""
    nc = js.connect()

    async def serve(msg: Any) -> None:
        if answer:
            await msg.respond(b"<img src=x onerror=alert(1)> echo: " + msg.data)

    async def go() -> None:
        await nc.subscribe(subject, cb=serve)
        await nc.flush()

    js.run(go())
    return nc


def test_request_reply_with_a_real_responder(client_for, nats_broker, js, unique_name):
    from dashboard.models import AuditEntry

    responder(js, f"{unique_name}.svc")
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/request/")
    token = bob.cookies["csrftoken"].value
    response = bob.post(
        "/brokers/nats/nats/request/",
        {
            "subject": f"{unique_name}.svc",
            "body": "ping",
            "headers": '{"x": "1"}',
            "timeout": "2",
            "csrfmiddlewaretoken": token,
        },
    )
    assert response.status_code == 200, page_text(response)
    text = response.content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt; echo: ping" in text
    assert "<img" not in text
    shown = re.search(r'class="nats-latency" data-ms="([\d.]+)"', text)
    assert shown is not None, text
    latency = float(shown.group(1))
    assert 0 < latency < 2000
    assert "request carries a reply subject" in text
    entry = AuditEntry.objects.get(action="message.request")
    assert entry.result == "ok" and entry.detail["latency_ms"] > 0

    api = bob.post(
        "/api/v1/brokers/nats/nats/request",
        json.dumps({"subject": f"{unique_name}.svc", "body": "again"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert api.status_code == 200
    assert api.json()["body"] == "<img src=x onerror=alert(1)> echo: again"
    assert api.json()["latency_ms"] > 0


def test_no_responders_and_timeout_are_told_apart(client_for, nats_broker, js, unique_name):
    from dashboard.models import AuditEntry

    responder(js, f"{unique_name}.silent", answer=False)
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/request/")
    token = bob.cookies["csrftoken"].value
    began = time.monotonic()
    none = bob.post(
        "/brokers/nats/nats/request/",
        {"subject": f"{unique_name}.nobody", "body": "x", "csrfmiddlewaretoken": token},
    )
    assert time.monotonic() - began < 1.5  # the server says so at once
    assert none.status_code == 404
    assert f"No responders: nothing subscribes to {unique_name}.nobody" in page_text(none)
    began = time.monotonic()
    slow = bob.post(
        "/brokers/nats/nats/request/",
        {
            "subject": f"{unique_name}.silent",
            "body": "x",
            "timeout": "0.3",
            "csrfmiddlewaretoken": token,
        },
    )
    assert 0.3 <= time.monotonic() - began < 2
    assert slow.status_code == 504
    assert "Timed out: no reply within 0.3 s" in page_text(slow)
    results = list(
        AuditEntry.objects.filter(action="message.request")
        .order_by("id")
        .values_list("result", flat=True)
    )
    assert results == ["no responders", "timeout"]


# -- who may ------------------------------------------------------------------------


def test_viewers_read_but_cannot_send(client_for, token_for, nats_broker, js, stream, unique_name):
    from django.test import Client

    from dashboard.models import AuditEntry

    nc = js.connect()
    sub = js.run(nc.subscribe(f"{unique_name}.>"))
    js.run(nc.flush())
    carol = client_for("carol")
    for url in (
        f"/brokers/nats/streams/{stream}/messages",
        "/brokers/nats/nats/publish/",
        "/brokers/nats/nats/request/",
        f"/brokers/nats/nats/tail/?subject={unique_name}.%3E",
        f"/api/v1/brokers/nats/streams/{stream}/messages",
    ):
        assert carol.get(url).status_code == 200, url
    assert "Publishing needs the operator role" in page_text(
        carol.get("/brokers/nats/nats/publish/")
    )
    token = carol.cookies["csrftoken"].value if "csrftoken" in carol.cookies else ""
    form = {"subject": f"{unique_name}.x", "body": "x", "csrfmiddlewaretoken": token}
    assert carol.post("/brokers/nats/nats/publish/", form).status_code == 403
    assert carol.post("/brokers/nats/nats/request/", form).status_code == 403
    viewer_api = Client(HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}")
    for url in ("/api/v1/brokers/nats/nats/publish", "/api/v1/brokers/nats/nats/request"):
        r = viewer_api.post(url, json.dumps(form), content_type="application/json")
        assert r.status_code == 403, url
    # CSRF: an operator's form post without the token is refused, and nothing goes out.
    bob = client_for("bob")
    assert (
        bob.post("/brokers/nats/nats/publish/", {"subject": f"{unique_name}.x"}).status_code == 403
    )
    anonymous = client_for(None)
    assert anonymous.get(f"/brokers/nats/streams/{stream}/messages").status_code == 302
    assert (
        anonymous.post(
            "/api/v1/brokers/nats/nats/publish", "{}", content_type="application/json"
        ).status_code
        == 401
    )
    assert client_for("dave").get(f"/brokers/nats/streams/{stream}/messages").status_code == 403
    with pytest.raises(NatsTimeout):  # nothing was published
        js.run(sub.next_msg(timeout=0.3))
    assert not AuditEntry.objects.exists()


def test_pages_of_other_brokers_are_not_found(client_for, nats_broker):
    from dashboard.models import Broker

    Broker.objects.create(name="kafka", kind="kafka", options={"bootstrap_servers": "x:1"})
    carol = client_for("carol")
    assert carol.get("/brokers/kafka/streams/orders/messages").status_code == 404
    assert carol.get("/brokers/kafka/nats/tail/").status_code == 404
    assert carol.get("/api/v1/brokers/kafka/streams/orders/messages").status_code == 404
    assert carol.get("/brokers/nope/nats/publish/").status_code == 404


def test_the_generic_publish_routes_hand_nats_over(client_for, nats_broker, stream, unique_name):
    """/brokers/<nats>/publish/ and POST /api/v1/brokers/<nats>/publish are NATS's publish."""
    bob = client_for("bob")
    page = bob.get("/brokers/nats/publish/")
    assert page.status_code == 200 and "Core NATS: fire and forget" in page_text(page)
    api = bob.post(
        "/api/v1/brokers/nats/publish",
        json.dumps({"subject": f"{unique_name}.generic", "body": "g"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=bob.cookies["csrftoken"].value,
    )
    assert api.status_code == 200, api.content
    assert (api.json()["stream"], api.json()["seq"]) == (stream, 1)


# -- the client others build on ------------------------------------------------------


def test_the_client_contract(nats_broker, stream, unique_name, private_nats):
    """brokers.nats.client as the dead-letter and job code use it, against the real server."""
    import threading

    from brokers.base import BrokerError
    from brokers.nats.client import BadSubject, Missing, NoResponders

    u = unique_name
    with NatsClient({"url": nats_broker.options["url"]}, timeout=2) as c:
        got: list[Any] = []
        c.subscribe(f"{u}.>", got.append)
        ack = c.publish(f"{u}.a", b"one", [("H", "1"), ("H", "2"), ("K", "<v>")])
        assert ack is not None and (ack.stream, ack.seq, ack.duplicate) == (stream, 1, False)
        c.publish(f"{u}.b", b"two")
        c.publish(f"{u}.a", b"three")
        # A core publish is stored too when a stream captures the subject (no PubAck, though).
        assert c.publish(f"{u}.core", b"c", jetstream=False) is None
        info = c.stream_info(stream)
        assert (info.first_seq, info.last_seq, info.messages, info.allow_direct) == (1, 4, 4, True)
        for direct in (True, False):
            m = c.get(stream, 1, direct=direct)
            assert m is not None
            assert (m.seq, m.subject, m.body, m.size) == (1, f"{u}.a", b"one", 3)
            assert m.headers == (("H", b"1"), ("H", b"2"), ("K", b"<v>"))
            last = c.get(stream, subject=f"{u}.a", direct=direct)
            assert last is not None and last.seq == 3
            after = c.get(stream, 2, next_by_subject=f"{u}.a", direct=direct)
            assert after is not None and after.seq == 3
            cut = c.get_many(stream, 10, subject=f"{u}.a", direct=direct, body_limit=2)
            assert [(x.seq, x.body, x.truncated) for x in cut] == [
                (1, b"on", True),
                (3, b"th", True),
            ]
        c.delete_msg(stream, 2)
        assert c.get(stream, 2) is None
        with pytest.raises(Missing, match="message 2 is not in the stream"):
            c.delete_msg(stream, 2)
        with pytest.raises(Missing, match="there is no stream 'nope'"):
            c.stream_info("nope")
        with pytest.raises(BadSubject):
            c.publish(f"{u}.x\r\nPUB {u}.y 1", b"z")
        with pytest.raises(NoResponders, match=f"no stream listens on {u}x.none"):
            c.publish(f"{u}x.none", b"z")
        time.sleep(0.2)
        assert sorted(d.subject for d in got) == sorted([f"{u}.a", f"{u}.b", f"{u}.a", f"{u}.core"])
        assert got[0].headers == (("H", b"1"), ("H", b"2"), ("K", b"<v>"))
        assert threading.active_count() and any(
            t.name == "sluice-nats" for t in threading.enumerate()
        )
    assert not any(t.name == "sluice-nats" for t in threading.enumerate())

    locked = private_nats("--user", "ops", "--pass", "s3cret-pw")
    with NatsClient({"url": locked.url, "user": "ops", "password": "s3cret-pw"}) as ok:
        assert ok.connected
    with pytest.raises(BrokerError) as refused:
        NatsClient({"url": locked.url, "user": "ops", "password": "wrong"}, timeout=1)
    assert "authorization" in str(refused.value).lower()
    assert "wrong" not in str(refused.value)
    assert not any(t.name == "sluice-nats" for t in threading.enumerate())


def test_a_request_a_stream_captures_is_stored_and_says_so(
    client_for, nats_broker, stream, pub, unique_name
):
    bob = client_for("bob")
    bob.get("/brokers/nats/nats/request/")
    response = bob.post(
        "/brokers/nats/nats/request/",
        {
            "subject": f"{unique_name}.lookup",
            "body": "q",
            "csrfmiddlewaretoken": bob.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 200
    assert re.search(
        rf"stream {stream} captures {unique_name}.lookup and stored the request as sequence 1",
        " ".join(page_text(response).split()),
    )
    assert pub.info(stream).state.messages == 1


def test_stored_headers_named_like_the_direct_get_ones_are_kept(nats_broker, stream, unique_name):
    """A stored message may carry Nats-Stream, Nats-Subject, Nats-Sequence itself (a
    stream's RePublish adds them). Every read takes off only the block the server appended."""
    from brokers.nats.pipeline import DeadLetterClient

    u = unique_name
    own = [("Nats-Stream", "ELSEWHERE"), ("Nats-Subject", "orig.subject"), ("Nats-Sequence", "77")]
    with NatsClient({"url": nats_broker.options["url"]}, timeout=2) as c:
        c.publish(f"{u}.a", b"first", own + [("Kept", "yes")])
        c.publish(f"{u}.a", b"second", own)
        expected = {
            1: tuple((n, v.encode()) for n, v in own + [("Kept", "yes")]),
            2: tuple((n, v.encode()) for n, v in own),
        }
        for direct in (True, False):
            for seq, headers in expected.items():
                m = c.get(stream, seq, direct=direct)
                assert m is not None and (m.seq, m.subject) == (seq, f"{u}.a")
                assert m.headers == headers, (direct, seq)
            many = c.get_many(stream, 10, direct=direct)
            assert [(m.seq, m.headers) for m in many] == sorted(expected.items())
    with DeadLetterClient({"url": nats_broker.options["url"]}, timeout=2) as d:
        got, following = d.read(stream, 1, 10)
        assert following == 3
        assert [(m.stream, m.seq, m.subject, m.headers) for m in got] == [
            (stream, seq, f"{u}.a", headers) for seq, headers in sorted(expected.items())
        ]
        each = d.get_each(stream, [2, 1])
        assert {seq: m.headers for seq, m in each.items() if m} == expected
