"""The AMQP wire format of basic properties and field tables, and `json_safe`.

Exists because pika's pure-Python codec for content headers costs more than
everything else a replay does per message. This one decodes a content header
straight to JSON-safe values (exactly what `json_safe` makes of pika's), keeps
each header's bytes, and re-encodes a message by copying the bytes of the
headers that did not change. Pure: no pika, no I/O.
"""

from __future__ import annotations

import base64
import calendar
import math
import struct
from datetime import datetime
from decimal import Decimal
from typing import Any


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
# Tables and arrays nested in a header deeper than this are not decoded: RabbitMQ
# stores a header nested thousands deep, and reading it would exhaust the stack.
MAX_DEPTH = 32
TOO_DEEP = f"unreadable: nested deeper than {MAX_DEPTH} levels"
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
    data: bytes,
    off: int,
    end: int,
    into: dict[str, Any],
    entries: dict[str, bytes] | None = None,
    depth: int = 0,
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
            value, off = _decode_value(data, off, depth)
        into[key] = value
        if entries is not None:
            entries[key] = data[begin:off]
    return off


def _decode_value(data: bytes, off: int, depth: int = 0) -> tuple[Any, int]:
    """One field value, JSON-safe as `json_safe` would make pika's; tables and arrays
    nested deeper than MAX_DEPTH are skipped, read as TOO_DEEP (their bytes stay in
    `RawProperties.entries`, so a copy of the message keeps them)."""
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
        if depth >= MAX_DEPTH:
            return TOO_DEEP, off + 4 + size
        table: dict[str, Any] = {}
        _decode_table(data, off + 4, off + 4 + size, table, None, depth + 1)
        return table, off + 4 + size
    if kind == 65:  # A array
        size = _unpack_from(">I", data, off)[0]
        off += 4
        stop = off + size
        if depth >= MAX_DEPTH:
            return TOO_DEEP, stop
        items = []
        while off < stop:
            item, off = _decode_value(data, off, depth + 1)
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
