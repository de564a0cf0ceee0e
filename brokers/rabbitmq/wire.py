"""One AMQP connection, driven synchronously, and the frame reader it reads with.

`_Connection` opens a connection with pika's BlockingConnection and then
drives its asynchronous core, so that a batch can be written whole and its
confirms awaited together; `_FrameReader` replaces pika's frame reader on it to
hand whole deliveries and confirms straight to their callbacks. The pika
internals this takes are in `brokers.rabbitmq.internals`. Failures come out as
`BrokerError` (`ChannelClosed` when the broker closed a channel).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions

from brokers.base import BrokerError
from brokers.rabbitmq import internals
from brokers.rabbitmq.codec import RawProperties

_unpack_from = struct.unpack_from
_frame_buffer = internals.frame_buffer


class _FrameReader:
    """pika's frame reader for one connection, with two shortcuts.

    Content headers of class basic become RawProperties. And a delivery to a
    registered consumer channel, once all its frames are in the buffer, goes
    straight to the consumer's callback: pika would otherwise dispatch its
    three frames one by one through its channel machinery, which costs more
    than decoding them. Large or incomplete deliveries take pika's way.
    """

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        # Channel number -> on_delivery(tag, redelivered, exchange, routing key,
        # encoded properties, body).
        self.consumers: dict[int, Callable[[int, bool, str, str, bytes, bytes], None]] = {}
        # Channel number -> on_confirm(sequence number, multiple, ack): one per
        # channel in confirm mode; a batch brings hundreds of these small frames.
        self.confirms: dict[int, Callable[[int, bool, bool], None]] = {}

    def __call__(self) -> tuple[int, Any]:
        buf = _frame_buffer(self.impl)
        if len(buf) >= 19:
            if buf[0] == 1:
                method = buf[7:11]
                if method == DELIVER and self.consumers:
                    on_delivery = self.consumers.get(_unpack_from(">H", buf, 1)[0])
                    if on_delivery is not None:
                        done = self._delivery(buf, on_delivery)
                        if done is not None:
                            return done
                elif (method == ACK or method == NACK) and len(buf) >= 21:
                    on_confirm = self.confirms.get(_unpack_from(">H", buf, 1)[0])
                    if on_confirm is not None and buf[20] == 0xCE:
                        tag, bits = _unpack_from(">QB", buf, 11)
                        on_confirm(tag, bool(bits & 1), method == ACK)
                        return 21, SKIP
            elif buf[0] == 2:
                end = 8 + _unpack_from(">I", buf, 3)[0]
                if end > len(buf):
                    return 0, None
                class_id, _weight, body_size = _unpack_from(">HHQ", buf, 7)
                if class_id == 60 and buf[end - 1] == 0xCE:
                    channel = _unpack_from(">H", buf, 1)[0]
                    raw = RawProperties(buf[19 : end - 1])
                    return end, pika.frame.Header(channel, body_size, raw)
        return pika.frame.decode_frame(buf)

    def _delivery(
        self, buf: bytes, on_delivery: Callable[[int, bool, str, str, bytes, bytes], None]
    ) -> tuple[int, Any] | None:
        """Consume a whole basic.deliver; (0, None) to wait for more; None to leave it to pika."""
        n = len(buf)
        # Wait for the rest of a small delivery; a large one goes frame by frame.
        incomplete = (0, None) if n < WHOLE_DELIVERY else None
        end = 8 + _unpack_from(">I", buf, 3)[0]
        if end + 19 > n:
            return incomplete
        off = 12 + buf[11]  # past the consumer tag
        tag, flags = _unpack_from(">QB", buf, off)
        off += 9
        exchange = buf[off + 1 : off + 1 + buf[off]].decode()
        off += 1 + buf[off]
        routing_key = buf[off + 1 : off + 1 + buf[off]].decode()
        if buf[end - 1] != 0xCE or buf[end] != 2:
            return None
        header_end = end + 8 + _unpack_from(">I", buf, end + 3)[0]
        if header_end > n:
            return incomplete
        class_id, _weight, body_size = _unpack_from(">HHQ", buf, end + 7)
        if class_id != 60 or buf[header_end - 1] != 0xCE:
            return None
        pos, parts, got = header_end, [], 0
        while got < body_size:
            if pos + 8 > n:
                return incomplete
            frame_end = pos + 8 + _unpack_from(">I", buf, pos + 3)[0]
            if frame_end > n:
                return incomplete
            if buf[pos] != 3 or buf[frame_end - 1] != 0xCE:
                return None
            parts.append(buf[pos + 7 : frame_end - 1])
            got += frame_end - pos - 8
            pos = frame_end
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        on_delivery(
            tag, bool(flags & 1), exchange, routing_key, buf[end + 19 : header_end - 1], body
        )
        return pos, SKIP


# Class and method ids of basic.deliver, basic.ack and basic.nack; how much of
# a delivery is awaited whole.
DELIVER = struct.pack(">HH", 60, 60)
ACK = struct.pack(">HH", 60, 80)
NACK = struct.pack(">HH", 60, 120)
WHOLE_DELIVERY = 128 * 1024
# A frame pika's connection ignores (frame_type -1): what a consumed delivery
# leaves (see `brokers.rabbitmq.internals`).
SKIP = pika.frame.ProtocolHeader()


# -- connections ------------------------------------------------------------


class _Connection:
    """One AMQP connection, driven synchronously and waited on with timeouts.

    pika's BlockingConnection opens it (handshake, errors, timeouts); all the
    rest happens on its asynchronous core (`impl`), whose callbacks run while
    `wait` pumps the socket. That lets a batch be published without waiting
    for each confirm, which BlockingChannel.basic_publish in confirm mode does.
    """

    def __init__(self, amqp_url: str, vhost: str, timeout: float) -> None:
        try:
            params = pika.URLParameters(amqp_url)
        except (ValueError, TypeError):
            raise BrokerError("amqp_url is not a valid amqp(s):// URL", retryable=False) from None
        params.virtual_host = vhost
        params.socket_timeout = timeout
        params.stack_timeout = timeout
        params.connection_attempts = 1
        params.client_properties = {"connection_name": "sluice"}
        self.where = f"{params.host}:{params.port}"
        self.vhost = vhost
        self.timeout = timeout
        user = getattr(params.credentials, "username", "")
        try:
            self.blocking = pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError:
            raise BrokerError(
                f"{self.where} refused the credentials of {user!r} (AMQP)", retryable=False
            ) from None
        except pika.exceptions.ProbableAccessDeniedError:
            raise BrokerError(
                f"user {user!r} may not use vhost {vhost!r} on {self.where}", retryable=False
            ) from None
        except pika.exceptions.ConnectionClosedByBroker as exc:
            raise BrokerError(
                f"{self.where} closed the AMQP connection: {exc.reply_text}",
                retryable=exc.reply_code != 530,  # 530: no such vhost, or not allowed in it
            ) from None
        except pika.exceptions.IncompatibleProtocolError:
            raise BrokerError(
                f"{self.where} does not speak AMQP 0-9-1 (is this the AMQP port?)", retryable=False
            ) from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerError(f"cannot reach {self.where} over AMQP: {_cause(exc)}") from None
        self.impl = internals.core_of(self.blocking)
        # Frames are read by `_FrameReader`, on this connection only.
        self.reader = _FrameReader(self.impl)
        internals.read_frames_with(self.impl, self.reader)

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Send what is buffered and process input until `done()` or `timeout` s; returns done()."""
        try:
            internals.pump(self.blocking, done, timeout)
        except pika.exceptions.AMQPError as exc:
            raise self.lost(exc) from None
        return done()

    def flush(self) -> None:
        """Send what is buffered (acks, nacks) without waiting for any answer."""
        self.wait(lambda: True, self.timeout)

    def lost(self, exc: BaseException) -> BrokerError:
        if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
            return BrokerError(f"{self.where} closed the AMQP connection: {exc.reply_text}")
        return BrokerError(f"lost the AMQP connection to {self.where}: {_cause(exc)}")

    def channel(self) -> pika.channel.Channel:
        opened: list[Any] = []
        try:
            ch = self.impl.channel(on_open_callback=opened.append)
        except pika.exceptions.AMQPError as exc:
            raise self.lost(exc) from None
        if not self.wait(lambda: bool(opened) or ch.is_closed, self.timeout) or not opened:
            raise BrokerError(f"{self.where} did not open a channel within {self.timeout:g} s")
        return ch

    def call(
        self, ch: pika.channel.Channel, start: Callable[[Callable[[Any], None]], None], what: str
    ) -> Any:
        """Run one channel RPC (`start(callback)`) and return its answer, or raise BrokerError."""
        answers: list[Any] = []
        closed: list[BaseException] = []
        ch.add_on_close_callback(lambda _ch, reason: closed.append(reason))
        start(answers.append)
        if not self.wait(lambda: bool(answers or closed), self.timeout):
            raise BrokerError(f"{self.where} did not answer {what} within {self.timeout:g} s")
        if closed:
            raise channel_error(closed[0], what)
        return answers[0]

    def close(self) -> None:
        """Close the connection; whatever it held unacknowledged goes back to its queue."""
        if self.impl.is_closed:
            return
        try:
            if not self.impl.is_closing:
                self.impl.close()
            self.wait(lambda: self.impl.is_closed, self.timeout)
        except (BrokerError, pika.exceptions.AMQPError):
            pass  # closing anyway; the broker requeues what this connection held
        if not self.impl.is_closed:
            internals.disconnect(self.impl)


class ChannelClosed(BrokerError):
    """The broker closed a channel, e.g. 404 for a missing queue or exchange."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, retryable=code not in (403, 404, 406))
        self.code = code


def channel_error(reason: BaseException, what: str) -> ChannelClosed:
    """A BrokerError for a channel the broker closed while doing `what`."""
    code = getattr(reason, "reply_code", 0)
    text = getattr(reason, "reply_text", "") or str(reason)
    # "NOT_FOUND - no queue 'q' in vhost 'v'" reads well without its prefix.
    return ChannelClosed(f"{what}: {text.split(' - ', 1)[-1]}", code)


def _cause(exc: BaseException) -> str:
    """A short reason for an AMQP failure; pika's own messages can be long and nested."""
    text = repr(exc).lower()
    for needle, said in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
        ("reset by peer", "connection reset"),
        ("eof", "connection closed by the server"),
        ("certificate verify failed", "certificate verify failed"),
        ("wrong version number", "the port does not speak TLS"),
    ):
        if needle in text:
            return said
    return type(exc).__name__
