"""Every kind's capabilities (brokers.base) as the protocols state them, against the real brokers.

For each kind: publish through `send`, read back through `read`, then a short
session from `open_transfer` (fetch, send confirmed, settle), with the counts
checked at the broker by the test's own clients, not by the adapter.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from brokers.base import (
    ADAPTERS,
    CAPABILITIES,
    Adapter,
    BrokerError,
    Browse,
    Outgoing,
    Publish,
    Tail,
    Transfers,
    adapter_class,
    connect,
    lacks,
)

KINDS = sorted(ADAPTERS)
# Each capability's protocol, and the methods that make it.
PROTOCOLS: dict[str, tuple[type, tuple[str, ...]]] = {
    "monitor": (Adapter, ("collect", "close")),
    "browse": (Browse, ("read",)),
    "publish": (Publish, ("send",)),
    "transfer": (Transfers, ("open_transfer",)),
    "tail": (Tail, ("open_tail",)),
}
BODIES = [b"m0", b"m1", b"m2"]
HEADERS = {"x-sluice-test": "capabilities"}


@dataclass
class Case:
    """One kind's adapter and a source to fill, with how the broker itself counts."""

    adapter: Any
    source: str  # its Destination key, as the kind's monitor makes it
    target: str  # `send`'s target that lands in the source
    key: str  # `send`'s key
    route: tuple[str, str]  # (exchange, routing key) of the transfer's copies
    count_source: Callable[[], int]
    count_copies: Callable[[], int]
    moves: bool  # True: settling takes messages out of the source (a queue, not a log)


def rabbitmq_case(request: pytest.FixtureRequest, name: str) -> Case:
    options = request.getfixturevalue("rabbitmq")
    amqp = request.getfixturevalue("declare")()
    source = amqp.queue(f"sluice-cap-{name}")
    copies = amqp.queue(f"sluice-cap-{name}-copies")
    return Case(
        adapter=connect("rabbitmq", options, timeout=5.0),
        source=f"//{source}",
        target="//",  # the default exchange of vhost "/"
        key=source,
        route=("", copies),
        count_source=lambda: amqp.count(source),
        count_copies=lambda: amqp.count(copies),
        moves=True,
    )


def kafka_case(request: pytest.FixtureRequest, name: str) -> Case:
    from tests.kafka_fixtures import read_all

    options = request.getfixturevalue("kafka")
    make_topic = request.getfixturevalue("make_topic")
    source, copies = make_topic(f"sluice-cap-{name}"), make_topic(f"sluice-cap-{name}-copies")
    servers = options["bootstrap_servers"]
    return Case(
        adapter=connect("kafka", options, timeout=5.0),
        source=f"topic/{source}",
        target=source,
        key="k",
        route=(copies, ""),
        count_source=lambda: len(read_all(servers, source)),
        count_copies=lambda: len(read_all(servers, copies)),
        moves=False,
    )


def nats_case(request: pytest.FixtureRequest, name: str) -> Case:
    options = request.getfixturevalue("nats")
    js = request.getfixturevalue("js")
    source, copies = f"CAP_{name}".upper(), f"CAP_{name}_COPIES".upper()
    js.add_stream(source, [f"{name}.src.>"])
    js.add_stream(copies, [f"{name}.copies.>"])

    def count(stream: str) -> int:
        async def work(ctx: Any) -> int:
            return int((await ctx.stream_info(stream)).state.messages)

        result: int = js(work)
        return result

    return Case(
        adapter=connect("nats", options, timeout=5.0),
        source=f"stream/{source}",
        target=f"{name}.src.a",
        key="",
        route=(f"{name}.copies.a", f"{name}.copies.a"),
        count_source=lambda: count(source),
        count_copies=lambda: count(copies),
        moves=False,
    )


@pytest.fixture(params=KINDS)
def case(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Case]:
    builders = {"rabbitmq": rabbitmq_case, "kafka": kafka_case, "nats": nats_case}
    made = builders[request.param](request, unique_name)
    yield made
    made.adapter.close()


