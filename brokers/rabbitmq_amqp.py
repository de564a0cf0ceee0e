"""RabbitMQ over AMQP 0-9-1 (pika): reading, browsing, publishing and moving messages.

Talks to: one broker's AMQP port through pika, one connection per session
(`AmqpTransfer`) or per call (`publish`, stream `browse`); classic and quorum
queues are browsed through the management API instead (`POST .../get`).
This is the only module that imports pika; `brokers.rabbitmq` imports it
lazily so that monitoring never does.

Options:
    amqp_url    amqp(s)://user:password@host:5672/vhost; `vhost` arguments
                override the URL's vhost
    timeout     seconds allowed for each wait: connecting, a channel RPC, a
                batch's confirms (counted from the last confirm that arrived)

Also here, pure and broker-free: `routes` (where a message would go, from
collected bindings) and `replay_target` (where a dead letter came from).

Speed: pika's BlockingChannel waits for each publisher confirm, and its
pure-Python frame handling costs more per message than everything else. So
connections are opened by BlockingConnection but driven through its
asynchronous core: batches are written whole and confirmed pipelined
(`_Publisher`), deliveries and confirms are read by `_FrameReader`, and basic
properties go through a codec of our own that decodes straight to JSON-safe
values and re-sends unchanged headers byte for byte. That leans on pika
internals (`BlockingConnection._flush_output` and `_impl`, the connection's
`_read_frame`, `_frame_buffer`, `_adapter_emit_data`, `_body_max_length`),
checked against pika 1.4; the tests exercise every one of them.

Cannot:
    - attribute a basic.return by anything but content (AMQP returns carry no
      sequence number): two byte-identical messages in one batch of which only
      one was routed are told apart arbitrarily, which is harmless because the
      outcome is the same;
    - give truncated browse results the id a full read gives, when the message
      has no message_id: the fingerprint covers the whole body;
    - decode floats in headers of messages read with pika elsewhere and given
      to `message_from_amqp` (pika turns them into ints); our own reads are exact;
    - make headers read through the management API (browse of classic and
      quorum queues) identical to AMQP reads for decimals and voids (the API
      renders 1.25 as 2.125 and a void as "undefined"); non-UTF-8 strings are
      matched;
    - browse a quorum queue without counting a delivery attempt: the
      management API's get requeues with nack, which counts towards a
      `delivery-limit` if one is set.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import json
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import _IoloopTimerContext

from brokers.base import BrokerError, Message, Outgoing, Published, Sent
from brokers.rabbitmq_api import ManagementAPI, quote_path

PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)
# Headers the broker sets per delivery: left out of the fingerprint so that a
# message keeps its id when a quorum queue redelivers it or a stream serves it.
VOLATILE_HEADERS = frozenset({"x-delivery-count", "x-acquired-count", "x-stream-offset"})
# How the management API renders a longstr that is not UTF-8.
API_NOT_UTF8 = "Not UTF-8, base64 is: "
# Once a fetch has its first message, how long it waits for the prefetch window
# to fill the rest of the batch.
LINGER = 0.005
# basic.publish's class and method ids and reserved ticket; the frame end octet.
PUBLISH = struct.pack(">HHH", 60, 40, 0)
FRAME_END = b"\xce"
# Publishes are written in chunks of about this size, so the broker starts early.
EMIT_BYTES = 256 * 1024
# A stream browse stops when no message came for this long (streams have no end marker).
STREAM_IDLE = 0.3


# -- messages ---------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """`value` with AMQP types made JSON-serialisable, the same way every time.

    bytes become str when valid UTF-8, else {"base64": ...}; datetimes become
    Unix seconds; decimals become int or float; non-finite floats become str.
    """
    t = type(value)  # exact types first: this runs for every header of every message
    if t is str or t is int or t is bool or value is None:
        return value
    if t is dict:
        return {k if type(k) is str else _key(k): json_safe(v) for k, v in value.items()}
    if t is list:
        return [json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return calendar.timegm(value.utctimetuple())  # naive means UTC, as pika encodes it
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | int):  # subclasses
        return value
    if isinstance(value, dict):
        return {_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def _key(key: Any) -> str:
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def fingerprint(body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """The id of a message without message_id: a hash of body, headers and properties."""
    stable = (
        headers
        if VOLATILE_HEADERS.isdisjoint(headers)
        else {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}
    )
    canonical = _CANONICAL.encode({"headers": stable, "properties": properties})
    return "sha256:" + hashlib.sha256(body + canonical.encode()).hexdigest()[:32]


def properties_dict(properties: pika.BasicProperties) -> dict[str, Any]:
    """The set basic properties but headers, JSON-safe; timestamp in Unix seconds."""
    out = {}
    for name in PROPERTY_NAMES:
        value = getattr(properties, name)
        if value is not None:
            out[name] = json_safe(value)
    return out


def message_from_amqp(
    method: Any, properties: Any, body: bytes, truncate: int | None = None
) -> Message:
    """A `Message` from what pika delivers (Basic.Deliver, GetOk or Return)."""
    return _message(
        method.exchange,
        method.routing_key,
        bool(getattr(method, "redelivered", False)),
        properties,
        body,
        truncate,
        getattr(method, "delivery_tag", None),
    )


def _message(
    exchange: str,
    routing_key: str,
    redelivered: bool,
    properties: Any,
    body: bytes,
    truncate: int | None,
    handle: Any,
    position: int | None = None,
) -> Message:
    if isinstance(properties, RawProperties):
        props = properties.props
        headers = dict(properties.headers)  # the caller's to change; the original stays intact
    else:
        props = properties_dict(properties)
        headers = json_safe(properties.headers) if properties.headers else {}
    size = len(body)
    msg_id = props.get("message_id") or fingerprint(body, headers, props)
    truncated = truncate is not None and size > truncate
    return Message(
        body=body[:truncate] if truncated else body,
        id=msg_id,
        exchange=exchange,
        routing_key=routing_key,
        properties=props,
        headers=headers,
        redelivered=redelivered,
        position=position,
        size=size,
        truncated=truncated,
        handle=handle,
    )


def _wire_properties(out: Outgoing) -> bytes:
    """The encoded properties to publish `out` with: the original ones, `out.headers` as headers."""
    handle = out.message.handle
    if isinstance(handle, _Delivery):
        return handle.with_headers(out.headers)
    return encode_properties(out.message.properties, out.headers)


# -- the wire format of basic properties --------------------------------------
#
# pika's pure-Python codec for content headers costs more than everything else
# a replay does per message (an x-death header is a nested table). This one
# decodes straight to JSON-safe values, keeps each header's bytes, and
# re-encodes a message by copying the bytes of the headers that did not change.

# (name, kind) in flag order, bit 15 first: s shortstr, o octet, F table, T timestamp.
PROPERTY_FIELDS = (
    ("content_type", "s"),
    ("content_encoding", "s"),
    ("headers", "F"),
    ("delivery_mode", "o"),
    ("priority", "o"),
    ("correlation_id", "s"),
    ("reply_to", "s"),
    ("expiration", "s"),
    ("message_id", "s"),
    ("timestamp", "T"),
    ("type", "s"),
    ("user_id", "s"),
    ("app_id", "s"),
    ("cluster_id", "s"),
)
HEADERS_FLAG = 1 << 13
_unpack_from = struct.unpack_from


class RawProperties:
    """A content header's basic properties: as received, and decoded JSON-safe."""

    __slots__ = ("raw", "props", "headers", "start", "end", "entries")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw  # property flags and list, as on the wire
        # The properties but headers, the headers, where the header table
        # starts and ends in `raw`, and each header's bytes in it.
        self.props, self.headers, self.start, self.end, self.entries = _decode_properties(raw)

    def with_headers(self, headers: dict[str, Any]) -> bytes:
        """These properties, encoded, with `headers` as the complete header table.

        Headers whose value is still the one decoded (the same object, or an
        equal one of the same type) are copied as received, AMQP types and all.
        """
        decoded, entries = self.headers, self.entries
        pieces: list[bytes] = []
        for k, v in headers.items():
            entry = entries.get(k)
            if entry is not None:
                was = decoded[k]
                if v is was or (type(v) is type(was) and v == was):
                    pieces.append(entry)
                    continue
            _encode_entry(pieces, k, v)
        raw = self.raw
        flags = _unpack_from(">H", raw)[0]
        if pieces:
            table = b"".join(pieces)
            flags |= HEADERS_FLAG
            middle = [struct.pack(">I", len(table)), table]
        else:
            flags &= ~HEADERS_FLAG
            middle = []
        return b"".join((struct.pack(">H", flags), raw[2 : self.start], *middle, raw[self.end :]))


