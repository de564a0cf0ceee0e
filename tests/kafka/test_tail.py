"""The live tail of a Kafka topic over a websocket, against the real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from kafka import KafkaProducer

from dashboard.asgi import application
from dashboard.live import tail
from tests.app_fixtures import closed_port

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://127.0.0.1")]
ROW = re.compile(
    r'<tr class="tail-row( earlier)?" data-partition="(\d*)" data-offset="(\d*)">(.*?)</tr>', re.S
)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
STATUS = re.compile(
    r'<div id="tail-status" hx-swap-oob="true" data-rate="([\d.]+)" data-sampling="(\d)" '
    r'data-paused="(\d)" data-received="(\d+)" data-shown="(\d+)">(.*?)\n</div>',
    re.S,
)


def _text(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


class Tail:
    """A websocket on the tail, with everything it received so far."""

    def __init__(self, user: Any, path: str) -> None:
        self.ws = WebsocketCommunicator(application, path, headers=ORIGIN)
        self.ws.scope["user"] = user
        self.frames: list[str] = []
        self.closed: int | None = None

    async def open(self) -> tuple[bool, Any]:
        return await self.ws.connect(timeout=5)

    async def until(self, check: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            assert left > 0, f"not seen within {timeout} s; last frames: {self.frames[-3:]}"
            out = await self.ws.receive_output(timeout=left)
            if out["type"] == "websocket.close":
                self.closed = out.get("code", 1000)
                await self.ws.disconnect()  # as a browser answers a close
                assert check(), f"closed ({self.closed}) first; frames: {self.frames}"
                return
            self.frames.append(out["text"])

    async def started(self) -> None:
        """Wait until the reader has its position: what is produced from now on is seen."""
        await self.until(lambda: any("Tail started" in f for f in self.frames))

    @property
    def text(self) -> str:
        return "".join(self.frames)

    @property
    def rows(self) -> list[dict[str, Any]]:
        out = []
        for earlier, partition, offset, inner in ROW.findall(self.text):
            cells = CELL.findall(inner)
            out.append(
                {
                    "partition": int(partition),
                    "offset": int(offset),
                    "key": _text(cells[3]),
                    "headers": _text(cells[4]),
                    "body": _text(cells[5]),
                    "raw": inner,
                    "earlier": bool(earlier),
                }
            )
        return out

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [
            {
                "rate": float(rate),
                "sampling": sampling == "1",
                "paused": paused == "1",
                "received": int(received),
                "shown": int(shown),
                "text": _text(body),
            }
            for rate, sampling, paused, received, shown, body in STATUS.findall(self.text)
        ]

    async def close(self) -> None:
        await self.ws.disconnect()


def run(coro_fn: Any) -> Any:
    return async_to_sync(coro_fn)()


def _tail_threads() -> list[str]:
    """The sockets' reader threads."""
    return [t.name for t in threading.enumerate() if t.name.startswith("sluice-tail")]