def eventually(count: Callable[[], int], expected: int, within: float = 5.0) -> int:
    """`count()` once it equals `expected`, or its last value after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = count()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


# -- what each kind declares -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_has_exactly_the_capabilities_it_does_not_declare_lacking(kind: str) -> None:
    cls = adapter_class(kind)
    missing = lacks(kind)
    assert set(missing) <= set(CAPABILITIES)
    assert all(isinstance(why, str) and why for why in missing.values())
    for capability, (protocol, methods) in PROTOCOLS.items():
        for method in methods:
            if capability in missing:
                assert not hasattr(cls, method), f"{kind} lacks {capability} but has {method}"
                continue
            # mypy checks the types; this checks what it does not: names and defaults.
            want = inspect.signature(getattr(protocol, method)).parameters
            got = inspect.signature(getattr(cls, method)).parameters
            assert [(p.name, p.kind, p.default) for p in got.values()] == [
                (p.name, p.kind, p.default) for p in want.values()
            ], f"{kind}.{method} drifted from {protocol.__name__}"


def test_lacks_of_an_unknown_kind_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="unknown broker kind 'rabbit'"):
        lacks("rabbit")


def test_the_capabilities_import_no_broker_client() -> None:
    code = (
        "import sys, brokers, brokers.base as b; b.CAPABILITIES, b.Browse, b.Tail;"
        "print(*(m for m in ('pika', 'kafka', 'nats') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported: {done.stdout}"


# -- publish, browse, transfer ---------------------------------------------------


def test_send_read_and_a_transfer_through_the_uniform_methods(case: Case) -> None:
    adapter = case.adapter
    assert case.source in {d.key for d in adapter.collect().destinations}

    for body in BODIES:
        published = adapter.send(case.target, body, case.key, HEADERS)
        assert published.confirmed and published.routed
    assert eventually(case.count_source, 3) == 3

    first = adapter.read(case.source, 2)
    assert [m.body for m in first] == BODIES[:2]
    assert all(m.headers.get("x-sluice-test") == "capabilities" for m in first)
    cut = adapter.read(case.source, 10, truncate=1)
    assert [(m.body, m.size, m.truncated) for m in cut] == [(b[:1], 2, True) for b in BODIES]
    assert eventually(case.count_source, 3) == 3  # browsing left them all in place

    transfer = adapter.open_transfer(case.source)
    try:
        assert transfer.pending() == 3
        batch = transfer.fetch(2, timeout=5.0)
        assert [m.body for m in batch] == BODIES[:2]
        exchange, routing_key = case.route
        sent = transfer.send([Outgoing(m, exchange, routing_key, dict(m.headers)) for m in batch])
        assert [s.confirmed for s in sent] == [True, True], sent
        transfer.settle(batch)
        assert transfer.pending() == 1
    finally:
        transfer.close()
    assert eventually(case.count_copies, 2) == 2
    assert eventually(case.count_source, 1 if case.moves else 3) == (1 if case.moves else 3)


def test_a_missing_source_is_a_broker_error(case: Case) -> None:
    missing = case.source + "-none"
    with pytest.raises(BrokerError):
        case.adapter.read(missing, 1)
    with pytest.raises(BrokerError):
        case.adapter.open_transfer(missing).close()


def test_a_rabbitmq_key_whose_vhost_holds_a_slash_is_split_by_the_broker_s_vhosts(
    rabbitmq: dict[str, str], odd_vhost: str, declare: Callable[..., Any], unique_name: str
) -> None:
    # odd_vhost comes before declare so that it is deleted last, after the queue.
    amqp = declare(odd_vhost)
    queue = amqp.queue(f"sluice-cap-{unique_name}")
    adapter: Any = connect("rabbitmq", rabbitmq, timeout=5.0)
    try:
        published = adapter.send(f"{odd_vhost}/", b"odd", queue)
        assert published.confirmed and published.routed
        assert [m.body for m in adapter.read(f"{odd_vhost}/{queue}", 5)] == [b"odd"]
    finally:
        adapter.close()
    assert amqp.count(queue) == 1


def test_nats_refuses_a_key_rather_than_drop_it(nats: dict[str, str]) -> None:
    adapter: Any = connect("nats", nats)
    try:
        with pytest.raises(BrokerError, match="no key"):
            adapter.send("sluice.cap.keyed", b"x", key="k")
    finally:
        adapter.close()