class _Delivery(RawProperties):
    """A Message's handle in an AmqpTransfer: its delivery tag, and properties as received."""

    __slots__ = ("session", "tag")

    def __init__(self, session: int, tag: int, raw: bytes) -> None:
        super().__init__(raw)
        self.session = session  # delivery tags mean something on their own channel only
        self.tag = tag


def _decode_properties(
    raw: bytes,
) -> tuple[dict[str, Any], dict[str, Any], int, int, dict[str, bytes]]:
    flags = _unpack_from(">H", raw)[0]
    off = 2
    while _unpack_from(">H", raw, off - 2)[0] & 1:  # continuation: more flag words (unused)
        off += 2
    props: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    entries: dict[str, bytes] = {}
    start = end = 0
    bit = 15
    for name, kind in PROPERTY_FIELDS:
        present = flags & (1 << bit)
        bit -= 1
        if kind == "F":
            start = off
            if present:
                size = _unpack_from(">I", raw, off)[0]
                end = off + 4 + size
                _decode_table(raw, off + 4, end, headers, entries)
                off = end
            else:
                end = off
            continue
        if not present:
            continue
        if kind == "s":
            n = raw[off]
            value: Any = _text(raw[off + 1 : off + 1 + n])
            off += 1 + n
        elif kind == "o":
            value = raw[off]
            off += 1
        else:
            value = _unpack_from(">Q", raw, off)[0]
            off += 8
        if name != "cluster_id":  # deprecated; kept on the wire, not shown
            props[name] = value
    return props, headers, start, end, entries


