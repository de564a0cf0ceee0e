"""`AmqpTransfer`: move messages out of one queue without ever holding the only copy.

The RabbitMQ `Transfer` (brokers.base) that jobs move and replay messages
with: consume with manual acks, publish the copies confirmed, and only then
acknowledge the originals. Its docstring says what happens if the process
dies between any two steps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions

from brokers.base import BrokerError, Message, Outgoing, Sent
from brokers.rabbitmq.codec import _Delivery
from brokers.rabbitmq.messages import _message
from brokers.rabbitmq.publish import _Publisher
from brokers.rabbitmq.wire import ChannelClosed, _Connection

# Once a fetch has its first message, how long it waits for the prefetch window
# to fill the rest of the batch.
LINGER = 0.005


class AmqpTransfer:
    """A `Transfer` out of one queue: consume with manual acks, publish confirmed, then ack.

    One connection, two channels: one consumes with manual acks and a prefetch
    window (make it at least twice the batch, so that the next batch arrives
    while this one is sent), the other publishes in confirm mode. Not thread-safe.

    If the process dies, the connection drops and the broker puts every
    message the session holds back into the queue, where it was:
      - after fetch, before send: nothing was copied; the message is back;
      - during send, before its confirm: a copy may or may not be queued at the
        destination, and the original is back: at worst a duplicate;
      - after the confirm, before settle (or keep's ack): the copy is at the
        destination (or the tail) and the original is back: a duplicate;
      - after settle: the copy alone remains. Nothing is ever only in flight.
    """

    def __init__(
        self, amqp_url: str, vhost: str, queue: str, prefetch: int = 1000, timeout: float = 10.0
    ) -> None:
        self.vhost, self.queue, self.timeout = vhost, queue, timeout
        self._conn = _Connection(amqp_url, vhost, timeout)
        self._session = id(self)
        self._buffer: deque[Message] = deque()  # delivered, not yet fetched
        self._unacked: dict[int, None] = {}  # delivered, not yet acked or nacked; in tag order
        self._handed: set[int] = set()  # of those, returned by fetch
        self._stopped: str = ""  # why deliveries stopped, if they did
        try:
            self._publisher = _Publisher(self._conn)
            ch = self._conn.channel()
            declared = self._conn.call(
                ch, lambda cb: ch.queue_declare(queue, passive=True, callback=cb), "queue lookup"
            )
            # Counted before consuming: once deliveries flow, some are on the
            # wire, neither in the queue's count nor yet held here.
            self._length_at_start: int | None = int(declared.method.message_count)
            self._conn.call(
                ch, lambda cb: ch.basic_qos(prefetch_count=prefetch, callback=cb), "qos"
            )
            ch.add_on_close_callback(self._on_close)
            ch.add_on_cancel_callback(self._on_cancel)
            self._conn.reader.consumers[ch.channel_number] = self._on_delivery
            self._conn.call(
                ch,
                lambda cb: ch.basic_consume(
                    queue, self._on_large_delivery, auto_ack=False, callback=cb
                ),
                "consume",
            )
        except BrokerError:
            self._conn.close()
            raise
        self._ch = ch

    def __repr__(self) -> str:
        return f"AmqpTransfer({self._conn.where!r}, vhost={self.vhost!r}, queue={self.queue!r})"

    # Callbacks, run by pika while the connection is pumped.

    def _on_delivery(
        self, tag: int, redelivered: bool, exchange: str, routing_key: str, raw: bytes, body: bytes
    ) -> None:
        # Decoded on arrival, which is mostly while `send` waits for the broker's
        # confirms: the two then work at the same time rather than in turn.
        handle = _Delivery(self._session, tag, raw)
        self._buffer.append(
            _message(exchange, routing_key, redelivered, handle, body, None, handle)
        )
        self._unacked[tag] = None

    def _on_large_delivery(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        """A delivery too large for `_FrameReader`'s shortcut, assembled by pika."""
        self._on_delivery(
            method.delivery_tag,
            method.redelivered,
            method.exchange,
            method.routing_key,
            props.raw,
            body,
        )

    def _on_cancel(self, _frame: Any) -> None:
        self._stopped = f"the broker cancelled the consumer (was queue {self.queue!r} deleted?)"

    def _on_close(self, ch: Any, reason: BaseException) -> None:
        self._conn.reader.consumers.pop(ch.channel_number, None)
        text = getattr(reason, "reply_text", "") or str(reason)
        self._stopped = f"the channel reading {self.queue!r} closed: {text}"

    # Transfer.

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        """Up to `limit` held messages from the head of the queue; [] if none came within `timeout`."""
        self._length_at_start = None
        buffer = self._buffer
        if len(buffer) < limit and not self._stopped:
            if not buffer:
                self._conn.wait(lambda: bool(buffer) or bool(self._stopped), timeout)
            # The window refills as the previous batch is acked: give it a moment.
            while buffer and len(buffer) < limit and not self._stopped:
                had = len(buffer)
                self._conn.wait(lambda: len(buffer) >= limit, LINGER)
                if len(buffer) == had:
                    break
        if not buffer and self._stopped:
            # Cancelled: the queue is gone. Closed: held messages went back already.
            raise BrokerError(self._stopped, retryable=self._ch.is_closed)
        out = [buffer.popleft() for _ in range(min(limit, len(buffer)))]
        self._handed.update(m.handle.tag for m in out)
        return out

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        """Publish all of `batch` pipelined, mandatory and confirmed; one Sent per Outgoing."""
        if not batch:
            return []
        return self._publisher.send(batch)

    def pending(self) -> int | None:
        """Messages not yet settled: ready in the queue plus held by this session; None if unknown.

        Before the first fetch this is the exact length the queue had when the
        session began; afterwards messages on their way to this session may be
        missing from the count.
        """
        if self._length_at_start is not None:
            return self._length_at_start
        probe = self._conn.channel()  # a 404 closes the channel it happens on: not the consumer's
        try:
            ok = self._conn.call(probe, _passive_queue(probe, self.queue), f"queue {self.queue!r}")
        except ChannelClosed:
            return None
        if probe.is_open:
            probe.close()
        return int(ok.method.message_count) + len(self._unacked)

    def settle(self, messages: list[Message]) -> None:
        """Ack these: their copies are confirmed (or they are dropped on purpose)."""
        self._answer(messages, self._ch.basic_ack, {})

    def release(self, messages: list[Message]) -> None:
        """Give these back where they were (basic.nack requeue)."""
        self._answer(messages, self._ch.basic_nack, {"requeue": True})

    def keep(self, messages: list[Message], headers: dict[str, Any]) -> None:
        """Republish these to the tail of the queue with `headers` added; then ack the originals."""
        if not messages:
            return
        self._tags(messages)  # before anything is published
        outs = [Outgoing(m, "", self.queue, {**m.headers, **headers}) for m in messages]
        try:
            sent = self._publisher.send(outs)
        except BrokerError:
            # Copies may or may not be queued; the originals stay, so at worst a duplicate.
            if not self._conn.impl.is_closed:
                self.release(messages)
            raise
        # Dying here: originals come back at the head, copies stay at the tail (duplicates).
        done = [m for m, s in zip(messages, sent, strict=True) if s.confirmed and s.routed]
        failed = [
            (m, s) for m, s in zip(messages, sent, strict=True) if not (s.confirmed and s.routed)
        ]
        self.settle(done)
        if failed:
            self.release([m for m, _ in failed])
            error = failed[0][1].error or "returned unroutable"
            raise BrokerError(
                f"could not requeue {len(failed)} message(s) at the tail of {self.queue!r}"
                f" ({error}); they were put back where they were"
            )

    def _tags(self, messages: list[Message]) -> list[int]:
        """The delivery tags of `messages`, sorted; BrokerError unless this session holds each once."""
        tags = sorted(m.handle.tag for m in messages if isinstance(m.handle, _Delivery))
        if (
            len(tags) != len(messages)
            or any(m.handle.session != self._session for m in messages)
            or not self._handed.issuperset(tags)
            or len(set(tags)) != len(tags)
        ):
            # Acking a tag twice would close the channel and requeue every held message.
            raise BrokerError("message not held by this session (settled twice?)", retryable=False)
        if self._ch.is_closed:
            raise BrokerError(self._stopped or "the channel is closed", retryable=True)
        return tags

    def _answer(
        self, messages: list[Message], answer: Callable[..., None], kw: dict[str, Any]
    ) -> None:
        """Ack or nack `messages`: one `multiple` for the oldest run, single frames for the rest."""
        if not messages:
            return
        tags = self._tags(messages)
        unacked = self._unacked
        # `multiple` covers every unacked tag up to the one given, so it is only
        # used across the oldest unacked tags when all of them are answered now.
        run = 0
        for tag in unacked:
            if run == len(tags) or tags[run] != tag:
                break
            run += 1
        try:
            if run > 1:
                answer(delivery_tag=tags[run - 1], multiple=True, **kw)
            else:
                run = 0
            for tag in tags[run:]:
                answer(delivery_tag=tag, **kw)
        except pika.exceptions.AMQPError as exc:
            raise self._conn.lost(exc) from None
        for tag in tags:
            del unacked[tag]
            self._handed.discard(tag)
        # Written now, without waiting for anything: acks and nacks have no answer.
        self._conn.flush()

    def close(self) -> None:
        """Close the session; messages still held go back to the queue."""
        self._conn.close()
        self._buffer.clear()
        self._handed.clear()
        self._unacked.clear()

    def __enter__(self) -> AmqpTransfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _passive_queue(ch: pika.channel.Channel, name: str) -> Callable[[Callable[[Any], None]], None]:
    return lambda cb: ch.queue_declare(name, passive=True, callback=cb)
