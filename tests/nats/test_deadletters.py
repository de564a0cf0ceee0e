"""NATS dead letters: the advisory capture stream and the page, on the real nats-server.

Dead letters are made the way applications make them: a pull consumer with
max_deliver=2 whose client naks every delivery (max-deliveries advisories),
and a client that terminates a message with a reason (terminated advisories).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
from nats.js.api import ConsumerConfig, StreamConfig

from dashboard.collection import collector
from dashboard.kinds.nats import deadletters as dl
from dashboard.models import AuditEntry, Broker
from tests.app_fixtures import closed_port, wait_for
from tests.test_permissions import csrf_post

pytestmark = pytest.mark.django_db

OUR_CLIENTS = ("sluice-dead-letters", "sluice-capture", "sluice-job")


def page(broker: Broker) -> str:
    return f"/brokers/{broker.name}/nats/dead-letters/"


def api(broker: Broker) -> str:
    return f"/api/v1/brokers/{broker.name}/nats/dead-letters"


def our_connections(monitoring_url: str) -> list[str]:
    conns = requests.get(f"{monitoring_url}/connz?limit=1024", timeout=5).json()["connections"]
    return [c.get("name", "") for c in conns or [] if c.get("name", "").startswith(OUR_CLIENTS)]


def make_dead_letters(
    js: Any,
    stream: str,
    bodies: list[bytes],
    terms: dict[int, str] | None = None,
    durable: str = "worker",
    max_msgs: int = -1,
    headers: Callable[[int], dict[str, str]] | None = None,
) -> None:
    """Store `bodies` on <stream>.n (n = index) and fail each with consumer `durable`.

    Those in `terms` are terminated with that reason on their first delivery;
    the others are nak'd until they reach max_deliver=2.
    """
    terms = terms or {}

    async def work(ctx: Any) -> None:
        if stream not in [i.config.name for i in await ctx.streams_info()]:
            await ctx.add_stream(
                StreamConfig(name=stream, subjects=[f"{stream}.>"], max_msgs=max_msgs)
            )
        for n, body in enumerate(bodies):
            await ctx.publish(f"{stream}.{n}", body, headers=headers(n) if headers else None)
        await ctx.add_consumer(
            stream, ConsumerConfig(durable_name=durable, max_deliver=2, ack_wait=30)
        )
        await fail(ctx, stream, durable, len(bodies), terms)
        await captured(ctx, stream, durable, len(bodies))

    js(work)


async def captured(ctx: Any, stream: str, durable: str, count: int) -> None:
    """Wait until the capture stream holds an advisory for each dead letter of `stream`.

    The server sends a max-deliveries advisory only when it would deliver the
    message again, so a pull may be needed to prompt the last ones.
    """
    from django.conf import settings

    name = settings.SLUICE_NATS_CAPTURE_STREAM
    if name not in [i.config.name for i in await ctx.streams_info()]:
        return  # this test captures nothing
    wanted = f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.{durable}"
    sub = await ctx.pull_subscribe_bind(durable=durable, stream=stream)
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        info = await ctx.stream_info(name, subjects_filter=wanted)
        if sum((info.state.subjects or {}).values()) >= count:
            return
        with contextlib.suppress(Exception):
            await sub.fetch(1, timeout=0.3)  # prompts the last advisories
    raise AssertionError(f"fewer than {count} advisories for {stream} were captured")


async def fail(ctx: Any, stream: str, durable: str, count: int, terms: dict[int, str]) -> None:
    """Pull like a worker that fails: nak (or terminate) each delivery, until none come.

    The server sends the max-deliveries advisory when it would deliver a
    message again, on a pull after the last delivery. A busy server may spread
    the redeliveries over several pulls, so the worker pulls until two pulls in
    a row get nothing.
    """
    sub = await ctx.pull_subscribe_bind(durable=durable, stream=stream)
    empty = 0
    for _ in range(12):
        try:
            msgs = await sub.fetch(count, timeout=1)
        except TimeoutError:  # nats-py raises its own or asyncio's
            empty += 1
            if empty == 2:
                break
            continue
        empty = 0
        for msg in msgs:
            n = int(msg.subject.rsplit(".", 1)[1])
            if n in terms:
                await ctx._nc.publish(msg.reply, f"+TERM {terms[n]}".encode())
            else:
                await msg.nak()
        await ctx._nc.flush()


def advisories_of(client, broker: Broker, stream: str, expect: int) -> dict[str, Any]:
    """The API's answer once it lists `expect` dead letters of `stream`."""

    def ready() -> dict[str, Any] | None:
        body = client.get(api(broker), {"s": stream}).json()
        return body if len(body["dead_letters"]) >= expect else None

    found: dict[str, Any] = wait_for(ready, timeout=10, every=0.2)
    return found