def _decode_table(
    data: bytes, off: int, end: int, into: dict[str, Any], entries: dict[str, bytes] | None = None
) -> int:
    while off < end:
        begin = off
        off += 1 + data[off]
        key = data[begin + 1 : off].decode("utf-8", "backslashreplace")
        if data[off] == 83:  # S longstr, by far the commonest: inlined
            start = off + 5
            off = start + _unpack_from(">I", data, off + 1)[0]
            try:
                value: Any = data[start:off].decode()
            except UnicodeDecodeError:
                value = _text(data[start:off])
        else:
            value, off = _decode_value(data, off)
        into[key] = value
        if entries is not None:
            entries[key] = data[begin:off]
    return off


def _decode_value(data: bytes, off: int) -> tuple[Any, int]:
    """One field value, JSON-safe as `json_safe` would make pika's."""
    kind = data[off]
    off += 1
    if kind == 83 or kind == 120:  # S longstr, x byte array
        n = _unpack_from(">I", data, off)[0]
        off += 4
        return _text(data[off : off + n]), off + n
    if kind == 108 or kind == 76:  # l, L: 64-bit signed
        return _unpack_from(">q", data, off)[0], off + 8
    if kind == 73:  # I
        return _unpack_from(">i", data, off)[0], off + 4
    if kind == 70:  # F table
        size = _unpack_from(">I", data, off)[0]
        table: dict[str, Any] = {}
        _decode_table(data, off + 4, off + 4 + size, table)
        return table, off + 4 + size
    if kind == 65:  # A array
        size = _unpack_from(">I", data, off)[0]
        off += 4
        stop = off + size
        items = []
        while off < stop:
            item, off = _decode_value(data, off)
            items.append(item)
        return items, off
    if kind == 84:  # T timestamp: Unix seconds already
        return _unpack_from(">Q", data, off)[0], off + 8
    if kind == 116:  # t
        return bool(data[off]), off + 1
    if kind == 86:  # V void
        return None, off
    if kind == 68:  # D decimal
        scale, unscaled = _unpack_from(">Bi", data, off)
        return json_safe(Decimal(unscaled).scaleb(-scale)), off + 5
    fmt = SCALARS.get(kind)
    if fmt is None:
        raise ValueError(f"unknown AMQP field type {chr(kind)!r}")
    return json_safe(_unpack_from(fmt, data, off)[0]), off + struct.calcsize(fmt)


