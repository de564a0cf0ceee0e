"""Publishing, mandatory and confirmed: batches pipelined (`_Publisher`), or one (`publish`).

pika's BlockingChannel waits for each publisher confirm in turn; this writes
a whole batch first, then collects its confirms and returns together. Each
message gets a `Sent` saying whether the broker confirmed and routed it; the
source is acknowledged elsewhere, only after that (see `transfer`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.channel
import pika.spec

from brokers.base import BrokerError, Message, Outgoing, Published, Sent
from brokers.rabbitmq import internals
from brokers.rabbitmq.codec import RawProperties, _Delivery, encode_properties
from brokers.rabbitmq.messages import PROPERTY_NAMES
from brokers.rabbitmq.wire import ChannelClosed, _Connection

# basic.publish's class and method ids and reserved ticket; the frame end octet.
PUBLISH = struct.pack(">HHH", 60, 40, 0)
FRAME_END = b"\xce"
# Publishes are written in chunks of about this size, so the broker starts early.
EMIT_BYTES = 256 * 1024


def _wire_properties(out: Outgoing) -> bytes:
    """The encoded properties to publish `out` with: the original ones, `out.headers` as headers."""
    handle = out.message.handle
    if isinstance(handle, _Delivery):
        return handle.with_headers(out.headers)
    return encode_properties(out.message.properties, out.headers)


class _Publisher:
    """A channel in confirm mode that publishes batches pipelined.

    Every message of a batch is written before any confirm is awaited; then the
    socket is pumped until each publish sequence number has its basic.ack or
    basic.nack (single or `multiple`). RabbitMQ sends a mandatory message's
    basic.return before its ack, so once all confirms are in, so are all
    returns. A return carries no sequence number: it is matched to the earliest
    unconfirmed, not-yet-returned message of the batch with the same exchange,
    routing key, body and properties (returns come in publish order).
    """

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.ch: pika.channel.Channel | None = None
        self.closed: BaseException | None = None
        self.published = 0  # sequence number of the last publish on this channel
        self.known_exchanges: set[str] = {""}
        self._reset_batch(0, 0)

    def _reset_batch(self, first: int, size: int) -> None:
        self.first = first  # sequence number of the batch's first publish
        self.sent: list[tuple[str, str, bytes, bytes]] = []  # exchange, key, body, properties
        # Per sequence number: ack (True), nack (False) or no answer yet (None).
        self.acked: list[bool | None] = [None] * size
        self.returned: list[bool] = [False] * size
        self.unanswered = 0
        self.low = 0  # every index below has an answer
        self.unmatched_returns = 0
        self.last_return = -1  # returns come in publish order: the next is after this one
        self.progress = 0

    def _open(self) -> pika.channel.Channel:
        if self.ch is not None and self.ch.is_open:
            return self.ch
        ch = self.conn.channel()
        self.closed = None
        ch.add_on_close_callback(self._on_close)
        ch.add_on_return_callback(self._on_return)
        self.conn.reader.confirms[ch.channel_number] = self._on_confirm
        self.conn.call(
            ch, lambda cb: ch.confirm_delivery(self._on_pika_confirm, cb), "confirm.select"
        )
        self.ch, self.published = ch, 0
        return ch

    def close(self) -> None:
        if self.ch is not None and self.ch.is_open:
            self.ch.close()
        self.ch = None

    def missing_exchanges(self, names: Iterable[str]) -> set[str]:
        """Those of `names` that do not exist (a publish there would close the channel).

        Checked once per exchange and session with a passive declare, on a
        channel of its own since a 404 closes it; an exchange deleted later is
        caught by the channel closing (see `send`).
        """
        missing = set()
        probe = None
        for name in sorted(set(names) - self.known_exchanges):
            probe = probe if probe is not None and probe.is_open else self.conn.channel()
            try:
                self.conn.call(probe, _passive_exchange(probe, name), f"exchange {name!r}")
            except ChannelClosed as exc:
                if exc.code != 404:
                    raise
                missing.add(name)
            else:
                self.known_exchanges.add(name)
        if probe is not None and probe.is_open:
            probe.close()
        return missing

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        results: list[Sent | None] = [None] * len(batch)
        missing = self.missing_exchanges(o.exchange for o in batch)
        ch = self._open()
        self._reset_batch(self.published + 1, len(batch))
        seq_index: list[int] = []  # batch index of each sequence number
        impl, number = self.conn.impl, ch.channel_number
        max_body = internals.body_max_length(impl)
        pending: list[bytes] = []
        pending_bytes = 0
        for i, out in enumerate(batch):
            if out.exchange in missing:
                results[i] = Sent(False, routed=False, error=self._no_exchange(out.exchange))
                continue
            if out.body is None and out.message.truncated:
                results[i] = Sent(False, routed=False, error="only part of the body was read")
                continue
            body = out.message.body if out.body is None else out.body
            try:
                props = _wire_properties(out)
                frames = _publish_frames(
                    number, out.exchange, out.routing_key, props, body, max_body
                )
            except (struct.error, ValueError, TypeError) as exc:
                # Nothing of it was written: the broker never saw it.
                results[i] = Sent(False, routed=False, error=f"cannot encode it: {exc}"[:200])
                continue
            pending.append(frames)
            pending_bytes += len(frames)
            self.sent.append((out.exchange, out.routing_key, body, props))
            self.unanswered += 1
            seq_index.append(i)
            if pending_bytes >= EMIT_BYTES:
                # Hand the broker what is ready, so that it works while we encode the rest.
                self._emit(impl, pending)
                pending, pending_bytes = [], 0
                self.conn.wait(lambda: True, self.conn.timeout)
        self._emit(impl, pending)
        self.published += len(seq_index)  # (meaningless once closed: a new channel restarts at 1)
        n = len(seq_index)
        # Wait until every publish has its answer. The timeout counts from the
        # last answer, so that a large batch on a slow disk still completes.
        while self.unanswered and self.closed is None:
            before = self.progress
            self.conn.wait(
                lambda: not self.unanswered or self.closed is not None, self.conn.timeout
            )
            if self.progress == before and self.unanswered and self.closed is None:
                # Late confirms must not be taken for the next batch's.
                self.ch = None
                if ch.is_open:
                    ch.close()
                raise BrokerError(
                    f"{self.conn.where} confirmed {n - self.unanswered} of {n} messages;"
                    f" no confirm for the rest within {self.conn.timeout:g} s"
                )
        if self.unmatched_returns:
            raise BrokerError(f"{self.conn.where} returned a message that was not in the batch")
        closed_error = self._closed_error() if self.closed is not None else ""
        for k, i in enumerate(seq_index):
            acked, routed = self.acked[k], not self.returned[k]
            if acked:
                results[i] = Sent(True, routed=routed)
            elif acked is False:
                results[i] = Sent(False, routed=routed, error="broker refused (nack)")
            else:  # the channel closed before its confirm: it may or may not be queued
                results[i] = Sent(False, routed=routed, error=closed_error)
        return [r if r is not None else Sent(False, error="not sent") for r in results]

    def _emit(self, impl: Any, frames: list[bytes]) -> None:
        """Write whole publishes in one go: pika writes each frame with its own send()."""
        # Once the broker has closed the channel (and pika said close-ok), a
        # frame on it would be a connection error: those publishes are dropped
        # unsent, and reported unconfirmed with the reason.
        if frames and self.closed is None:
            if not impl.is_open:
                raise BrokerError(f"lost the AMQP connection to {self.conn.where}")
            data = b"".join(frames)
            internals.emit(impl, data)
            impl.bytes_sent += len(data)
            impl.frames_sent += 3 * len(frames)  # roughly; pika only logs it

    def _no_exchange(self, name: str) -> str:
        return f"no exchange named {name!r} in vhost {self.conn.vhost!r}"

    def _closed_error(self) -> str:
        reason = self.closed
        code = getattr(reason, "reply_code", 0)
        text = getattr(reason, "reply_text", "") or str(reason)
        if code == 404:
            self.known_exchanges = {""}  # an exchange went away during the batch
        return f"the broker closed the channel before confirming: {text}"[:300]

    # Callbacks, run by pika while `wait` pumps the socket.

    def _on_pika_confirm(self, frame: Any) -> None:
        """Confirms `_FrameReader` did not take (none, normally)."""
        method = frame.method
        self._on_confirm(
            method.delivery_tag, method.multiple, isinstance(method, pika.spec.Basic.Ack)
        )

    def _on_confirm(self, tag: int, multiple: bool, ok: bool) -> None:
        last = tag - self.first
        acked = self.acked
        if last < 0 or last >= len(self.sent):
            return  # not this batch's (cannot happen: a timed-out channel is dropped)
        self.progress += 1
        if multiple:
            for k in range(self.low, last + 1):
                if acked[k] is None:
                    acked[k] = ok
                    self.unanswered -= 1
        elif acked[last] is None:
            acked[last] = ok
            self.unanswered -= 1
        while self.low < len(self.sent) and acked[self.low] is not None:
            self.low += 1

    def _on_return(
        self, _ch: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        self.progress += 1
        wanted = None
        for k in range(max(self.low, self.last_return + 1), len(self.sent)):
            if self.acked[k] is not None or self.returned[k]:
                continue
            exchange, routing_key, sent_body, sent_props = self.sent[k]
            if (
                exchange == method.exchange
                and routing_key == method.routing_key
                and sent_body == body
                and _same_properties(sent_props, properties)
            ):
                wanted = k
                break
        if wanted is None:
            self.unmatched_returns += 1
        else:
            self.returned[wanted] = True
            self.last_return = wanted

    def _on_close(self, ch: Any, reason: BaseException) -> None:
        self.conn.reader.confirms.pop(ch.channel_number, None)
        self.closed = reason


def _passive_exchange(
    ch: pika.channel.Channel, name: str
) -> Callable[[Callable[[Any], None]], None]:
    return lambda cb: ch.exchange_declare(name, passive=True, callback=cb)


def _publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    props: bytes,
    body: bytes,
    max_body: int,
) -> bytes:
    """basic.publish (mandatory), its content header and body frames, marshalled."""
    ex, rk = exchange.encode(), routing_key.encode()
    if len(ex) > 255 or len(rk) > 255:
        raise ValueError("exchange names and routing keys are at most 255 bytes")
    method = b"".join((PUBLISH, bytes((len(ex),)), ex, bytes((len(rk),)), rk, b"\x01"))
    header = struct.pack(">HHQ", 60, 0, len(body)) + props
    pieces = [
        struct.pack(">BHI", 1, channel, len(method)),
        method,
        FRAME_END,
        struct.pack(">BHI", 2, channel, len(header)),
        header,
        FRAME_END,
    ]
    for start in range(0, len(body), max_body):
        chunk = body[start : start + max_body]
        pieces += (struct.pack(">BHI", 3, channel, len(chunk)), chunk, FRAME_END)
    return b"".join(pieces)


def _same_properties(sent: bytes, got: Any) -> bool:
    """Whether a returned message's properties are those of one we sent."""
    if not isinstance(got, RawProperties):
        return False
    if sent == got.raw:
        return True
    mine = RawProperties(sent)
    return mine.props == got.props and mine.headers == got.headers