def test_advisories_are_captured_while_nothing_of_sluice_is_connected(
    nats_broker, nats, js, capture, client_for, unique_name
) -> None:
    # The capture stream was made, and Sluice disconnected: only the server listens now.
    assert our_connections(nats["monitoring_url"]) == []
    stream = f"ORD_{unique_name}"
    make_dead_letters(
        js, stream, [b'{"order": 1}', b'{"order": 2}', b"<b>three</b>"], terms={2: "bad payload"}
    )
    assert our_connections(nats["monitoring_url"]) == []

    carol = client_for("carol")
    body = advisories_of(carol, nats_broker, stream, 3)
    letters = {d["seq"]: d for d in body["dead_letters"]}
    assert set(letters) == {1, 2, 3}
    assert letters[1]["reason"] == "max deliveries"
    assert letters[1]["deliveries"] == 2
    assert letters[1]["consumer"] == "worker"
    assert letters[1]["subject"] == f"{stream}.0"
    assert letters[1]["preview"] == '{"order": 1}'
    assert letters[3]["reason"] == "terminated: bad payload"
    assert letters[3]["id"] == f"{stream}:3"

    html = carol.get(page(nats_broker), {"s": stream}).content.decode()
    assert "capturing" in html
    assert f"{stream}.0" in html and "terminated: bad payload" in html
    assert "&lt;b&gt;three&lt;/b&gt;" in html and "<b>three</b>" not in html  # inert
    # Reading left nothing connected and no thread behind.
    assert our_connections(nats["monitoring_url"]) == []
    assert not [t for t in threading.enumerate() if t.name == "sluice-nats"]


def test_a_message_removed_by_its_limits_shows_as_no_longer_in_the_stream(
    nats_broker, js, capture, client_for, unique_name
) -> None:
    stream = f"LIM_{unique_name}"
    make_dead_letters(js, stream, [b"first", b"second"], max_msgs=2)
    js.publish(f"{stream}.9", b"newer")  # max_msgs=2: the first message goes
    body = advisories_of(client_for("carol"), nats_broker, stream, 2)
    letters = {d["seq"]: d for d in body["dead_letters"]}
    assert letters[1]["present"] is False
    assert letters[2]["present"] is True and letters[2]["preview"] == "second"
    html = client_for("carol").get(page(nats_broker), {"s": stream}).content.decode()
    assert "no longer in the stream" in html


def test_dead_letters_are_grouped_by_stream_consumer_and_reason(
    nats_broker, js, capture, client_for, unique_name
) -> None:
    stream = f"GRP_{unique_name}"
    make_dead_letters(js, stream, [b"a", b"b", b"c", b"d"], terms={0: "schema", 1: "schema"})
    js.add_consumer(stream, "audit", max_deliver=2, ack_wait=30)  # a second consumer
    advisories_of(client_for("carol"), nats_broker, stream, 4)

    js(lambda ctx: fail(ctx, stream, "audit", 4, {}))  # "audit" gives up on every message
    body = advisories_of(client_for("carol"), nats_broker, stream, 8)
    ours = {
        (g["consumer"], g["reason"]): g["count"] for g in body["groups"] if g["stream"] == stream
    }
    assert ours == {
        ("worker", "terminated: schema"): 2,
        ("worker", "max deliveries"): 2,
        ("audit", "max deliveries"): 4,
    }
    only = client_for("carol").get(api(nats_broker), {"s": stream, "c": "audit"}).json()
    assert {d["consumer"] for d in only["dead_letters"]} == {"audit"}
    assert only["matching"] == 4


def test_dead_letter_streams_are_found_by_name_and_read(
    nats_broker, js, capture, client_for, unique_name
) -> None:
    dead, plain = f"PAY_{unique_name}_DLQ", f"PAY_{unique_name}"
    js.add_stream(dead, [f"dlq.{unique_name}.>"])
    js.add_stream(plain, [f"pay.{unique_name}.>"])

    async def fill(ctx: Any) -> None:
        for n in range(5):
            await ctx.publish(
                f"dlq.{unique_name}.x",
                json.dumps({"n": n}).encode(),
                headers={
                    "x-original-subject": f"pay.{unique_name}.{'card' if n % 2 else 'bank'}",
                    "x-exception-message": "declined",
                },
            )

    js(fill)
    collector.collect(nats_broker)
    names = [
        d["name"] for d in client_for("carol").get(api(nats_broker)).json()["dead_letter_streams"]
    ]
    assert dead in names and plain not in names and capture not in names

    body = client_for("carol").get(api(nats_broker), {"dlq": dead}).json()["dead_letter_stream"]
    assert len(body["messages"]) == 5
    assert body["messages"][0]["origin"] == f"pay.{unique_name}.bank"  # newest first: n = 4
    groups = {(g["origin"], g["reason"]): g["count"] for g in body["groups"]}
    assert groups == {
        (f"pay.{unique_name}.bank", "declined"): 3,
        (f"pay.{unique_name}.card", "declined"): 2,
    }
    # By subject, the server's count over the whole stream; by origin, of the newest read.
    assert body["subjects"] == [{"subject": f"dlq.{unique_name}.x", "count": 5}]
    html = client_for("carol").get(page(nats_broker), {"dlq": dead}).content.decode()
    assert dead in html and "declined" in html
    assert "All 5 messages by subject, counted by the server." in html
    assert "(a partial look)" in html


