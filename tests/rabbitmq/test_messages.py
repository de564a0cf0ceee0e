"""Reading, browsing, publishing and moving RabbitMQ messages, against the real broker.

Routing previews (`routes`) are checked as a pure function and against where
the broker really puts messages; dead letters are made by the broker itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pika
import pytest

from brokers.base import BrokerError, Message, Outgoing
from brokers.rabbitmq.adapter import RabbitMQ
from brokers.rabbitmq.amqp import (
    AmqpTransfer,
    RawProperties,
    browse,
    encode_properties,
    fingerprint,
    message_from_amqp,
    publish,
    replay_target,
    routes,
    topic_matches,
)
from brokers.rabbitmq.management import ManagementAPI, quote_path
from tests.rabbit_fixtures import Topology, management

# -- helpers ------------------------------------------------------------------


@pytest.fixture
def name(unique_name: str) -> str:
    return f"sluice-msg-{unique_name}"


@pytest.fixture
def url(rabbitmq: dict[str, str]) -> str:
    """The AMQP URL with the test credentials in it."""
    params = rabbitmq["amqp_url"].split("://", 1)[1].rpartition("@")[2]
    return f"amqp://{rabbitmq['username']}:{rabbitmq['password']}@{params}"


@pytest.fixture
def api(rabbitmq: dict[str, str]) -> Iterator[ManagementAPI]:
    a = ManagementAPI(
        rabbitmq["management_url"], None, rabbitmq["username"], rabbitmq["password"], timeout=10
    )
    yield a
    a.close()


@pytest.fixture
def transfers() -> Iterator[Callable[..., AmqpTransfer]]:
    """AmqpTransfer sessions, closed after the test."""
    opened: list[AmqpTransfer] = []

    def open_(*args: Any, **kw: Any) -> AmqpTransfer:
        t = AmqpTransfer(*args, **kw)
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()


def replay_all(t: AmqpTransfer, exchange: str, key: str, batch: int = 20) -> int:
    """The job engine's loop: fetch, send, settle the confirmed and routed, keep the rest."""
    moved = 0
    while messages := t.fetch(batch, timeout=1.0):
        sent = t.send([Outgoing(m, exchange, key, {**m.headers, "moved": True}) for m in messages])
        t.settle([m for m, s in zip(messages, sent, strict=True) if s.confirmed and s.routed])
        t.keep([m for m, s in zip(messages, sent, strict=True) if not s.routed], {"kept": 1})
        moved += sum(s.confirmed and s.routed for s in sent)
    return moved


# -- routes: the pure function --------------------------------------------------


