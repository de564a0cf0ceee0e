"""The RabbitMQ adapter against the real local broker (management plugin on)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from brokers.base import BrokerError, Destination, Snapshot
from brokers.rabbitmq.adapter import RabbitMQ
from brokers.rabbitmq.management import quote_path
from brokers.rabbitmq.monitor import limits
from tests.rabbit_fixtures import management

# -- helpers ------------------------------------------------------------------

STATS_DEADLINE = 20.0  # the management database refreshes every 5 s by default


def wait_for(adapter: RabbitMQ, check: Callable[[Snapshot], bool]) -> Snapshot:
    """Collect until `check` holds, failing after STATS_DEADLINE seconds."""
    deadline = time.monotonic() + STATS_DEADLINE
    while True:
        snapshot = adapter.collect()
        if check(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            pytest.fail(f"{check.__name__} not reached within {STATS_DEADLINE} s")
        time.sleep(0.5)


def find(snapshot: Snapshot, vhost: str, name: str) -> Destination | None:
    key = f"{vhost}/{name}"
    return next((d for d in snapshot.destinations if d.key == key), None)


@pytest.fixture
def name(unique_name: str) -> str:
    """A queue name no other test uses, recognisable on the shared broker."""
    return f"sluice-rmq-{unique_name}"


@pytest.fixture
def adapter(rabbitmq: dict[str, str]) -> Iterator[RabbitMQ]:
    a = RabbitMQ(
        rabbitmq["management_url"],
        rabbitmq["amqp_url"],
        username=rabbitmq["username"],
        password=rabbitmq["password"],
        timeout=5.0,
        # These tests are the management path's; the Prometheus path's are in
        # test_prometheus_source.py.
        metrics_source="management",
    )
    yield a
    a.close()


# -- collection ---------------------------------------------------------------


def test_backlog_counts_published_messages(adapter, declare, name):
    amqp = declare()
    queue = amqp.queue(name)
    amqp.fill(queue, 7)

    def published(s: Snapshot) -> bool:
        # The overview's totals are refreshed on a tick of their own, after the queue's.
        d = find(s, "/", queue)
        return d is not None and d.backlog == 7 and d.in_total == 7 and s.health.backlog >= 7

    snapshot = wait_for(adapter, published)
    dest = find(snapshot, "/", queue)
    assert dest is not None
    assert (dest.kind, dest.type, dest.vhost, dest.name) == ("queue", "classic", "/", queue)
    assert dest.in_flight == 0 and dest.consumers == 0
    assert dest.in_rate is not None and dest.out_rate == 0.0  # stats on, nothing delivered
    assert dest.extra["messages"] == 7
    assert snapshot.health.version.startswith("3.")
    assert snapshot.health.backlog >= 7
    assert snapshot.health.nodes and snapshot.health.nodes[0].running
    assert snapshot.topology is None
    assert snapshot.requests >= 4  # overview, nodes, consumers, one page of queues at least


def test_unacked_deliveries_show_as_in_flight_with_the_consumer(adapter, declare, name):
    amqp = declare()
    queue = amqp.queue(name)
    amqp.fill(queue, 25)
    consumer_channel = amqp.connection.channel()
    consumer_channel.basic_qos(prefetch_count=10)
    consumer_channel.basic_consume(queue, lambda *args: None, auto_ack=False)

    def prefetched(s: Snapshot) -> bool:
        # The queue's figures and the consumer list are separate listings,
        # refreshed by the management plugin on their own: wait for both.
        d = find(s, "/", queue)
        return (
            d is not None
            and d.in_flight == 10
            and d.backlog == 15
            and d.consumers == 1
            and len(d.consumer_details) == 1
            # The consumer's channel and client come from channel statistics, emitted
            # on a tick of their own: the consumer may be listed before them.
            and bool(d.consumer_details[0].channel)
        )

    dest = find(wait_for(adapter, prefetched), "/", queue)
    assert dest is not None
    assert len(dest.consumer_details) == 1
    consumer = dest.consumer_details[0]
    assert consumer.prefetch == 10
    assert consumer.ack_required is True
    assert consumer.tag.startswith("ctag")
    assert consumer.channel and consumer.client
    assert dest.consumer_capacity is not None


def test_quorum_and_stream_queues_keep_their_type(adapter, declare, name):
    amqp = declare()
    quorum = amqp.queue(name + "-quorum", **{"x-queue-type": "quorum"})
    stream = amqp.queue(name + "-stream", **{"x-queue-type": "stream"})

    snapshot = wait_for(adapter, lambda s: bool(find(s, "/", quorum) and find(s, "/", stream)))
    q, s = find(snapshot, "/", quorum), find(snapshot, "/", stream)
    assert q is not None and s is not None
    assert (q.kind, q.type) == ("queue", "quorum")
    assert (s.kind, s.type) == ("stream", "stream")


def test_limits_show_whether_argument_or_policy_is_in_force(adapter, declare, rabbitmq, name):
    policy_path = quote_path("api", "policies", "/", name)
    management(
        rabbitmq,
        "PUT",
        policy_path,
        json={
            "pattern": f"^{re.escape(name)}$",
            "apply-to": "queues",
            "definition": {
                "message-ttl": 60000,
                "dead-letter-exchange": "dlx-policy",
                "max-length": 100,
            },
        },
    )
    try:
        amqp = declare()
        queue = amqp.queue(name, **{"x-dead-letter-exchange": "dlx-argument", "x-max-length": 1000})
        # The broker enforces the lower max-length (the policy's), proven by the backlog.
        amqp.fill(queue, 150)

        def applied(s: Snapshot) -> bool:
            d = find(s, "/", queue)
            return d is not None and d.backlog == 100 and d.policy == name

        dest = find(wait_for(adapter, applied), "/", queue)
        assert dest is not None
        assert dest.effective_policy["message-ttl"] == 60000
        assert dest.extra["limits"] == {
            "dead-letter-exchange": {"value": "dlx-argument", "source": "argument"},
            "message-ttl": {"value": 60000, "source": "policy"},
            "max-length": {"value": 100, "source": "policy"},
        }
    finally:
        management(rabbitmq, "DELETE", policy_path)


def test_limits_take_the_lower_number_and_the_argument_name():
    got = limits(
        {"x-max-length": 10, "x-overflow": "reject-publish", "x-delivery-limit": 50},
        {
            "max-length": 20,
            "overflow": "drop-head",
            "delivery-limit": 5,
            "dead-letter-routing-key": "k",
        },
    )
    assert got == {
        "max-length": {"value": 10, "source": "argument"},
        "overflow": {"value": "reject-publish", "source": "argument"},
        "delivery-limit": {"value": 5, "source": "policy"},
        "dead-letter-routing-key": {"value": "k", "source": "policy"},
    }


def test_odd_queue_and_vhost_names_are_collected_intact(
    odd_vhost, adapter, declare, rabbitmq, unique_name
):
    # odd_vhost comes first so that it is deleted last, after the queues.
    queue = f"odd/na%me #1 ünï {unique_name}"
    declare().queue(queue)
    odd = declare(odd_vhost)
    odd.queue(queue)
    odd.fill(queue, 3)

    def both(s: Snapshot) -> bool:
        d = find(s, odd_vhost, queue)
        return find(s, "/", queue) is not None and d is not None and d.backlog == 3

    snapshot = wait_for(adapter, both)
    dest = find(snapshot, odd_vhost, queue)
    assert dest is not None
    assert (dest.name, dest.vhost, dest.key) == (queue, odd_vhost, f"{odd_vhost}/{queue}")
    # The escaping the queue page will use addresses the very same queue.
    one = management(rabbitmq, "GET", quote_path("api", "queues", odd_vhost, queue)).json()
    assert (one["name"], one["vhost"]) == (queue, odd_vhost)


def test_topology_lists_declared_exchange_and_binding(adapter, declare, name):
    amqp = declare()
    queue = amqp.queue(name)
    exchange = name + ".events"
    amqp.channel.exchange_declare(exchange, exchange_type="topic")
    amqp.exchanges.append(exchange)
    amqp.channel.queue_bind(queue, exchange, routing_key="orders.#")

    plain = adapter.collect()
    snapshot = adapter.collect(topology=True)
    topology = snapshot.topology
    assert topology is not None
    assert "/" in topology.vhosts
    ex = next(e for e in topology.exchanges if (e.vhost, e.name) == ("/", exchange))
    assert ex.type == "topic" and ex.durable is False
    assert any(
        (b.source, b.destination, b.destination_type, b.routing_key)
        == (exchange, queue, "queue", "orders.#")
        for b in topology.bindings
    )
    # vhosts, exchanges and bindings: three more requests when each fits a page.
    assert snapshot.requests >= plain.requests + 3


# -- failures -----------------------------------------------------------------


def test_wrong_password_is_not_retryable(rabbitmq):
    adapter = RabbitMQ(
        rabbitmq["management_url"], username=rabbitmq["username"], password="wr0ng-s3cret"
    )
    with pytest.raises(BrokerError) as info:
        adapter.collect()
    assert info.value.retryable is False
    assert "401" in info.value.message
    assert "wr0ng-s3cret" not in info.value.message


def test_closed_port_is_reported_unreachable_without_the_password():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed again: nothing listens on it.
    adapter = RabbitMQ(f"http://guest:pa55-s3cret@127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(BrokerError) as info:
        adapter.collect()
    message = info.value.message
    assert message == f"cannot reach 127.0.0.1:{port}: connection refused"
    assert info.value.retryable is True
    assert "pa55-s3cret" not in message + repr(adapter) + str(info.value.__cause__)


def test_credentials_come_from_the_first_source_that_has_them():
    def user(**kw: Any) -> tuple[str, str]:
        auth = RabbitMQ(**kw).api.session.auth
        assert isinstance(auth, tuple)
        return auth

    assert user(management_url="http://h:15672") == ("guest", "guest")
    assert user(management_url="http://h:15672", amqp_url="amqp://a:b%40c@h/") == ("a", "b@c")
    assert user(management_url="http://m:n@h:15672", amqp_url="amqp://a:b@h/") == ("m", "n")
    assert user(management_url="http://m:n@h:15672", username="u", password="p") == ("u", "p")