def publish(
    amqp_url: str,
    vhost: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: dict[str, Any],
    headers: dict[str, Any],
    timeout: float = 10.0,
) -> Published:
    """Publish one message, mandatory and confirmed; routed=False when the broker returned it."""
    unknown = set(properties) - set(PROPERTY_NAMES)
    if unknown:
        raise BrokerError(f"unknown properties: {', '.join(sorted(unknown))}", retryable=False)
    message = Message(body=body, id="", properties=dict(properties))
    conn = _Connection(amqp_url, vhost, timeout)
    try:
        publisher = _Publisher(conn)
        if publisher.missing_exchanges([exchange]):
            raise BrokerError(publisher._no_exchange(exchange), retryable=False)
        [sent] = publisher.send([Outgoing(message, exchange, routing_key, headers, body)])
    finally:
        conn.close()
    if sent.error and sent.error != "broker refused (nack)":
        raise BrokerError(sent.error, retryable=False)
    return Published(confirmed=sent.confirmed, routed=sent.routed)


class ExchangeSender:
    """Confirmed, mandatory publishes of whole batches into one vhost, for an import."""

    def __init__(self, amqp_url: str, vhost: str, timeout: float = 10.0) -> None:
        self._conn = _Connection(amqp_url, vhost, timeout)
        self._publisher = _Publisher(self._conn)

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        return self._publisher.send(batch)

    def close(self) -> None:
        self._publisher.close()
        self._conn.close()