# Fixed-size field types: b, B, s and U (16-bit signed), u, i, f, d.
SCALARS = {98: ">b", 66: ">B", 115: ">h", 85: ">h", 117: ">H", 105: ">I", 102: ">f", 100: ">d"}


def _text(raw: bytes) -> Any:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def encode_properties(properties: dict[str, Any], headers: dict[str, Any]) -> bytes:
    """Basic properties (as in `Message.properties`) and headers, encoded for a content header."""
    flags = 0
    pieces: list[bytes] = []
    bit = 15
    for name, kind in PROPERTY_FIELDS:
        value: Any = headers if name == "headers" else properties.get(name)
        if value is not None and value != {}:
            flags |= 1 << bit
            if kind == "s":
                _shortstr(pieces, str(value))
            elif kind == "o":
                pieces.append(struct.pack(">B", int(value)))
            elif kind == "T":
                pieces.append(struct.pack(">Q", int(value)))
            else:
                table: list[bytes] = []
                for k, v in value.items():
                    _encode_entry(table, k, v)
                body = b"".join(table)
                pieces += (struct.pack(">I", len(body)), body)
        bit -= 1
    return b"".join((struct.pack(">H", flags), *pieces))


def _shortstr(pieces: list[bytes], text: str) -> None:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:40]!r}... is longer than 255 bytes")
    pieces += (bytes((len(raw),)), raw)


def _encode_entry(pieces: list[bytes], key: str, value: Any) -> None:
    # A job adds the same few lineage headers to every message: encode each once.
    cacheable = type(value) in (str, int, bool)
    if cacheable:
        entry = _ENTRIES.get((key, type(value), value))
        if entry is not None:
            pieces.append(entry)
            return
    encoded: list[bytes] = []
    _shortstr(encoded, str(key))
    _encode_value(encoded, value)
    entry = b"".join(encoded)
    if cacheable and len(entry) <= 512:
        if len(_ENTRIES) >= 1024:
            _ENTRIES.clear()
        _ENTRIES[(key, type(value), value)] = entry
    pieces.append(entry)


_ENTRIES: dict[tuple[str, type, Any], bytes] = {}


