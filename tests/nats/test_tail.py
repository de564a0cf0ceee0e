"""The live tail of a NATS subject over a websocket, against the real nats-server."""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from typing import Any

import pytest
import requests

from dashboard.live import tail
from tests.app_fixtures import closed_port
from tests.kafka.test_tail import Tail, _text, run
from tests.nats.test_messages import raw_publish

pytestmark = pytest.mark.django_db(transaction=True)

ROW = re.compile(r'<tr class="tail-row" data-subject="([^"]*)">(.*?)</tr>', re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


class NatsTail(Tail):
    """The Kafka tail's test socket, reading the NATS page's rows."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        out = []
        for subject, inner in ROW.findall(self.text):
            cells = CELL.findall(inner)
            out.append(
                {
                    "subject": html.unescape(subject),
                    "reply": _text(cells[2]),
                    "headers": _text(cells[3]),
                    "body": _text(cells[4]),
                    "raw": inner,
                }
            )
        return out


def ws_path(broker: str, subject: str) -> str:
    from urllib.parse import urlencode

    return f"/ws/nats/tail/{broker}?" + urlencode({"subject": subject})


def core_publish(
    js: Any, messages: list[tuple[str, bytes]], headers: dict[str, str] | None = None
) -> None:
    """Publish over core NATS on one connection, then flush."""
    nc = js.connect()

    async def go() -> None:
        for subject, body in messages:
            await nc.publish(subject, body, headers=headers)
        await nc.flush()

    js.run(go())


def tail_threads() -> list[str]:
    return [
        t.name for t in threading.enumerate() if t.name.startswith(("sluice-tail", "sluice-nats"))
    ]


def tail_connections(monitoring_url: str) -> list[dict[str, Any]]:
    connz = requests.get(f"{monitoring_url}/connz", params={"subs": "1"}, timeout=5).json()
    return [c for c in connz.get("connections") or [] if c.get("name") == "sluice-tail"]


# -- what a viewer sees ------------------------------------------------------------


def test_viewer_sees_the_subjects_a_wildcard_matches(personas, nats_broker, js, unique_name):
    u = unique_name
    js.add_stream(f"S{u}", [f"{u}.orders.stored"])

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", f"{u}.orders.>"))
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(
            core_publish,
            js,
            [(f"{u}.orders.eu", b"eu"), (f"{u}.orders.us.west", b"us"), (f"{u}.other", b"no")],
        )
        # A JetStream publish reaches core subscribers too.
        await asyncio.to_thread(js.publish, f"{u}.orders.stored", b"stored")
        await t.until(lambda: len(t.rows) >= 3 and t.statuses and t.statuses[-1]["received"] >= 3)
        await t.until(lambda: len(t.statuses) >= 3)  # a moment more for anything else
        await t.close()
        return t

    t = run(go)
    got = sorted((r["subject"], r["body"]) for r in t.rows)
    assert got == [
        (f"{u}.orders.eu", "eu"),
        (f"{u}.orders.stored", "stored"),
        (f"{u}.orders.us.west", "us"),
    ]
    assert f"{u}.orders.&gt; over core NATS, from now on" in t.text
    assert t.statuses[-1]["received"] == 3
    assert t.statuses[-1]["rate"] > 0


def test_a_star_matches_one_token_and_unusual_tokens_pass(personas, nats_broker, js, unique_name):
    u = unique_name

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", f"{u}.*.created"))
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(
            core_publish,
            js,
            [
                (f"{u}.eu.created", b"1"),
                (f"{u}.eu.x.created", b"2"),
                (f"{u}.<b>ü.created", b"3"),
                (f"{u}.eu.paid", b"4"),
            ],
        )
        await t.until(lambda: len(t.rows) >= 2)
        await t.until(lambda: len(t.statuses) >= 3)
        await t.close()
        return t

    t = run(go)
    assert sorted(r["body"] for r in t.rows) == ["1", "3"]
    assert f'data-subject="{u}.&lt;b&gt;ü.created"' in t.text


def test_hostile_binary_and_repeated_headers_render_inert(personas, nats_broker, js, unique_name):
    u = unique_name
    bodies = [
        b"<script>alert(1)</script>",
        b"<img src=x onerror=alert(1)>",
        b"\xff\xfe<b>not utf-8</b>\x80",
        bytes(range(8)),
    ]

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", f"{u}.>"))
        assert (await t.open())[0]
        await t.started()
        for i, body in enumerate(bodies):
            await asyncio.to_thread(
                raw_publish,
                nats_broker.options["url"],
                f"{u}.m{i}",
                [(b"<h>", b"<i>v</i>"), (b"<h>", b"\xff<b>"), (b"T", b"2")],
                body,
                "_INBOX.<script>",
            )
        await t.until(lambda: len(t.rows) >= 4)
        await t.close()
        return t

    t = run(go)
    by_subject = {r["subject"]: r for r in t.rows}
    assert by_subject[f"{u}.m0"]["body"] == "<script>alert(1)</script>"
    assert by_subject[f"{u}.m1"]["body"] == "<img src=x onerror=alert(1)>"
    assert by_subject[f"{u}.m2"]["body"] == "hex " + bodies[2].hex(" ")
    assert by_subject[f"{u}.m3"]["body"] == "hex 00 01 02 03 04 05 06 07"
    assert by_subject[f"{u}.m0"]["headers"] == "<h>=<i>v</i> <h>=hex ff 3c 62 3e T=2"
    assert by_subject[f"{u}.m0"]["reply"] == "_INBOX.<script>"
    raw = t.text
    assert "<script>" not in raw and "<img src=x" not in raw and "<i>v</i>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw


# -- rate, sampling, pause -------------------------------------------------------------


def test_a_burst_above_the_cap_is_sampled_and_says_so(personas, nats_broker, js, unique_name):
    burst = 600

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", f"{unique_name}.burst"))
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(
            core_publish, js, [(f"{unique_name}.burst", f"b{i}".encode()) for i in range(burst)]
        )
        await t.until(lambda: t.statuses and t.statuses[-1]["received"] == burst, timeout=15)
        await t.close()
        return t

    t = run(go)
    last = t.statuses[-1]
    assert last["sampling"]
    assert "Sampling: showing" in last["text"] and "msg/s" in last["text"]
    assert len(t.rows) == last["shown"] < burst
    assert last["shown"] <= tail.MAX_ROWS_PER_SECOND * (len(t.statuses) + 1)


def test_pause_holds_rows_back_but_keeps_counting(personas, nats_broker, js, unique_name):
    subject = f"{unique_name}.p"

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", subject))
        assert (await t.open())[0]
        await t.started()
        await t.ws.send_to(text_data=json.dumps({"action": "pause"}))
        await t.until(lambda: 'value="resume"' in t.text)
        await asyncio.to_thread(core_publish, js, [(subject, b"held")] * 4)
        await t.until(lambda: t.statuses and t.statuses[-1]["received"] == 4)
        assert t.rows == []
        await t.ws.send_to(text_data=json.dumps({"action": "resume"}))
        await t.until(lambda: "came while paused" in t.text)
        await asyncio.to_thread(core_publish, js, [(subject, b"after")])
        await t.until(lambda: t.rows)
        await t.close()
        return t

    t = run(go)
    assert "Resumed; 4 messages came while paused" in t.text
    assert [r["body"] for r in t.rows] == ["after"]


# -- ending, and what goes wrong -----------------------------------------------------


def test_closing_the_socket_ends_the_subscription_connection_and_threads(
    personas, nats_broker, nats, unique_name
):
    subject = f"{unique_name}.gone.>"
    assert tail_threads() == []

    async def go() -> tuple[list[dict[str, Any]], list[str]]:
        t = NatsTail(personas["carol"], ws_path("nats", subject))
        assert (await t.open())[0]
        await t.started()
        during = await asyncio.to_thread(tail_connections, nats["monitoring_url"])
        threads = tail_threads()
        await t.close()
        return during, threads

    during, threads = run(go)
    assert [c.get("subscriptions_list") for c in during] == [[subject]]
    assert sorted(threads) == ["sluice-nats", "sluice-tail_0"]
    deadline = time.monotonic() + 5
    while (
        tail_connections(nats["monitoring_url"]) or tail_threads()
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tail_connections(nats["monitoring_url"]) == []
    assert tail_threads() == []


@pytest.mark.parametrize(
    "path,code,message",
    [
        ("/ws/nats/tail/nats?subject=a..b", 4400, "has an empty token"),
        ("/ws/nats/tail/nats?subject=a.%3E.b", 4400, "'>' can only be the last token"),
        ("/ws/nats/tail/nats?subject=a%20b", 4400, "cannot contain spaces"),
        ("/ws/nats/tail/nats", 4400, "the subject is empty"),
        ("/ws/nats/tail/nope?subject=a", 4404, "There is no broker 'nope'."),
        ("/ws/nats/tail/kafka?subject=a", 4404, "kafka is not a NATS broker."),
    ],
)
def test_bad_requests_get_an_error_frame_and_a_close(personas, nats_broker, path, code, message):
    from dashboard.models import Broker

    Broker.objects.create(name="kafka", kind="kafka", options={"bootstrap_servers": "x:1"})

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], path)
        assert (await t.open())[0]
        await t.until(lambda: t.closed is not None)
        return t

    t = run(go)
    assert t.closed == code
    assert message in html.unescape(t.text)
    assert 'id="tail-error"' in t.text
    assert tail_threads() == []


@pytest.mark.parametrize("persona,code", [(None, 4401), ("dave", 4403)])
def test_anonymous_and_roleless_users_are_refused(personas, nats_broker, persona, code):
    from django.contrib.auth.models import AnonymousUser

    user = personas[persona] if persona else AnonymousUser()

    async def go() -> tuple[bool, Any]:
        t = NatsTail(user, ws_path("nats", "a.b"))
        result = await t.open()
        await t.close()
        return result

    assert run(go) == (False, code)


def test_an_unreachable_server_says_why_and_asks_to_retry(personas, settings):
    from dashboard.models import Broker

    settings.SLUICE_BROKER_TIMEOUT = 1
    Broker.objects.create(
        name="gone",
        kind="nats",
        options={"url": f"nats://127.0.0.1:{closed_port()}", "monitoring_url": "http://x"},
    )

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("gone", "orders.>"))
        assert (await t.open())[0]
        await t.until(lambda: t.closed is not None, timeout=10)
        return t

    t = run(go)
    assert t.closed == tail.CLOSE_TRY_LATER
    assert "connection refused" in t.text and "Trying again" in t.text
    assert tail_threads() == []


def test_a_server_lost_while_tailing_is_reported(personas, private_nats, settings):
    from dashboard.models import Broker

    settings.SLUICE_BROKER_TIMEOUT = 1
    server = private_nats()
    Broker.objects.create(
        name="mortal",
        kind="nats",
        options={"url": server.url, "monitoring_url": server.monitoring_url},
    )

    async def go() -> tuple[NatsTail, float]:
        t = NatsTail(personas["carol"], ws_path("mortal", "orders.>"))
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(server.stop)
        stopped = time.monotonic()
        await t.until(lambda: t.closed is not None, timeout=tail.CHECK_SECONDS + 5)
        return t, time.monotonic() - stopped

    t, took = run(go)
    assert t.closed == tail.CLOSE_TRY_LATER
    assert "Lost the NATS server while reading orders.&gt;" in t.text
    assert took < 3
    assert tail_threads() == []


# -- the page ------------------------------------------------------------------------


def test_viewer_gets_the_page_with_its_socket(client_for, nats_broker):
    response = client_for("carol").get("/brokers/nats/nats/tail/?subject=orders.%3E")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'ws-connect="/ws/nats/tail/nats?subject=orders.%3E"' in page
    assert 'id="tail-rows" data-max-rows="500"' in page
    assert "js/tail.js" in page
    bad = client_for("carol").get("/brokers/nats/nats/tail/?subject=orders..x")
    assert "Cannot tail that subject" in bad.content.decode()
    assert "ws-connect" not in bad.content.decode()
    empty = client_for("carol").get("/brokers/nats/nats/tail/")
    assert "ws-connect" not in empty.content.decode() and "Name a subject" in empty.content.decode()
