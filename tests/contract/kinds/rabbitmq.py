"""RabbitMQ's registration: a dead-letter queue filled by the broker itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import pika
import requests

from tests.app_fixtures import wait_for
from tests.contract.kinds.base import BULK, Copy, Registration, Source, text


class RabbitMQ(Registration):
    """A queue `<name>.dlq` behind a dead-letter exchange; the originals behind a topic exchange."""

    name = "rabbitmq"
    broker_name = "rabbit"
    service = "rabbitmq"
    drains = True
    refused = "kept: unroutable"
    own_headers = ("x-exception", "x-death")
    kill_count = 100_000
    cannot = {
        "keep originals": "a replay out of a RabbitMQ queue acknowledges each original once "
        "its copy is confirmed: it always takes the originals off the queue",
    }

    def __init__(self, services: dict[str, str], unique: str) -> None:
        super().__init__(services, unique)
        self.params = pika.URLParameters(services["amqp_url"])
        self.connection = pika.BlockingConnection(self.params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def options(self) -> dict[str, str]:
        return {k: self.services[k] for k in ("management_url", "amqp_url")}

    def unreachable_options(self, port: int) -> dict[str, str]:
        return {
            "management_url": f"http://127.0.0.1:{port}",
            "amqp_url": f"amqp://guest:guest@127.0.0.1:{port}/",
        }

    def dead_letters(self, count: int, closed: Iterable[int] = ()) -> Source:
        u, ch = self.fresh(), self.channel
        exchange, dlx, dlq = f"c-{u}", f"c-{u}-dlx", f"c-{u}.dlq"
        origins = [f"c-{u}-a", f"c-{u}-b"]
        ch.exchange_declare(exchange, "topic")
        ch.exchange_declare(dlx, "fanout")
        self.exchanges += [exchange, dlx]
        ch.queue_declare(dlq)
        ch.queue_bind(dlq, dlx)
        for i, queue in enumerate(origins):
            ch.queue_declare(queue, arguments={"x-dead-letter-exchange": dlx})
            ch.queue_bind(queue, exchange, f"order.{i}.*")
        self.queues += [dlq, *origins]
        src = Source(
            f"//{dlq}",
            self.make_bodies(u, count),
            [f"m-{u}-{n}" for n in range(count)],
            {"exchange": exchange, "dlq": dlq, "origins": origins},
        )
        if count > BULK:
            self._expire_into_dlq(src, f"^c-{u}-[ab]$")
        else:
            self._reject_into_dlq(src)
        for i in closed:
            ch.queue_unbind(origins[i], exchange, f"order.{i}.*")
        return src

    def _publish(self, ch: Any, src: Source, **kw: Any) -> None:
        for n, body in enumerate(src.bodies):
            headers = {"x-exception": "ValueError" if n % 3 else "KeyError"}
            props = pika.BasicProperties(message_id=src.ids[n], headers=headers, delivery_mode=2)
            ch.basic_publish(src.names["exchange"], f"order.{n % 2}.created", body, props, **kw)

    def _reject_into_dlq(self, src: Source) -> None:
        """Publish through the exchange, then reject every message: the broker dead-letters it."""
        self._publish(self.channel, src, mandatory=True)
        for queue in src.names["origins"]:
            while (method := self.channel.basic_get(queue)[0]) is not None:
                self.channel.basic_reject(method.delivery_tag, requeue=False)
        wait_for(lambda: self.count_source(src) == len(src.bodies), timeout=30, every=0.1)

    def _expire_into_dlq(self, src: Source, pattern: str) -> None:
        """While filling, a policy expires everything in the originals at once into the DLQ."""
        auth = (self.services["username"], self.services["password"])
        api = self.services["management_url"].rstrip("/")
        policy = f"{api}/api/policies/%2F/{quote(pattern.strip('^$'), safe='')}"
        definition = {"message-ttl": 0}
        body = {"pattern": pattern, "definition": definition, "apply-to": "queues"}
        requests.put(policy, auth=auth, json=body, timeout=10).raise_for_status()
        fast = self.connection.channel()  # no publisher confirms: 100,000 in a few seconds
        self._publish(fast, src)
        fast.close()
        wait_for(lambda: self.count_source(src) == len(src.bodies), timeout=120, every=1)
        requests.delete(policy, auth=auth, timeout=10).raise_for_status()

        def no_policy_left() -> bool:
            for queue in src.names["origins"]:
                url = f"{api}/api/queues/%2F/{quote(queue, safe='')}"
                if requests.get(url, auth=auth, timeout=10).json().get("policy"):
                    return False
            return True

        wait_for(no_policy_left, timeout=30, every=0.2)

    def open(self, src: Source, origin: int) -> None:
        queue = src.names["origins"][origin]
        self.channel.queue_bind(queue, src.names["exchange"], f"order.{origin}.*")

    def _depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def _peek(self, queue: str) -> list[tuple[Any, bytes]]:
        """Every message of `queue`, left there: taken unacknowledged, given back on close."""
        ch = self.connection.channel()
        wanted = self._depth(queue)
        got: list[tuple[Any, bytes]] = []
        if wanted:
            for method, props, body in ch.consume(queue, inactivity_timeout=5):
                if method is None:
                    break
                got.append((props, body))
                if len(got) >= wanted:
                    break
        ch.close()  # every unacknowledged delivery goes back to the queue
        return got

    def count_source(self, src: Source) -> int:
        return self._depth(src.names["dlq"])

    def _held(self, origin: int, queue: str) -> list[Copy]:
        return [
            Copy(origin, body, {k: text(v) for k, v in (props.headers or {}).items()})
            for props, body in self._peek(queue)
        ]

    def source_messages(self, src: Source) -> list[Copy]:
        return self._held(-1, src.names["dlq"])

    def copies(self, src: Source) -> list[Copy]:
        return [m for i, q in enumerate(src.names["origins"]) for m in self._held(i, q)]

    def publish_request(self, src: Source, body: str, headers: dict[str, str]) -> dict[str, Any]:
        return {
            "vhost": "/",
            "exchange": "",
            "routing_key": src.names["dlq"],
            "body": body,
            "headers": headers,
        }

    def import_to(self, src: Source, origin: int) -> dict[str, str]:
        return {"vhost": "/", "queue": src.names["origins"][origin]}

    def bad_requests(self, src: Source) -> list[tuple[dict[str, Any], str]]:
        return [
            ({"source": "//nope"}, "no queue"),
            ({"action": "move", "destination": {"exchange": "x" * 256}}, "at most 255 bytes"),
            ({"action": "replay", "mode": "sideways"}, "mode must be one of"),
        ]

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
        # A fresh connection: a test may have closed a channel with an error.
        with pika.BlockingConnection(self.params) as connection:
            channel = connection.channel()
            for queue in self.queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