def _encode_value(pieces: list[bytes], value: Any) -> None:
    """JSON-like values (and bytes, Decimal, datetime) as AMQP field values."""
    if isinstance(value, str):
        raw = value.encode()
        pieces += (b"S", struct.pack(">I", len(raw)), raw)
    elif isinstance(value, bool):
        pieces.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int) and -(2**31) <= value < 2**31:
        pieces.append(struct.pack(">ci", b"I", value))
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        pieces.append(struct.pack(">cq", b"l", value))
    elif isinstance(value, float):
        pieces.append(struct.pack(">cd", b"d", value))
    elif isinstance(value, dict):
        table: list[bytes] = []
        for k, v in value.items():
            _encode_entry(table, k, v)
        body = b"".join(table)
        pieces += (b"F", struct.pack(">I", len(body)), body)
    elif isinstance(value, list | tuple):
        items: list[bytes] = []
        for v in value:
            _encode_value(items, v)
        body = b"".join(items)
        pieces += (b"A", struct.pack(">I", len(body)), body)
    elif value is None:
        pieces.append(b"V")
    elif isinstance(value, bytes | bytearray):
        pieces += (b"x", struct.pack(">I", len(value)), bytes(value))
    elif isinstance(value, datetime):
        pieces.append(struct.pack(">cQ", b"T", calendar.timegm(value.utctimetuple())))
    elif isinstance(value, Decimal) and value.is_finite():
        sign, digits, exponent = value.as_tuple()
        unscaled = int(value.scaleb(-int(exponent))) if isinstance(exponent, int) else 0
        if isinstance(exponent, int) and -255 <= exponent <= 0 and -(2**31) <= unscaled < 2**31:
            pieces.append(struct.pack(">cBi", b"D", -exponent, unscaled))
        else:
            _encode_value(pieces, str(value))
    else:  # integers too large for AMQP, NaN decimals, anything else: as text
        _encode_value(pieces, str(value))


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
        buf = self.impl._frame_buffer
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
# A frame pika's connection ignores (frame_type -1): what a consumed delivery leaves.
SKIP = pika.frame.ProtocolHeader()


# -- connections ------------------------------------------------------------


class _Connection:
    """One AMQP connection, driven synchronously and waited on with timeouts.

    pika's BlockingConnection opens it (handshake, errors, timeouts); all the
    rest happens on its asynchronous core (`_impl`), whose callbacks run while
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
        self.impl = self.blocking._impl
        # Frames are read by `_FrameReader`, on this connection only.
        self.reader = _FrameReader(self.impl)
        self.impl._read_frame = self.reader

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Send what is buffered and process input until `done()` or `timeout` s; returns done()."""
        try:
            with _IoloopTimerContext(timeout, self.impl) as timer:
                self.blocking._flush_output(timer.is_ready, done)
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
            self.impl._adapter_disconnect_stream()


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


# -- publishing -------------------------------------------------------------


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
        impl, number, max_body = self.conn.impl, ch.channel_number, self.conn.impl._body_max_length
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
            impl._adapter_emit_data(data)
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


def _passive_queue(ch: pika.channel.Channel, name: str) -> Callable[[Callable[[Any], None]], None]:
    return lambda cb: ch.queue_declare(name, passive=True, callback=cb)


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


# -- moving -----------------------------------------------------------------


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


# -- browsing ---------------------------------------------------------------


def browse(
    amqp_url: str,
    api: ManagementAPI,
    vhost: str,
    queue: str,
    queue_type: str,
    count: int,
    offset: int | None = None,
    truncate: int | None = 65536,
    timeout: float = 10.0,
) -> list[Message]:
    """Up to `count` messages from the head (or a stream's `offset`), left where they are.

    Streams are read over AMQP from `offset` (default: the first). Classic and
    quorum queues go through the management API, which gets and requeues them:
    they stay, marked redelivered.
    """
    if queue_type == "stream":
        return _browse_stream(amqp_url, vhost, queue, count, offset, truncate, timeout)
    request: dict[str, Any] = {"count": count, "ackmode": "ack_requeue_true", "encoding": "base64"}
    if truncate is not None:
        request["truncate"] = truncate  # the API refuses null
    reply = api.post("/api/queues" + quote_path(vhost, queue) + "/get", request)
    return [_message_from_api(item) for item in reply]


def _message_from_api(item: dict[str, Any]) -> Message:
    raw = item.get("properties") or {}
    props = {k: raw[k] for k in PROPERTY_NAMES if raw.get(k) is not None}
    headers = {k: _from_api(v) for k, v in (raw.get("headers") or {}).items()}
    payload = item.get("payload") or ""
    if item.get("payload_encoding") == "base64":
        try:
            body = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            body = payload.encode()
    else:
        body = payload.encode()
    size = int(item.get("payload_bytes", len(body)))
    return Message(
        body=body,
        id=props.get("message_id") or fingerprint(body, headers, props),
        exchange=item.get("exchange", ""),
        routing_key=item.get("routing_key", ""),
        properties=props,
        headers=headers,
        redelivered=bool(item.get("redelivered", False)),
        size=size,
        truncated=len(body) < size,
    )


