"""What a message body is, when it is not plain text: recognised, decoded and named.

Recognised: gzip, zstd and snappy (framed, xerial or raw) compression, whose
content is recognised in turn; MessagePack and CBOR, when the whole body parses
to a map or an array; the Confluent wire format (a zero byte and a 4-byte schema
id before the payload); and Avro or Protobuf with the schemas an admin uploaded
(brokers/schemas.py). Decompression stops at `limit` bytes, so a small body that
inflates to gigabytes costs no more than `limit`. Pure: no Django, no broker.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import cbor2
import msgpack

from brokers import decompress
from brokers.decompress import GZIP, SNAPPY_FRAMED, SNAPPY_XERIAL, ZSTD
from brokers.schemas import AVRO, NotOfSchema, Schema, confluent_protobuf_payload

LIMIT = 16 * 1024 * 1024  # bytes a compressed body may inflate to
LAYERS = 4  # compression inside compression, at most
DEPTH = 200  # nesting of a decoded structure shown; deeper is reported, not shown


# Control characters other than tab, newline and carriage return: text has none,
# and every binary encoding here writes some (lengths, tags, zero bytes).
CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Decoded:
    """What a body was recognised as, and what it holds.

    `form` says what `value` is: "structure" (dicts with text keys, lists, text,
    numbers, booleans, None: ready for json.dumps), "text" (a str), or "bytes"
    (the innermost bytes, not recognised). `problem` says why decoding stopped
    short, if it did: a size limit, a corrupt stream, no schema that fits.
    """

    encoding: str  # "gzip → JSON", "MessagePack", "Confluent wire format, schema id 7 → Avro (x)"
    form: str
    value: Any
    problem: str = ""

    def pretty(self) -> str:
        """The value as a page shows it: indented JSON for a structure, else as it is."""
        if self.form == "structure":
            return json.dumps(self.value, indent=2, ensure_ascii=False)
        if self.form == "text":
            return str(self.value)
        return ""

    def searchable(self) -> str:
        """The value as text to look for words in: JSON as `json.dumps` writes it."""
        if self.form == "structure":
            return json.dumps(self.value, ensure_ascii=False)
        return str(self.value) if self.form == "text" else ""


def textual(data: bytes) -> bool:
    """Whether `data` is UTF-8 text with no control characters but tab and line ends."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return CONTROL.search(data) is None


def worth_decoding(data: bytes) -> bool:
    """Whether `decode` may find anything: compressed, or not plain text."""
    return data.startswith((GZIP, ZSTD)) or not textual(data)


