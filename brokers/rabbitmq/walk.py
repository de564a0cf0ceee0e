"""Read every message of a queue once and leave the queue as it was: what an export reads.

A classic or quorum queue has no way to read past its head without taking
messages. The walk takes each with `basic.get`, holding it unacknowledged,
so the next get reaches the next message: `basic.get` is not bound by a
prefetch window, and the walk keeps no message once it has handed it on,
only the broker does. Closing the connection puts every held message back
where it was, in order, marked redelivered. Nothing is acknowledged, so
nothing can be lost; a walk that dies half way returns its messages the same
way. On a quorum queue every return counts as a delivery attempt, so a queue
with a delivery limit is not walked (`walk_refusal`).

A stream is read by offset, from its first, and nothing about it changes.
"""

from __future__ import annotations

from typing import Any

import pika

from brokers.base import BrokerError, Message
from brokers.rabbitmq.browse import browse as browse_queue
from brokers.rabbitmq.management import ManagementAPI
from brokers.rabbitmq.messages import _message
from brokers.rabbitmq.wire import _Connection


def walk_refusal(queue_type: str, delivery_limit: Any) -> str:
    """Why a queue cannot be walked without harm ("" when it can)."""
    if queue_type == "quorum" and delivery_limit not in (None, -1, "-1"):
        return (
            f"this quorum queue has a delivery limit of {delivery_limit}: every message a "
            "read puts back counts as a delivery, so reading it all could dead-letter or "
            "drop messages. Bind a stream to its dead-letter exchange and export that instead"
        )
    return ""


class QueueWalk:
    """The messages of one queue from head to tail, each once, in batches (`fetch`).

    `pending()` is how many are left of the length the queue had when the walk
    began; messages that arrive during the walk are read too, until the queue
    has nothing ready.
    """

    def __init__(
        self,
        amqp_url: str,
        api: ManagementAPI,
        vhost: str,
        queue: str,
        queue_type: str,
        timeout: float = 10.0,
    ) -> None:
        self.vhost, self.queue, self.queue_type = vhost, queue, queue_type
        self.read = 0
        self._api = api
        self._amqp_url = amqp_url
        self._timeout = timeout
        self._done = False
        self._next_offset = 0  # a stream's
        self._conn: _Connection | None = None
        self._length: int | None = None
        if queue_type == "stream":
            return
        self._conn = _Connection(amqp_url, vhost, timeout)
        try:
            ch = self._conn.channel()
            declared = self._conn.call(
                ch, lambda cb: ch.queue_declare(queue, passive=True, callback=cb), "queue lookup"
            )
        except BrokerError:
            self._conn.close()
            raise
        self._length = int(declared.method.message_count)
        self._ch = ch
        self._got: list[Message] = []
        self._empty = False
        ch.add_callback(self._on_empty, [pika.spec.Basic.GetEmpty], one_shot=False)

    def _on_empty(self, _frame: Any) -> None:
        self._empty = True

    def _on_get(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._got.append(
            _message(
                method.exchange, method.routing_key, method.redelivered, props, body, None, None
            )
        )

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        if self._done:
            return []
        if self.queue_type == "stream":
            return self._fetch_stream(limit)
        assert self._conn is not None
        out: list[Message] = []
        while len(out) < limit:
            self._got, self._empty = [], False
            self._ch.basic_get(self.queue, self._on_get, auto_ack=False)
            if not self._conn.wait(lambda: bool(self._got) or self._empty, self._timeout):
                raise BrokerError(
                    f"{self._conn.where} did not answer a get on {self.queue!r} "
                    f"within {self._timeout:g} s"
                )
            if self._empty:
                self._done = True
                break
            out.extend(self._got)
        self.read += len(out)
        return out

    def _fetch_stream(self, limit: int) -> list[Message]:
        got = browse_queue(
            self._amqp_url,
            self._api,
            self.vhost,
            self.queue,
            "stream",
            limit,
            offset=self._next_offset,
            truncate=None,
            timeout=self._timeout,
        )
        if not got:
            self._done = True
            return []
        last = got[-1].position
        self._next_offset = (last if isinstance(last, int) else self._next_offset) + 1
        self.read += len(got)
        return got

    def pending(self) -> int | None:
        if self._length is None or self._done:
            return 0 if self._done else None
        return max(0, self._length - self.read)

    def close(self) -> None:
        """Every message still held goes back to the queue, where it was."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