def _from_api(value: Any) -> Any:
    """A header value from the management API's JSON, as `json_safe` renders it from AMQP."""
    if isinstance(value, str) and value.startswith(API_NOT_UTF8):
        return {"base64": value[len(API_NOT_UTF8) :]}
    if isinstance(value, dict):
        return {k: _from_api(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_api(v) for v in value]
    return value


def _browse_stream(
    amqp_url: str,
    vhost: str,
    queue: str,
    count: int,
    offset: int | None,
    truncate: int | None,
    timeout: float,
) -> list[Message]:
    """Read a stream from `offset` with a throwaway consumer; a stream has no end, so stop when idle."""
    got: list[Message] = []
    if count <= 0:
        return got
    conn = _Connection(amqp_url, vhost, timeout)
    try:
        ch = conn.channel()
        conn.call(ch, lambda cb: ch.basic_qos(prefetch_count=min(count, 1000), callback=cb), "qos")

        def on_delivery(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            position = props.headers.get("x-stream-offset")  # props: RawProperties
            # Reading starts at the chunk holding `offset`: skip what precedes it.
            if offset is not None and isinstance(position, int) and position < offset:
                ch.basic_ack(method.delivery_tag)
                return
            if len(got) < count:
                got.append(
                    _message(
                        method.exchange,
                        method.routing_key,
                        method.redelivered,
                        props,
                        body,
                        truncate,
                        None,
                        position,
                    )
                )
            # Acks on a stream only grant credit: nothing is removed.
            ch.basic_ack(method.delivery_tag)

        arguments = {"x-stream-offset": "first" if offset is None else offset}
        conn.call(
            ch,
            lambda cb: ch.basic_consume(queue, on_delivery, arguments=arguments, callback=cb),
            f"reading stream {queue!r}",
        )
        deadline = time.monotonic() + timeout
        wait = min(1.0, timeout)  # the first chunk takes a moment to be read from disk
        while len(got) < count and time.monotonic() < deadline and ch.is_open:
            had = len(got)
            conn.wait(lambda: len(got) >= count or ch.is_closed, wait)
            if len(got) == had:
                break
            wait = STREAM_IDLE
    finally:
        conn.close()
    return got


# -- routing preview ----------------------------------------------------------


def routes(
    bindings: list[dict[str, Any]],
    queues: set[str],
    vhost: str,
    exchange: str,
    exchange_types: dict[str, str],
    routing_key: str,
    headers: dict[str, Any],
    exchange_args: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """The queues a message published to `exchange` would reach, from collected bindings.

    Follows RabbitMQ's router: the default exchange delivers to the queue named
    by the routing key; direct, fanout, topic and headers exchanges match their
    bindings; exchange-to-exchange bindings are followed once each; an
    exchange's `alternate-exchange` is used when none of its bindings matched.
    CC and BCC headers add routing keys. Unknown exchange types route nowhere.
    `exchange_args` holds each exchange's arguments (and policy, if merged).
    """
    exchange_args = exchange_args or {}
    keys = [routing_key]
    for name in ("CC", "BCC"):
        extra = headers.get(name)
        if isinstance(extra, list):
            keys += [k for k in extra if isinstance(k, str)]
    if exchange in ("", "amq.default"):
        return sorted({k for k in keys if k in queues})
    by_source: dict[str, list[dict[str, Any]]] = {}
    for b in bindings:
        if b.get("vhost", vhost) == vhost:
            by_source.setdefault(b.get("source", ""), []).append(b)
    found: set[str] = set()
    seen = {exchange}
    work = [exchange]
    while work:
        x = work.pop()
        kind = exchange_types.get(x)
        args = exchange_args.get(x) or {}
        if kind == "x-delayed-message":
            kind = args.get("x-delayed-type", "direct")
        if kind not in ("direct", "fanout", "topic", "headers"):
            continue  # no such exchange, or a plugin type whose routing we cannot know
        dests = [
            (b.get("destination_type", "queue"), b.get("destination", ""))
            for b in by_source.get(x, [])
            if _binding_matches(kind, b, keys, headers)
        ]
        if not dests and args.get("alternate-exchange"):
            dests = [("exchange", args["alternate-exchange"])]
        for dest_type, name in dests:
            if dest_type == "exchange":
                if name not in seen:
                    seen.add(name)
                    work.append(name)
            else:
                found.add(name)
    return sorted(found)


def _binding_matches(kind: str, binding: dict[str, Any], keys: list[str], headers: dict) -> bool:
    pattern = binding.get("routing_key", "")
    if kind == "fanout":
        return True
    if kind == "direct":
        return pattern in keys
    if kind == "topic":
        return any(topic_matches(pattern, k) for k in keys)
    return headers_match(binding.get("arguments") or {}, headers)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: dot-separated words, `*` exactly one, `#` zero or more."""
    # As RabbitMQ splits them: "" is no words at all, "a." is "a" and "".
    p = pattern.split(".") if pattern else []
    w = routing_key.split(".") if routing_key else []
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(p):
            result = j == len(w)
        elif p[i] == "#":
            result = match(i + 1, j) or (j < len(w) and match(i, j + 1))
        else:
            result = j < len(w) and p[i] in ("*", w[j]) and match(i + 1, j + 1)
        memo[(i, j)] = result
        return result

    return match(0, 0)


def headers_match(arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    """RabbitMQ's headers exchange: x-match all (default), any, all-with-x, any-with-x.

    Binding arguments starting with "x-" take no part unless x-match ends in
    "-with-x"; an argument without a value (None, or "undefined" as the
    management API shows a void) asks only that the header be present.
    """
    mode = arguments.get("x-match")
    mode = mode if mode in ("all", "any", "all-with-x", "any-with-x") else "all"
    with_x = mode.endswith("-with-x")
    results = [
        k in headers and (v is None or v == "undefined" or _same(v, headers[k]))
        for k, v in arguments.items()
        if k != "x-match" and (with_x or not k.startswith("x-"))
    ]
    return all(results) if mode.startswith("all") else any(results)


def _same(a: Any, b: Any) -> bool:
    # Erlang's == : 1 == 1.0, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


# -- dead letters -------------------------------------------------------------


def replay_target(message: Message, mode: str = "auto") -> tuple[str, str] | None:
    """(exchange, routing key) a dead letter first died from; None without x-death.

    mode "exchange": the exchange and first routing key it was published with
    before its first death; "queue": the queue it first died in, through the
    default exchange; "auto": "exchange" unless that was the default exchange.
    """
    if mode not in ("auto", "exchange", "queue"):
        raise ValueError(f"unknown replay mode {mode!r}")
    h = message.headers
    deaths = h.get("x-death")
    if not deaths or not isinstance(deaths, list):
        return None
    first_queue, first_reason = h.get("x-first-death-queue"), h.get("x-first-death-reason")
    # Newest first: the oldest entry for the first death's queue (and reason)
    # is the one; else the oldest for that queue; else the oldest of all.
    entry = by_queue = None
    for d in reversed(deaths):
        if isinstance(d, dict) and d.get("queue") == first_queue:
            if d.get("reason") == first_reason:
                entry = d
                break
            by_queue = by_queue or d
    entry = entry or by_queue or next((d for d in reversed(deaths) if isinstance(d, dict)), None)
    if entry is None:
        return None
    queue = first_queue or entry.get("queue") or ""
    exchange = entry.get("exchange")
    if exchange is None:
        exchange = h.get("x-first-death-exchange", "")
    keys = entry.get("routing-keys") or []
    key = keys[0] if keys else queue
    if mode == "exchange" or (mode == "auto" and exchange):
        return str(exchange), str(key)
    return ("", str(queue)) if queue else None