def _kafka_threads() -> int:
    """IO threads of kafka-python clients, ours and the fixtures'."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("kafka-io"))


# -- what a viewer sees ---------------------------------------------------------


def test_viewer_sees_new_messages_with_partition_offset_and_body(
    personas, kafka_broker, kafka_admin, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}", partitions=2)
    produce(topic, [b"old"], partition=0)  # before the tail: not shown
    groups_before = {g["group_id"] for g in kafka_admin.list_groups()}

    async def go() -> tuple[Tail, list[Any]]:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        sent = await asyncio.to_thread(
            lambda: (
                produce(topic, [b"a0", b"a1", b"a2"], partition=0, key=b"k-1")
                + produce(topic, [b'{"n": 1}', b"b1"], partition=1, headers=[("trace", b"x-9")])
            )
        )
        await t.until(lambda: len(t.rows) >= 5)
        await t.close()
        return t, sent

    t, sent = run(go)
    got = sorted((r["partition"], r["offset"], r["body"]) for r in t.rows)
    assert got == [(0, 1, "a0"), (0, 2, "a1"), (0, 3, "a2"), (1, 0, '{"n": 1}'), (1, 1, "b1")]
    assert sorted((m.partition, m.offset) for m in sent) == [(p, o) for p, o, _ in got]
    by_offset = {(r["partition"], r["offset"]): r for r in t.rows}
    assert by_offset[(0, 1)]["key"] == "k-1"
    assert by_offset[(1, 0)]["headers"] == "trace=x-9"
    assert by_offset[(1, 0)]["key"] == "null"
    assert "old" not in {r["body"] for r in t.rows}
    assert not any(r["earlier"] for r in t.rows)
    # Read without a group: none joined, nothing committed.
    assert {g["group_id"] for g in kafka_admin.list_groups()} == groups_before


def test_hostile_and_binary_messages_render_as_text_or_hex(
    personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}")
    bodies = [
        b"<script>alert(1)</script>",
        b"<img src=x onerror=alert(1)>",
        b"\xff\xfe<b>not utf-8</b>\x80",
        bytes(range(8)),
    ]

    async def go() -> Tail:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(
            produce, topic, bodies, key=b"\x00\x01<k>", headers=[("<h>", b"<i>v</i>")]
        )
        await t.until(lambda: len(t.rows) >= 4)
        await t.close()
        return t

    t = run(go)
    by_offset = {r["offset"]: r for r in t.rows}
    assert by_offset[0]["body"] == "<script>alert(1)</script>"
    assert by_offset[1]["body"] == "<img src=x onerror=alert(1)>"
    assert by_offset[2]["body"] == "hex " + bodies[2].hex(" ")
    assert by_offset[3]["body"] == "hex 00 01 02 03 04 05 06 07"
    assert by_offset[0]["key"] == "hex 00 01 3c 6b 3e"
    assert by_offset[0]["headers"] == "<h>=<i>v</i>"
    raw = t.text
    assert "<script>alert" not in raw and "<img src=x" not in raw and "<i>v</i>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw


def test_last_n_shows_the_newest_n_of_each_partition_once(
    personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}", partitions=2)
    produce(topic, [f"p0-{i}".encode() for i in range(5)], partition=0)
    produce(topic, [b"p1-0"], partition=1)

    async def go() -> Tail:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}?last=3")
        assert (await t.open())[0]
        await t.started()
        await t.until(lambda: len(t.rows) >= 4)
        await asyncio.to_thread(produce, topic, [b"new"], partition=1)
        await t.until(lambda: len(t.rows) >= 5 and t.statuses and t.statuses[-1]["received"])
        await t.close()
        return t

    t = run(go)
    earlier = sorted((r["partition"], r["offset"], r["body"]) for r in t.rows if r["earlier"])
    assert earlier == [(0, 2, "p0-2"), (0, 3, "p0-3"), (0, 4, "p0-4"), (1, 0, "p1-0")]
    assert [(r["partition"], r["body"]) for r in t.rows if not r["earlier"]] == [(1, "new")]
    # What was there before is shown, not counted as incoming.
    assert t.statuses[-1]["received"] == 1


def test_the_end_is_the_fetched_one_not_what_list_offsets_says(
    personas, kafka_broker, kafka, make_topic, produce, unique_name
):
    """Batched records: Tansu's ListOffsets says the end is the last batch's base + 1."""
    topic = make_topic(f"tail-{unique_name}")
    p = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], linger_ms=50)
    for i in range(10):
        p.send(topic, f"b{i}".encode())
    p.flush()
    p.close()

    async def go() -> tuple[Tail, Tail]:
        last3 = Tail(personas["carol"], f"/ws/tail/kafka/{topic}?last=3")
        fresh = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        for t in (last3, fresh):
            assert (await t.open())[0]
            await t.started()
        await asyncio.to_thread(produce, topic, [b"new"])
        for t in (last3, fresh):
            await t.until(lambda t=t: any(r["body"] == "new" for r in t.rows))
            await t.until(lambda t=t: len(t.statuses) >= 2)  # a second more for anything else
            await t.close()
        return last3, fresh

    last3, fresh = run(go)
    assert sorted((r["offset"], r["body"], r["earlier"]) for r in last3.rows) == [
        (7, "b7", True),
        (8, "b8", True),
        (9, "b9", True),
        (10, "new", False),
    ]
    assert [(r["offset"], r["body"]) for r in fresh.rows] == [(10, "new")]


def test_one_partition_only(personas, kafka_broker, make_topic, produce, unique_name):
    topic = make_topic(f"tail-{unique_name}", partitions=3)

    async def go() -> Tail:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}?partition=2")
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(produce, topic, [b"zero"], partition=0)
        await asyncio.to_thread(produce, topic, [b"two"], partition=2)
        await t.until(lambda: len(t.rows) >= 1)
        await t.until(lambda: len(t.statuses) >= 2)  # a second more for anything else
        await t.close()
        return t

    t = run(go)
    assert [(r["partition"], r["body"]) for r in t.rows] == [(2, "two")]
    assert "partition 2, from the end" in t.text


# -- rate, sampling, pause --------------------------------------------------------


def test_the_rate_is_pushed_every_second_even_when_nothing_comes(
    personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}")

    async def go() -> tuple[Tail, float]:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        began = time.monotonic()
        await t.until(lambda: len(t.statuses) >= 4, timeout=6)
        took = time.monotonic() - began
        await asyncio.to_thread(produce, topic, 10)
        await t.until(lambda: t.statuses[-1]["received"] == 10)
        await t.close()
        return t, took

    t, took = run(go)
    idle = t.statuses[:4]
    assert all(s["rate"] == 0 and s["received"] == 0 for s in idle)
    assert "Waiting for messages" in idle[0]["text"]
    assert took < 4.5  # four updates, about one a second
    assert t.statuses[-1]["rate"] > 0
    assert not t.statuses[-1]["sampling"]


def test_a_burst_above_the_cap_is_sampled_and_says_so(
    personas, kafka_broker, kafka, make_topic, unique_name
):
    topic = make_topic(f"tail-{unique_name}")
    burst = 600

    def produce_burst() -> None:
        # Batched, so the burst lands within a second.
        p = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], linger_ms=20)
        for i in range(burst):
            p.send(topic, f"burst-{i}".encode())
        p.flush()
        p.close()

    async def go() -> Tail:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        await asyncio.to_thread(produce_burst)
        await t.until(lambda: t.statuses and t.statuses[-1]["received"] == burst, timeout=15)
        await t.close()
        return t

    t = run(go)
    last = t.statuses[-1]
    assert last["sampling"]
    assert "Sampling: showing" in last["text"] and "msg/s" in last["text"]
    assert len(t.rows) == last["shown"] < burst
    # At most the cap per second of the tail's life (it lasted a few seconds).
    assert last["shown"] <= tail.MAX_ROWS_PER_SECOND * (len(t.statuses) + 1)
    assert last["rate"] > tail.MAX_ROWS_PER_SECOND / tail.RATE_WINDOW


def test_pause_holds_rows_back_but_keeps_counting(
    personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}")

    async def go() -> tuple[Tail, int]:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        await t.ws.send_to(text_data=json.dumps({"action": "pause", "HEADERS": {}}))
        await t.until(lambda: 'value="resume"' in t.text)
        await asyncio.to_thread(produce, topic, 5)
        await t.until(lambda: t.statuses[-1]["received"] == 5)
        rows_while_paused = len(t.rows)
        assert t.statuses[-1]["paused"]
        await t.ws.send_to(text_data=json.dumps({"action": "resume"}))
        await t.until(lambda: "came while paused" in t.text)
        await asyncio.to_thread(produce, topic, [b"after"])
        await t.until(lambda: t.rows and t.statuses[-1]["received"] == 6)
        await t.close()
        return t, rows_while_paused

    t, rows_while_paused = run(go)
    assert rows_while_paused == 0
    assert any("5 messages came since pausing" in s["text"] for s in t.statuses if s["paused"])
    assert "Resumed; 5 messages came while paused" in t.text
    assert [r["body"] for r in t.rows] == ["after"]
    assert t.statuses[-1]["received"] == 6
    assert not t.statuses[-1]["sampling"]  # held back by the pause, not by the cap


# -- who may, and what goes wrong --------------------------------------------------


@pytest.mark.parametrize("persona,code", [(None, 4401), ("dave", 4403)])
def test_anonymous_and_roleless_users_are_refused(
    personas, kafka_broker, make_topic, unique_name, persona, code
):
    from django.contrib.auth.models import AnonymousUser

    topic = make_topic(f"tail-{unique_name}")
    user = personas[persona] if persona else AnonymousUser()

    async def go() -> tuple[bool, Any]:
        t = Tail(user, f"/ws/tail/kafka/{topic}")
        result = await t.open()
        await t.close()
        return result

    assert run(go) == (False, code)
    assert _tail_threads() == []


@pytest.mark.parametrize(
    "path,code,message",
    [
        ("/ws/tail/kafka/no-such-topic-{u}", 4404, "There is no topic 'no-such-topic-"),
        ("/ws/tail/nope/some-topic", 4404, "There is no broker 'nope'."),
        ("/ws/tail/rabbit/some-topic", 4404, "not available for rabbitmq brokers"),
        ("/ws/tail/kafka/bad$name", 4400, "is not a valid topic name"),
        ("/ws/tail/kafka/{t}?partition=x", 4400, "The partition is a number"),
        ("/ws/tail/kafka/{t}?partition=7", 4404, "has partitions 0 to 0, not 7"),
        ("/ws/tail/kafka/{t}?last=100000", 4400, "Start from the last 0 to 100"),
    ],
)
def test_bad_requests_get_an_error_frame_and_a_close(
    personas, kafka_broker, make_topic, unique_name, path, code, message
):
    from dashboard.models import Broker

    Broker.objects.create(name="rabbit", kind="rabbitmq", options={"management_url": "http://x"})
    topic = make_topic(f"tail-{unique_name}")

    async def go() -> Tail:
        t = Tail(personas["carol"], path.format(u=unique_name, t=topic))
        assert (await t.open())[0]
        await t.until(lambda: t.closed is not None)
        return t

    t = run(go)
    assert t.closed == code
    assert message in html.unescape(t.text)
    assert 'id="tail-error"' in t.text
    assert _tail_threads() == []


def test_an_unreachable_cluster_says_why_and_asks_to_retry(personas, settings):
    from dashboard.models import Broker

    settings.SLUICE_BROKER_TIMEOUT = 1
    Broker.objects.create(
        name="gone", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
    )

    async def go() -> Tail:
        t = Tail(personas["carol"], "/ws/tail/gone/orders")
        assert (await t.open())[0]
        await t.until(lambda: t.closed is not None, timeout=15)
        return t

    t = run(go)
    assert t.closed == tail.CLOSE_TRY_LATER  # htmx's ws extension reconnects after 1013
    assert "connection refused" in t.text
    assert "Trying again" in t.text
    assert _tail_threads() == []


@pytest.fixture
def mortal_kafka(db: Any) -> Any:
    """A private Tansu (a Broker row "mortal") that a test may kill."""
    import subprocess

    from dashboard import devservices
    from dashboard.devservices.kafka_server import _kafka_ready, _tansu_binary
    from dashboard.models import Broker

    port = devservices.free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _kafka_ready(port):
            assert proc.poll() is None and time.monotonic() < deadline, "Tansu did not start"
            time.sleep(0.2)
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        admin.create_topics([NewTopic("orders", 1, 1)])
        admin.close()
        broker = Broker.objects.create(
            name="mortal", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{port}"}
        )
        yield broker, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_cluster_lost_while_tailing_is_reported_and_retried(personas, settings, mortal_kafka):
    settings.SLUICE_BROKER_TIMEOUT = 1
    _, proc = mortal_kafka

    async def go() -> tuple[Tail, float]:
        t = Tail(personas["carol"], "/ws/tail/mortal/orders")
        assert (await t.open())[0]
        await t.started()
        proc.kill()
        await asyncio.to_thread(proc.wait)
        killed = time.monotonic()
        statuses = len(t.statuses)
        await t.until(lambda: t.closed is not None, timeout=tail.CHECK_SECONDS + 5)
        assert len(t.statuses) - statuses >= tail.CHECK_SECONDS - 1  # the rate kept coming
        return t, time.monotonic() - killed

    t, took = run(go)
    assert t.closed == tail.CLOSE_TRY_LATER
    assert "Lost 'orders' while reading it" in html.unescape(t.text)
    assert took < tail.CHECK_SECONDS + 3
    assert _tail_threads() == []


def test_the_sampler_spreads_a_steady_flood_over_each_second():
    sampler = tail.Sampler(cap=50)
    records = [tail.Record(body=b"", size=0, position=i) for i in range(1000)]
    sent_per_second = []
    for second in range(3):
        # 200 messages a second, in polls of 20.
        sent = []
        for chunk in range(10):
            batch = records[second * 200 + chunk * 20 :][:20]
            sent += sampler.choose(batch, now=100 + second + chunk / 10)
        sent_per_second.append([r.position for r in sent])
    assert [len(s) for s in sent_per_second] == [50, 50, 50]
    assert sent_per_second[0] == list(range(50))  # no rate known yet: the first 50
    assert sent_per_second[1] == list(range(200, 400, 4))  # then every 4th, across the second
    assert sampler.choose(records[:5], now=110) == records[:5]  # quiet again: everything


def test_the_consumer_and_its_threads_end_with_the_socket(
    personas, kafka_broker, make_topic, produce, unique_name
):
    topic = make_topic(f"tail-{unique_name}")
    before = (_tail_threads(), _kafka_threads())

    async def go() -> tuple[list[str], int]:
        t = Tail(personas["carol"], f"/ws/tail/kafka/{topic}")
        assert (await t.open())[0]
        await t.started()
        during = (_tail_threads(), _kafka_threads())
        await t.close()
        return during

    during = run(go)
    assert before[0] == []
    assert len(during[0]) == 1  # the socket's reader thread
    assert during[1] == before[1] + 1  # the KafkaConsumer's IO thread
    deadline = time.monotonic() + 5
    while (_tail_threads(), _kafka_threads()) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (_tail_threads(), _kafka_threads()) == before


# -- the page ---------------------------------------------------------------------


def test_viewer_gets_the_page_with_its_socket(client_for, kafka_broker):
    response = client_for("carol").get("/brokers/kafka/topics/orders/tail?partition=1&last=5")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'ws-connect="/ws/tail/kafka/orders?partition=1&amp;last=5"' in page
    assert 'id="tail-rows" data-max-rows="500"' in page
    assert "js/tail.js" in page


def test_page_refuses_what_it_cannot_tail(client_for, kafka_broker):
    from dashboard.models import Broker

    Broker.objects.create(name="rabbit", kind="rabbitmq", options={"management_url": "http://x"})
    carol = client_for("carol")
    assert carol.get("/brokers/rabbit/topics/orders/tail").status_code == 404
    assert carol.get("/brokers/nope/topics/orders/tail").status_code == 404
    assert carol.get("/brokers/kafka/topics/a%20b/tail").status_code == 404
    bad = carol.get("/brokers/kafka/topics/orders/tail?partition=-1")
    assert bad.status_code == 200
    assert "The partition is a number" in bad.content.decode()
    assert "ws-connect" not in bad.content.decode()
    assert client_for("dave").get("/brokers/kafka/topics/orders/tail").status_code == 403
    assert client_for(None).get("/brokers/kafka/topics/orders/tail").status_code == 302