def binding(source: str, dest: str, key: str = "", kind: str = "queue", **args: Any) -> dict:
    return {
        "source": source,
        "destination": dest,
        "destination_type": kind,
        "routing_key": key,
        "arguments": args,
        "vhost": "/",
    }


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("*", "a", True),
        ("*", "", False),
        ("*", "a.b", False),
        ("#", "", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.a", "a", True),
        ("#.a", "b.a", True),
        ("#.a", "a.b", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.b.c", False),
        ("a.*.b", "a.b", False),
        ("a.*.b", "a.x.b", True),
        ("*.#", "", False),
        ("*.#", "a", True),
        ("#.#", "", True),
        ("a.#.#.b", "a.b", True),
        ("#.*.#", "a", True),
        ("", "", True),
        ("", "a", False),
        ("a.", "a.", True),
        ("a.*", "a.", True),
        ("*", ".", False),
        ("*.*", ".", True),
    ],
)
def test_topic_matching_follows_amqp_word_rules(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


def test_default_exchange_routes_to_the_queue_named_by_the_key():
    assert routes([], {"q1", "q2"}, "/", "", {}, "q1", {}) == ["q1"]
    assert routes([], {"q1"}, "/", "", {}, "nope", {}) == []
    # CC and BCC headers add routing keys, for every exchange type that uses them.
    assert routes([], {"q1", "q2"}, "/", "", {}, "q1", {"CC": ["q2", "q3"]}) == ["q1", "q2"]


def test_direct_fanout_and_topic_exchanges_match_their_bindings():
    bindings = [
        binding("d", "q1", "k"),
        binding("d", "q2", "k"),
        binding("d", "q3", "other"),
        binding("f", "q3", "ignored"),
        binding("f", "q1"),
        binding("t", "q1", "orders.*"),
        binding("t", "q2", "#.eu"),
    ]
    types = {"d": "direct", "f": "fanout", "t": "topic"}
    qs = {"q1", "q2", "q3"}
    assert routes(bindings, qs, "/", "d", types, "k", {}) == ["q1", "q2"]
    assert routes(bindings, qs, "/", "d", types, "x", {}) == []
    assert routes(bindings, qs, "/", "f", types, "x", {}) == ["q1", "q3"]
    assert routes(bindings, qs, "/", "t", types, "orders.eu", {}) == ["q1", "q2"]
    assert routes(bindings, qs, "/", "t", types, "orders.us.east", {}) == []
    assert routes(bindings, qs, "/", "t", types, "x", {"BCC": ["orders.1"]}) == ["q1"]
    assert routes(bindings, qs, "/", "missing", types, "k", {}) == []
    # Bindings of another vhost do not count.
    other = [dict(binding("d", "q9", "k"), vhost="other")]
    assert routes(bindings + other, qs, "/", "d", types, "k", {}) == ["q1", "q2"]


def test_headers_exchange_matching():
    def match(args: dict, headers: dict) -> bool:
        return routes(
            [binding("h", "q", **args)], {"q"}, "/", "h", {"h": "headers"}, "", headers
        ) == ["q"]

    assert match({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3})
    assert not match({"x-match": "all", "a": 1, "b": "x"}, {"a": 1})
    assert match({"a": 1}, {"a": 1})  # all is the default
    assert match({"x-match": "any", "a": 1, "b": "x"}, {"b": "x"})
    assert not match({"x-match": "any", "a": 1}, {"a": 2})
    assert not match({"x-match": "any"}, {"a": 1})  # any of nothing
    assert match({"x-match": "all"}, {})  # all of nothing
    # x- arguments take no part, unless x-match ends in -with-x.
    assert match({"x-match": "all", "x-tag": "t", "a": 1}, {"a": 1})
    assert not match({"x-match": "all-with-x", "x-tag": "t", "a": 1}, {"a": 1})
    assert match({"x-match": "all-with-x", "x-tag": "t"}, {"x-tag": "t"})
    assert match({"x-match": "any-with-x", "x-tag": "t", "a": 1}, {"x-tag": "t"})
    # A void argument asks only for presence; true is not 1.
    assert match({"a": None}, {"a": "anything"})
    assert not match({"a": None}, {})
    assert not match({"a": True}, {"a": 1})
    assert match({"a": 1}, {"a": 1.0})


def test_exchange_to_exchange_bindings_are_followed_once_and_alternates_used_when_nothing_matched():
    bindings = [
        binding("top", "mid", "a.#", kind="exchange"),
        binding("mid", "top", "", kind="exchange"),  # a cycle
        binding("mid", "q-mid"),
        binding("top", "q-top", "a.b"),
        binding("other", "q-other"),
        binding("alt", "q-alt"),
    ]
    types = {"top": "topic", "mid": "fanout", "other": "direct", "alt": "fanout"}
    args = {"top": {"alternate-exchange": "alt"}, "mid": {"alternate-exchange": "alt"}}
    qs = {"q-mid", "q-top", "q-other", "q-alt"}
    assert routes(bindings, qs, "/", "top", types, "a.b", {}, args) == ["q-mid", "q-top"]
    assert routes(bindings, qs, "/", "top", types, "a.c", {}, args) == ["q-mid"]
    # Nothing matched at "top": its alternate exchange takes it.
    assert routes(bindings, qs, "/", "top", types, "zzz", {}, args) == ["q-alt"]
    assert routes(bindings, qs, "/", "top", types, "zzz", {}) == []


# -- routes: the same cases through the real broker ------------------------------


def test_routes_predicts_where_the_broker_delivers(declare, rabbitmq, url, name):
    top = declare()
    ex = {
        k: top.exchange(f"{name}.{k}", kind)
        for k, kind in (
            ("topic", "topic"),
            ("fan", "fanout"),
            ("head", "headers"),
            ("alt", "fanout"),
        )
    }
    top.channel.exchange_delete(ex["topic"])
    top.channel.exchange_declare(ex["topic"], "topic", arguments={"alternate-exchange": ex["alt"]})
    q = {k: top.queue(f"{name}.{k}") for k in ("hash", "star", "mid", "fan", "hdr", "alt", "wx")}
    ch = top.channel
    ch.queue_bind(q["hash"], ex["topic"], "#")
    ch.queue_unbind(q["hash"], ex["topic"], "#")
    ch.queue_bind(q["hash"], ex["topic"], "a.#.b")
    ch.queue_bind(q["star"], ex["topic"], "*.x")
    ch.queue_bind(q["star"], ex["topic"], "")
    ch.exchange_bind(ex["fan"], ex["topic"], "fan.#")
    ch.exchange_bind(ex["topic"], ex["fan"])  # a cycle back
    ch.queue_bind(q["fan"], ex["fan"])
    ch.queue_bind(q["hdr"], ex["head"], arguments={"x-match": "any", "k": "v", "n": 2})
    ch.queue_bind(q["wx"], ex["head"], arguments={"x-match": "all-with-x", "x-k": "v"})
    ch.queue_bind(q["alt"], ex["alt"])
    probes: list[tuple[str, str, dict]] = [
        (ex["topic"], "a.b", {}),
        (ex["topic"], "a.m.n.b", {}),
        (ex["topic"], "y.x", {}),
        (ex["topic"], "", {}),
        (ex["topic"], "fan.out", {}),
        (ex["topic"], "nothing.here", {}),
        (ex["topic"], "q", {"CC": ["a.b"]}),
        (ex["head"], "", {"k": "v"}),
        (ex["head"], "", {"n": 2}),
        (ex["head"], "", {"n": 3}),
        (ex["head"], "", {"x-k": "v"}),
        ("", q["mid"], {}),
    ]
    for i, (exchange, key, headers) in enumerate(probes):
        publish(url, "/", exchange, key, f"probe {i}".encode(), {}, headers)
    landed: dict[int, set[str]] = {i: set() for i in range(len(probes))}
    for queue in q.values():
        for _method, _props, body in top.drain(queue):
            landed[int(body.split()[1])].add(queue)
    vhost = quote_path("/")
    bindings = management(rabbitmq, "GET", f"/api/bindings{vhost}").json()
    exchanges = management(rabbitmq, "GET", f"/api/exchanges{vhost}").json()
    types = {e["name"]: e["type"] for e in exchanges}
    args = {e["name"]: e["arguments"] for e in exchanges}
    queues = {
        x["name"] for x in management(rabbitmq, "GET", f"/api/queues{vhost}?columns=name").json()
    }
    for i, (exchange, key, headers) in enumerate(probes):
        predicted = routes(bindings, queues, "/", exchange, types, key, headers, args)
        assert predicted == sorted(landed[i]), (exchange, key, headers)
    assert landed[0] == {q["hash"]} and landed[5] == {q["alt"]} and landed[10] == {q["wx"]}


# -- dead letters -------------------------------------------------------------------


def dead_letter(top: Topology, name: str, t: Callable[..., AmqpTransfer], url: str) -> Message:
    """A message published to a topic exchange, expired at once into a DLQ, read back."""
    dlx = top.exchange(f"{name}.dlx", "fanout")
    dlq = top.queue(f"{name}.dlq")
    top.channel.queue_bind(dlq, dlx)
    orders = top.exchange(f"{name}.orders", "topic")
    arguments: dict[str, Any] = {"x-message-ttl": 0, "x-dead-letter-exchange": dlx}
    q = top.queue(f"{name}.orders", **arguments)
    top.channel.queue_bind(q, orders, "order.*")
    top.publish(orders, "order.created", b"{}")
    deadline = time.monotonic() + 10
    while top.count(dlq) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    [m] = t(url, "/", dlq).fetch(1, timeout=5)
    return m


def test_replay_target_of_an_expired_message(declare, transfers, url, name):
    top = declare()
    m = dead_letter(top, name, transfers, url)
    assert m.headers["x-death"][0]["reason"] == "expired"
    assert isinstance(m.headers["x-death"][0]["time"], int)  # JSON-safe: Unix seconds
    assert replay_target(m) == (f"{name}.orders", "order.created")
    assert replay_target(m, "exchange") == (f"{name}.orders", "order.created")
    assert replay_target(m, "queue") == ("", f"{name}.orders")


def test_replay_target_of_a_rejected_message_published_to_the_default_exchange(
    declare, transfers, url, name
):
    top = declare()
    dlq = top.queue(f"{name}.dlq")
    q = top.queue(
        f"{name}.work", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    )
    top.publish("", q, b"job")
    method, _props, _body = top.channel.basic_get(q)
    top.channel.basic_reject(method.delivery_tag, requeue=False)
    time.sleep(0.2)
    [m] = transfers(url, "/", dlq).fetch(1, timeout=5)
    assert m.headers["x-first-death-reason"] == "rejected"
    # Published through the default exchange: "auto" means the queue itself.
    assert replay_target(m) == ("", q)
    assert replay_target(m, "exchange") == ("", q)
    assert replay_target(Message(body=b"", id="x"), "auto") is None


def test_replay_target_takes_the_first_of_several_deaths(declare, transfers, url, name):
    top = declare()
    dlq = top.queue(f"{name}.dlq")
    second = top.queue(
        f"{name}.second",
        **{"x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
    )
    ex = top.exchange(f"{name}.in", "direct")
    first = top.queue(
        f"{name}.first",
        **{"x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": second},
    )
    top.channel.queue_bind(first, ex, "k")
    top.publish(ex, "k", b"twice")
    deadline = time.monotonic() + 10
    while top.count(dlq) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    [m] = transfers(url, "/", dlq).fetch(1, timeout=5)
    assert [d["queue"] for d in m.headers["x-death"]] == [second, first]  # newest first
    assert replay_target(m) == (ex, "k")
    assert replay_target(m, "queue") == ("", first)


# -- transfers ------------------------------------------------------------------------


def test_transfer_moves_every_message_exactly_once(declare, transfers, url, name):
    top = declare()
    src, dst = top.queue(f"{name}.src"), top.queue(f"{name}.dst")
    for i in range(57):
        top.publish("", src, f"m{i}".encode(), pika.BasicProperties(message_id=f"id-{i}"))
    t = transfers(url, "/", src, prefetch=25)
    assert t.pending() == 57  # ready plus held: the prefetched ones count
    assert replay_all(t, "", dst, batch=10) == 57
    assert t.pending() == 0
    t.close()
    got = top.drain(dst)
    assert sorted(body for _, _, body in got) == sorted(f"m{i}".encode() for i in range(57))
    assert {p.message_id for _, p, _ in got} == {f"id-{i}" for i in range(57)}
    assert all(p.headers["moved"] is True for _, p, _ in got)
    assert top.count(src) == 0


def test_settle_acks_out_of_order_and_refuses_a_second_ack(declare, transfers, url, name):
    top = declare()
    src = top.queue(f"{name}.src")
    for i in range(6):
        top.publish("", src, f"m{i}".encode())
    t = transfers(url, "/", src)
    ms = t.fetch(6, timeout=5)
    t.settle([ms[1], ms[3]])  # not the oldest: single acks
    t.settle([ms[0], ms[2]])  # the oldest two: one multiple ack
    with pytest.raises(BrokerError, match="not held"):
        t.settle([ms[0]])
    t.release(ms[4:])
    t.close()
    assert [b for _, _, b in top.drain(src)] == [b"m4", b"m5"]


def test_unroutable_message_is_kept_at_the_tail_with_the_header(declare, transfers, url, name):
    top = declare()
    src, dst = top.queue(f"{name}.src"), top.queue(f"{name}.dst")
    for i in range(5):
        top.publish("", src, f"m{i}".encode(), pika.BasicProperties(headers={"n": i}))
    t = transfers(url, "/", src, prefetch=2)
    m0, m1 = t.fetch(2, timeout=5)
    sent = t.send(
        [Outgoing(m0, "", f"{name}.nowhere", m0.headers), Outgoing(m1, "", dst, m1.headers)]
    )
    assert [(s.confirmed, s.routed) for s in sent] == [(True, False), (True, True)]
    t.settle([m1])
    t.keep([m0], {"sluice-kept": "unroutable"})
    t.close()
    got = top.drain(src)
    assert [b for _, _, b in got] == [b"m2", b"m3", b"m4", b"m0"]
    assert got[-1][1].headers == {"n": 0, "sluice-kept": "unroutable"}
    assert [b for _, _, b in top.drain(dst)] == [b"m1"]


def test_release_puts_messages_back_where_they_were(declare, transfers, url, name):
    top = declare()
    src = top.queue(f"{name}.src")
    for i in range(4):
        top.publish("", src, f"m{i}".encode())
    t = transfers(url, "/", src, prefetch=3)
    ms = t.fetch(3, timeout=5)
    t.release(ms)
    again = t.fetch(3, timeout=5)
    assert [m.body for m in again] == [b"m0", b"m1", b"m2"]
    assert all(m.redelivered for m in again)
    assert [m.id for m in again] == [m.id for m in ms]  # the fingerprint ignores redelivery
    t.release(again)
    t.close()
    assert [b for _, _, b in top.drain(src)] == [b"m0", b"m1", b"m2", b"m3"]


def test_refused_and_failed_publishes_are_reported_per_message(declare, transfers, url, name):
    top = declare()
    src = top.queue(f"{name}.src")
    full = top.queue(f"{name}.full", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    gone = top.exchange(f"{name}.gone", "fanout")
    top.channel.queue_bind(full, gone)
    for i in range(4):
        top.publish("", src, f"m{i}".encode())
    t = transfers(url, "/", src)
    ms = t.fetch(4, timeout=5)
    sent = t.send([Outgoing(m, "", full, {}) for m in ms[:2]])
    assert [s.confirmed for s in sent] == [True, False]
    assert sent[1].error == "broker refused (nack)"
    sent = t.send([Outgoing(ms[2], f"{name}.never", "k", {})])
    assert not sent[0].confirmed and "no exchange named" in sent[0].error
    # Deleted after the session checked it: the broker closes the channel.
    t.send([Outgoing(ms[2], gone, "", {})])
    top.channel.exchange_delete(gone)
    sent = t.send([Outgoing(ms[3], gone, "", {})])
    assert not sent[0].confirmed and "gone" in sent[0].error
    # The session carries on with a new channel.
    sent = t.send([Outgoing(ms[3], "", src, {})])
    assert sent[0].confirmed and sent[0].routed


def test_a_channel_closed_mid_batch_loses_nothing_and_the_session_goes_on(
    declare, transfers, url, name
):
    top = declare()
    src, dst = top.queue(f"{name}.src"), top.queue(f"{name}.dst")
    gone = top.exchange(f"{name}.gone", "fanout")
    top.channel.queue_bind(dst, gone)
    n = 1200  # ~700 KB: written in several chunks
    for i in range(n):
        top.publish("", src, f"{i:04d}".encode() * 150)
    t = transfers(url, "/", src, prefetch=n)
    ms = t.fetch(n, timeout=5)
    assert len(ms) == n
    t.send([Outgoing(ms[0], gone, "", {})])  # the session now knows `gone`
    top.channel.exchange_delete(gone)
    top.channel.queue_purge(dst)
    half = n // 2
    outs = [Outgoing(m, "", dst, {}) for m in ms[:half]] + [
        Outgoing(m, gone, "", {}) for m in ms[half:]
    ]
    sent = t.send(outs)
    assert not any(s.confirmed for s in sent[half:])
    assert all("gone" in s.error for s in sent if not s.confirmed)
    confirmed = [m for m, s in zip(ms, sent, strict=True) if s.confirmed]
    t.settle(confirmed)
    t.release([m for m, s in zip(ms, sent, strict=True) if not s.confirmed])
    t.close()
    # Confirmed copies are in dst; everything else is back in src; duplicates at most.
    assert top.count(dst) >= len(confirmed)
    assert top.count(src) == n - len(confirmed)


def test_deleting_the_queue_ends_the_session_with_an_error(declare, transfers, url, name):
    top = declare()
    src = top.queue(f"{name}.src")
    top.publish("", src, b"m")
    t = transfers(url, "/", src)
    [m] = t.fetch(1, timeout=5)
    top.channel.queue_delete(src)
    with pytest.raises(BrokerError, match="cancelled") as exc:
        t.fetch(1, timeout=2)
    assert not exc.value.retryable
    # Nothing is published for a message the session does not hold.
    with pytest.raises(BrokerError, match="not held"):
        t.keep([Message(body=b"x", id="x")], {})


def test_held_messages_return_to_the_queue_when_the_session_ends(declare, url, name):
    top = declare()
    src = top.queue(f"{name}.src")
    for i in range(3):
        top.publish("", src, f"m{i}".encode())
    t = AmqpTransfer(url, "/", src)
    assert len(t.fetch(3, timeout=5)) == 3
    assert t.fetch(1, timeout=0.2) == []
    t.close()
    assert top.count(src) == 3


def test_transfer_keeps_header_types_and_properties(declare, transfers, url, name):
    top = declare()
    src, dst = top.queue(f"{name}.src"), top.queue(f"{name}.dst")
    props = pika.BasicProperties(
        content_type="application/octet-stream",
        delivery_mode=2,
        correlation_id="corr",
        message_id="mid",
        timestamp=1700000000,
        priority=4,
        app_id="app",
        headers={"when": datetime(2024, 5, 6, 7, 8, 9), "raw": b"\xff\x00", "n": 7},
    )
    top.publish("", src, b"\x00\x01\xfe\xff", props)
    t = transfers(url, "/", src)
    [m] = t.fetch(1, timeout=5)
    assert m.headers["raw"] == {"base64": "/wA="} and m.headers["when"] == 1714979289
    assert m.properties["timestamp"] == 1700000000 and m.id == "mid"
    [s] = t.send([Outgoing(m, "", dst, {**m.headers, "extra": 1.5})])
    assert s.confirmed and s.routed
    t.settle([m])
    [(_, got, body)] = top.drain(dst)
    assert body == b"\x00\x01\xfe\xff"
    assert got.headers["when"] == datetime.fromtimestamp(1714979289, got.headers["when"].tzinfo)
    assert got.headers["raw"] == b"\xff\x00" and got.headers["n"] == 7
    for field in (
        "content_type",
        "delivery_mode",
        "correlation_id",
        "message_id",
        "timestamp",
        "priority",
        "app_id",
    ):
        assert getattr(got, field) == getattr(props, field), field


def test_ten_megabyte_message_moves_intact(declare, transfers, url, name):
    top = declare()
    src, dst = top.queue(f"{name}.src"), top.queue(f"{name}.dst")
    body = os.urandom(10 * 1024 * 1024)
    publish(url, "/", "", src, body, {"delivery_mode": 2}, {"big": True})
    t = transfers(url, "/", src)
    assert replay_all(t, "", dst) == 1
    [(_, _, got)] = top.drain(dst)
    assert got == body


# -- browsing -------------------------------------------------------------------------


def test_browsing_a_classic_queue_leaves_the_messages(declare, api, url, name):
    top = declare()
    q = top.queue(f"{name}.q")
    top.publish("", q, b"a" * 100, pika.BasicProperties(headers={"bin": b"\xfe", "s": "x"}))
    top.publish("", q, b"\xffnot utf-8")
    got = browse(url, api, "/", q, "classic", 10, truncate=50)
    assert [m.size for m in got] == [100, 10]
    assert (got[0].body, got[0].truncated) == (b"a" * 50, True)
    assert (got[1].body, got[1].truncated) == (b"\xffnot utf-8", False)
    assert got[0].headers == {"bin": {"base64": "/g=="}, "s": "x"}
    assert top.count(q) == 2
    again = browse(url, api, "/", q, "classic", 10, truncate=None)
    assert all(m.redelivered for m in again)
    # The id of a message read whole is the same over HTTP and AMQP.
    method, props, body = top.channel.basic_get(q, auto_ack=False)
    assert message_from_amqp(method, props, body).id == again[0].id
    top.channel.basic_nack(method.delivery_tag, requeue=True)


def test_browsing_a_stream_reads_offsets_without_consuming(declare, api, url, name):
    top = declare()
    s = top.queue(f"{name}.stream", durable=True, **{"x-queue-type": "stream"})
    for i in range(10):
        top.publish("", s, f"s{i}".encode())
    first = browse(url, api, "/", s, "stream", 4)
    assert [(m.position, m.body) for m in first] == [(i, f"s{i}".encode()) for i in range(4)]
    later = browse(url, api, "/", s, "stream", 3, offset=6)
    assert [(m.position, m.body) for m in later] == [(6, b"s6"), (7, b"s7"), (8, b"s8")]
    assert [m.position for m in browse(url, api, "/", s, "stream", 50)] == list(range(10))


# -- publishing -------------------------------------------------------------------------


def test_publish_reports_routed_unrouted_and_unknown_exchange(declare, url, name):
    top = declare()
    q = top.queue(f"{name}.q")
    assert publish(url, "/", "", q, b"x", {"content_type": "text/plain"}, {"h": [1, "a"]}).routed
    unrouted = publish(url, "/", "amq.direct", f"{name}.nobody", b"x", {}, {})
    assert unrouted.confirmed and not unrouted.routed
    with pytest.raises(BrokerError, match="no exchange named") as exc:
        publish(url, "/", f"{name}.missing", "k", b"x", {}, {})
    assert not exc.value.retryable
    [(_, props, _)] = top.drain(q)
    assert props.content_type == "text/plain" and props.headers == {"h": [1, "a"]}


def test_odd_names_work_for_every_operation(odd_vhost, declare, transfers, api, url, unique_name):
    top = declare(odd_vhost)
    src = top.queue(f"q/%# é {unique_name}")
    dst = top.queue(f"d/%# ü {unique_name}")
    ex = top.exchange(f"x/%# ö {unique_name}", "direct")
    top.channel.queue_bind(src, ex, "k/%# ï")
    assert publish(url, odd_vhost, ex, "k/%# ï", b"\xff\xfe", {}, {"h": "ï"}).routed
    [seen] = browse(url, api, odd_vhost, src, "classic", 5)
    assert seen.body == b"\xff\xfe" and seen.exchange == ex
    t = transfers(url, odd_vhost, src)
    assert replay_all(t, "", dst) == 1
    assert [b for _, _, b in top.drain(dst)] == [b"\xff\xfe"]


# -- the adapter and failures --------------------------------------------------------------


def test_adapter_needs_an_amqp_url_for_messages(rabbitmq):
    adapter = RabbitMQ(rabbitmq["management_url"], None, rabbitmq["username"], rabbitmq["password"])
    for call in (
        lambda: adapter.transfer("/", "q"),
        lambda: adapter.browse("/", "q", "classic", 1),
        lambda: adapter.publish("/", "", "q", b"", {}, {}),
    ):
        with pytest.raises(BrokerError, match="no amqp_url") as exc:
            call()
        assert not exc.value.retryable


def test_adapter_publishes_and_browses_with_its_credentials(rabbitmq, declare, name):
    top = declare()
    q = top.queue(f"{name}.q")
    host = rabbitmq["amqp_url"].split("://", 1)[1].rpartition("@")[2]
    adapter = RabbitMQ(
        rabbitmq["management_url"],
        f"amqp://nobody:wrong@{host}",
        username=rabbitmq["username"],
        password=rabbitmq["password"],
    )
    assert adapter.publish("/", "", q, b"hello", {}, {}).routed
    assert adapter.replay_target(Message(body=b"", id="x")) is None
    assert [m.body for m in adapter.browse("/", q, "classic", 5)] == [b"hello"]
    t = adapter.transfer("/", q)
    assert [m.body for m in t.fetch(5, timeout=5)] == [b"hello"]
    t.close()
    adapter.close()


def test_monitoring_does_not_import_pika():
    code = "import sys, brokers.rabbitmq.adapter; sys.exit('pika' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_connection_failures_are_broker_errors_without_the_password(rabbitmq, url, name):
    host = rabbitmq["amqp_url"].split("://", 1)[1].rpartition("@")[2]
    with pytest.raises(BrokerError) as exc:
        AmqpTransfer(f"amqp://{rabbitmq['username']}:s3cret-pw@{host}", "/", name)
    assert "s3cret-pw" not in str(exc.value) and not exc.value.retryable
    with pytest.raises(BrokerError) as exc:
        AmqpTransfer(url, f"{name}-no-such-vhost", name)
    assert not exc.value.retryable
    with pytest.raises(BrokerError, match="no queue") as exc:
        AmqpTransfer(url, "/", f"{name}-no-such-queue")
    assert not exc.value.retryable
    with pytest.raises(BrokerError, match="cannot reach") as exc:
        publish("amqp://guest:s3cret-pw@127.0.0.1:1/", "/", "", "q", b"", {}, {}, timeout=2)
    assert "s3cret-pw" not in str(exc.value)


def test_message_from_pika_makes_headers_json_safe():
    method = pika.spec.Basic.GetOk(delivery_tag=3, exchange="e", routing_key="k")
    props = pika.BasicProperties(
        headers={"b": b"ok", "bad": b"\xff", "t": datetime(2024, 1, 1), "nested": {"l": [b"x"]}},
        timestamp=1700000000,
    )
    m = message_from_amqp(method, props, b"body" * 10, truncate=8)
    assert m.headers == {
        "b": "ok",
        "bad": {"base64": "/w=="},
        "t": 1704067200,
        "nested": {"l": ["x"]},
    }
    assert (m.body, m.size, m.truncated, m.handle) == (b"bodybody", 40, True, 3)
    assert m.id == fingerprint(b"body" * 10, m.headers, {"timestamp": 1700000000})
    assert m.id.startswith("sha256:") and len(m.id) == 39


def test_properties_codec_agrees_with_pika_and_keeps_unchanged_headers_byte_for_byte():
    headers = {
        "s": "ünï",
        "b": b"\xff\x00",
        "i": -5,
        "big": 2**40,
        "f": 1.5,
        "d": Decimal("-12.25"),
        "t": datetime(2024, 1, 2, 3, 4, 5),
        "n": None,
        "l": [1, "a", {"x": [True]}],
    }
    props = {"content_type": "text/plain", "delivery_mode": 2, "timestamp": 1700000000}
    raw = encode_properties(props, headers)
    decoded = RawProperties(raw)
    assert decoded.props == props
    assert decoded.headers == {
        **headers,
        "b": {"base64": "/wA="},
        "d": -12.25,
        "t": 1704164645,
        "l": [1, "a", {"x": [True]}],
    }
    # pika reads what we write.
    theirs = pika.spec.BasicProperties()
    theirs.decode(raw)
    assert theirs.content_type == "text/plain" and theirs.headers["d"] == Decimal("-12.25")
    # Unchanged headers are sent as received; changed and new ones are encoded.
    assert decoded.with_headers(dict(decoded.headers)) == raw
    changed = RawProperties(decoded.with_headers({**decoded.headers, "i": 6, "new": "x"}))
    assert changed.headers == {**decoded.headers, "i": 6, "new": "x"}
    assert changed.props == props
    assert RawProperties(decoded.with_headers({})).headers == {}