def header_texts(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """Headers as text, from a mapping (RabbitMQ) or a list of pairs (Kafka, NATS)."""
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        found.setdefault(str(name), "" if value is None else str(value))
    return found


def decode(
    body: bytes,
    schemas: Sequence[Schema] = (),
    destinations: Iterable[str] = (),
    headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    limit: int = LIMIT,
) -> Decoded | None:
    """What `body` is, if it is compressed or in a binary encoding; None for plain text or JSON.

    `schemas` are tried where they apply to one of `destinations` (names or keys)
    and the headers: those matched by a header first, as the more specific.
    """
    texts = header_texts(headers)
    names = [d for d in destinations if d]
    fitting = [s for s in schemas if s.applies(names, texts)]
    fitting.sort(key=lambda s: not s.header)
    if not worth_decoding(body) and not (fitting and not _json(body)):
        return None
    return _decode(body, fitting, limit, LAYERS, top=True)


def _decode(
    body: bytes, schemas: list[Schema], limit: int, layers: int, top: bool
) -> Decoded | None:
    if layers and body.startswith((GZIP, ZSTD, SNAPPY_FRAMED, SNAPPY_XERIAL)):
        return _decompressed(body, schemas, limit, layers)
    if not top:
        parsed = _json(body)
        if parsed is not None:
            return Decoded("JSON", "structure", parsed[0])
        if textual(body):
            return Decoded("text", "text", body.decode("utf-8"))
    if body[:1] == b"\x00" and len(body) >= 5:
        return _confluent(body, schemas)
    for schema in schemas:
        try:
            return Decoded(schema.label, "structure", plain(schema.read(body)))
        except NotOfSchema:
            continue
        except TooDeep as exc:
            return Decoded(schema.label, "bytes", body, str(exc))
    if textual(body):  # tried above only for a schema that fits
        return None
    found = _self_describing(body)
    if found is not None:
        return found
    return _raw_snappy(body, schemas, limit, layers) if layers else None


def _decompressed(body: bytes, schemas: list[Schema], limit: int, layers: int) -> Decoded:
    name, inflate = (
        ("gzip", decompress.gunzip)
        if body.startswith(GZIP)
        else ("zstd", decompress.unzstd)
        if body.startswith(ZSTD)
        else ("snappy", decompress.unsnappy_framed)
        if body.startswith(SNAPPY_FRAMED)
        else ("snappy (xerial)", decompress.unsnappy_xerial)
    )
    inner, problem = inflate(body, limit)
    return _within(name, inner, problem, schemas, limit, layers)


def _within(
    name: str, inner: bytes, problem: str, schemas: list[Schema], limit: int, layers: int
) -> Decoded:
    """What was decompressed, recognised in turn, under the compression's name."""
    if problem and not inner:
        return Decoded(name, "bytes", inner, problem)
    if problem:
        # Cut short: JSON will not parse, but its text is still worth reading.
        text = _text_cut(inner)
        if text is not None:
            return Decoded(f"{name} → text", "text", text, problem)
        return Decoded(name, "bytes", inner, problem)
    found = _decode(inner, schemas, limit, layers - 1, top=False)
    if found is None:
        return Decoded(name, "bytes", inner)
    return Decoded(f"{name} → {found.encoding}", found.form, found.value, found.problem)


def _text_cut(data: bytes) -> str | None:
    """UTF-8 text cut anywhere, a split character at its end dropped; None if not text."""
    for drop in range(4):
        piece = data[: len(data) - drop] if drop else data
        if textual(piece):
            return piece.decode("utf-8")
    return None


def _raw_snappy(body: bytes, schemas: list[Schema], limit: int, layers: int) -> Decoded | None:
    """Raw snappy has no magic: taken as such only when what comes out is recognised.

    Snappy inflates at most about 21 times (a 3-byte copy of 64 bytes), so a block
    claiming more than 32 times its size is not snappy, and is not inflated to find out.
    """
    try:
        inner = decompress.snappy_block(body, min(limit, 32 * len(body)))
    except ValueError:
        return None
    found = _decode(inner, schemas, limit, layers - 1, top=False)
    if found is None or found.form == "bytes" or not inner:
        return None
    return Decoded(f"snappy → {found.encoding}", found.form, found.value, found.problem)


# -- self-describing encodings and the Confluent framing -----------------------


def _json(body: bytes) -> tuple[Any] | None:
    """(parsed,) when `body` is a JSON object or array, else None."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return (plain(json.loads(body)),)
    except (ValueError, RecursionError, TooDeep):
        return None


def _self_describing(body: bytes) -> Decoded | None:
    """MessagePack, then CBOR: the whole body a map or an array, and not text that happened to parse."""
    candidates: list[tuple[str, Any]] = []
    try:
        candidates.append(
            ("MessagePack", msgpack.unpackb(body, raw=False, strict_map_key=False, timestamp=3))
        )
    except (ValueError, msgpack.UnpackException, RecursionError):
        pass
    try:
        candidates.append(("CBOR", _cbor(body)))
    except (cbor2.CBORDecodeError, ValueError, RecursionError):
        pass
    for name, value in candidates:
        if not isinstance(value, Mapping | list | tuple) or _text_by_accident(body, value):
            continue
        try:
            return Decoded(name, "structure", plain(value))
        except TooDeep as exc:
            return Decoded(name, "bytes", body, str(exc))
    return None


def _cbor(body: bytes) -> Any:
    """The one CBOR item `body` holds; ValueError if bytes are left after it."""
    stream = io.BytesIO(body)
    value = cbor2.CBORDecoder(stream).decode()
    if stream.tell() != len(body):
        raise ValueError("bytes left after the CBOR item")
    return value


def _text_by_accident(body: bytes, value: Any) -> bool:
    """A few numbers from text in a one-byte charset ("’ok" in cp1252 is MessagePack [111, 107])."""
    numbers_only = isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )
    return numbers_only and CONTROL.search(body) is None


def _confluent(body: bytes, schemas: list[Schema]) -> Decoded:
    """A Confluent Schema Registry frame: named by its schema id, read with a schema that fits."""
    schema_id = int.from_bytes(body[1:5], "big")
    framing = f"Confluent wire format, schema id {schema_id}"
    payload = body[5:]
    parsed = _json(payload)
    if parsed is not None:  # the JSON Schema serializer writes the document as it is
        return Decoded(f"{framing} → JSON", "structure", parsed[0])
    tried = []
    for schema in schemas:
        try:
            datum = schema.read(
                payload if schema.kind == AVRO else confluent_protobuf_payload(payload)
            )
            return Decoded(f"{framing} → {schema.label}", "structure", plain(datum))
        except NotOfSchema as exc:
            tried.append(f"{schema.label}: {exc}")
        except TooDeep as exc:
            return Decoded(f"{framing} → {schema.label}", "bytes", payload, str(exc))
    if tried:
        return Decoded(
            framing, "bytes", payload, "no uploaded schema reads it (" + "; ".join(tried) + ")"
        )
    return Decoded(
        framing, "bytes", payload, "no uploaded schema matches its destination or headers"
    )


# -- values made ready for JSON -----------------------------------------------


class TooDeep(ValueError):
    """A structure nested deeper than a page shows."""


def plain(value: Any, depth: int = 0) -> Any:
    """`value` as JSON can write it: text keys, lists, bytes as base64 (as Protobuf's JSON does)."""
    if depth > DEPTH:
        raise TooDeep(f"nested more than {DEPTH} deep: not shown")
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        # Past 4,300 digits Python will not write an int as text.
        return (
            value if value.bit_length() < 14000 else f"(an integer of {value.bit_length():,} bits)"
        )
    if isinstance(value, Mapping):
        return {_key(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, msgpack.ExtType):  # a named tuple: before tuples
        return {"ext": value.code, "data": base64.b64encode(value.data).decode()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": plain(value.value, depth + 1)}
    return str(value)  # CBOR's undefined and simple values, and anything else a decoder makes


def _key(key: Any, depth: int) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    plain_key = plain(key, depth)
    return plain_key if isinstance(plain_key, str) else json.dumps(plain_key)