def test_viewers_read_but_only_operators_replay_and_only_admins_create_the_stream(
    nats_broker, client_for, capture
) -> None:
    assert client_for("carol").get(page(nats_broker)).status_code == 200
    assert client_for("carol").get(api(nats_broker)).status_code == 200
    assert client_for("dave").get(page(nats_broker)).status_code == 403
    anonymous = client_for(None)
    assert anonymous.get(page(nats_broker)).status_code == 302
    assert anonymous.get(api(nats_broker)).status_code == 401

    act = f"{page(nats_broker)}act"
    form = {"source": f"advisories/{capture}", "select": "all"}
    assert csrf_post(client_for("carol"), act, form).status_code == 403
    assert client_for("bob").post(act, form).status_code == 403  # no CSRF token
    made = csrf_post(client_for("bob"), act, form)
    assert made.status_code == 302 and "/jobs/" in made["Location"]

    check = f"{page(nats_broker)}capture"
    assert csrf_post(client_for("bob"), check, {}).status_code == 403
    assert csrf_post(client_for("alice"), check, {}).status_code == 302
    entry = AuditEntry.objects.filter(action="nats.capture.check").get()
    assert (entry.user, entry.result) == ("alice", "ok")


def test_an_unreachable_server_is_shown_not_a_500(db, client_for) -> None:
    broker = Broker.objects.create(
        name="nats-down",
        kind="nats",
        options={
            "url": f"nats://127.0.0.1:{closed_port()}",
            "monitoring_url": f"http://127.0.0.1:{closed_port()}",
        },
    )
    html = client_for("carol").get(page(broker))
    assert html.status_code == 200
    assert "connection refused" in html.content.decode()
    answer = client_for("carol").get(api(broker))
    assert answer.status_code == 502 and "connection refused" in answer.json()["error"]
    assert dl.check_capture(broker).state == "unreachable"


def test_a_server_without_jetstream_says_so(db, private_nats, client_for) -> None:
    server = private_nats()  # no -js
    broker = Broker.objects.create(
        name="nats-nojs",
        kind="nats",
        options={"url": server.url, "monitoring_url": server.monitoring_url},
    )
    status = dl.check_capture(broker)
    assert status.state == "no-jetstream", status
    html = client_for("carol").get(page(broker)).content.decode()
    assert "JetStream is not enabled" in html


def test_creation_is_refused_without_permission_and_the_page_says_how_to_do_it(
    db, private_nats, client_for
) -> None:
    server = private_nats(
        jetstream=True,
        config="""
authorization {
  users = [
    {user: "watcher", password: "pw", permissions: {
      publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES"]},
      subscribe: {allow: ["_INBOX.>"]}
    }}
  ]
}
""",
    )
    broker = Broker.objects.create(
        name="nats-watcher",
        kind="nats",
        options={
            "url": server.url,
            "monitoring_url": server.monitoring_url,
            "user": "watcher",
            "password": "pw",
        },
    )
    status = dl.check_capture(broker)
    assert status.state == "refused", status
    assert "STREAM.CREATE" in status.detail
    html = client_for("carol").get(page(broker)).content.decode()
    assert "nats stream add SLUICE_DEAD_LETTERS" in html
    assert "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.&gt;" in html


def test_the_capture_stream_is_created_once_and_an_existing_one_is_used(
    db, private_nats, settings
) -> None:
    server = private_nats(jetstream=True)
    broker = Broker.objects.create(
        name="nats-fresh",
        kind="nats",
        options={"url": server.url, "monitoring_url": server.monitoring_url},
    )
    settings.SLUICE_NATS_CAPTURE_ADVISORIES = False
    assert dl.check_capture(broker).state == "missing"
    settings.SLUICE_NATS_CAPTURE_ADVISORIES = True
    created = dl.check_capture(broker)
    assert created.state == "created" and created.info is not None
    assert set(created.info.subjects) == {
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>",
    }
    assert created.info.max_age == 30 * 86400
    assert dl.check_capture(broker).state == "ok"
    # Under another name, the stream already there is used as it is.
    settings.SLUICE_NATS_CAPTURE_STREAM = "OTHER_NAME"
    adopted = dl.check_capture(broker)
    assert (adopted.state, adopted.stream) == ("adopted", "SLUICE_DEAD_LETTERS")
    remembered = dl.last_check(broker)
    assert remembered is not None and remembered["state"] == "adopted"
