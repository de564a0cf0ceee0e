"""Queues and exchanges on the real RabbitMQ, declared by a test and deleted after it.

`declare(vhost="/")` opens a `Topology`: one AMQP connection (publisher
confirms on) whose queues and exchanges are deleted when the test ends, even
if the test closed its channel with an error. Loaded as a plugin by
tests/conftest.py before Django is set up, so nothing here imports Django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import requests

from brokers.rabbitmq import prometheus


class Topology:
    """Queues and exchanges declared over one AMQP connection to a vhost, deleted afterwards."""

    def __init__(self, rabbitmq: dict[str, str], vhost: str = "/") -> None:
        self.params = pika.URLParameters(rabbitmq["amqp_url"])
        self.params.credentials = pika.PlainCredentials(rabbitmq["username"], rabbitmq["password"])
        self.params.virtual_host = vhost
        self.connection = pika.BlockingConnection(self.params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str, durable: bool | None = None, **arguments: Any) -> str:
        """Declare a queue; unless told, durable only if quorum or stream (which must be)."""
        if durable is None:
            durable = arguments.get("x-queue-type") in ("quorum", "stream")
        self.channel.queue_declare(name, durable=durable, arguments=arguments or None)
        self.queues.append(name)
        return name

    def exchange(self, name: str, kind: str, **arguments: Any) -> str:
        self.channel.exchange_declare(name, kind, arguments=arguments or None)
        self.exchanges.append(name)
        return name

    def publish(
        self, exchange: str, key: str, body: bytes, properties: pika.BasicProperties | None = None
    ) -> None:
        self.channel.basic_publish(exchange, key, body, properties)

    def fill(self, queue: str, count: int) -> None:
        """Publish `count` messages ("message 0", "message 1"...) straight to `queue`."""
        for i in range(count):
            self.channel.basic_publish("", queue, f"message {i}".encode())

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self, queue: str) -> list[tuple[Any, pika.BasicProperties, bytes]]:
        """Every message of `queue`, removed, in order."""
        got: list[tuple[Any, pika.BasicProperties, bytes]] = []
        while True:
            method, props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method, props, body))

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
        # A fresh connection: a test may have closed the channel with an error.
        with pika.BlockingConnection(self.params) as connection:
            channel = connection.channel()
            for name in self.queues:
                channel.queue_delete(name)
            for name in self.exchanges:
                channel.exchange_delete(name)


@pytest.fixture
def declare(rabbitmq: dict[str, str]) -> Iterator[Callable[..., Topology]]:
    """Open a `Topology` on a vhost ("/" by default); everything it declared goes at teardown."""
    opened: list[Topology] = []

    def open_(vhost: str = "/") -> Topology:
        topology = Topology(rabbitmq, vhost)
        opened.append(topology)
        return topology

    yield open_
    for topology in opened:
        topology.close()


def management(rabbitmq: dict[str, str], method: str, path: str, **kw: Any) -> requests.Response:
    """One management API call on the test broker; raises on an error status."""
    resp = requests.request(
        method,
        rabbitmq["management_url"].rstrip("/") + path,
        auth=(rabbitmq["username"], rabbitmq["password"]),
        timeout=10,
        **kw,
    )
    resp.raise_for_status()
    return resp


def plugin_count(rabbitmq: dict[str, str], queue: str, vhost: str = "/") -> int | None:
    """A queue's messages as the Prometheus plugin shows them, the counts Sluice collects
    by default: it refreshes them on its own timer, out of step with the management API."""
    url = prometheus.default_url(rabbitmq["management_url"])
    answer = requests.get(
        f"{url}/metrics/detailed", params={"family": "queue_coarse_metrics"}, timeout=10
    )
    answer.raise_for_status()
    sample = prometheus.parse(answer.text).get((vhost, queue))
    return None if sample is None else sample.messages


@pytest.fixture
def odd_vhost(rabbitmq: dict[str, str], unique_name: str) -> Iterator[str]:
    """A vhost whose name has '/', '%', '#', spaces and unicode, deleted afterwards."""
    from brokers.rabbitmq.management import quote_path

    vhost = f"sluice odd/v%h#ost ünï {unique_name}"
    management(rabbitmq, "PUT", quote_path("api", "vhosts", vhost))
    management(
        rabbitmq,
        "PUT",
        quote_path("api", "permissions", vhost, rabbitmq["username"]),
        json={"configure": ".*", "write": ".*", "read": ".*"},
    )
    yield vhost
    management(rabbitmq, "DELETE", quote_path("api", "vhosts", vhost))
