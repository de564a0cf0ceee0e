"""Avro and Protobuf schemas an admin uploads, ready to read message bodies with.

An Avro schema is the .avsc JSON, read with fastavro's schemaless reader (the body
holds one datum, no container header). A Protobuf schema is a FileDescriptorSet,
what `protoc --include_imports --descriptor_set_out=FILE` writes, plus the full name
of the message type. Which bodies a schema reads is said by a destination pattern
(fnmatch, on the destination's name or key) and by a header, either or both.
Pure: no Django.
"""

from __future__ import annotations

import fnmatch
import io
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fastavro

# Pure-Python reader, for recursive schemas only: fastavro's compiled reader recurses
# in C, so a body nested ten thousand deep crashes the process (checked on 1.13);
# this one stops at Python's recursion limit with a RecursionError instead.
from fastavro import _read_py as avro_py
from fastavro.schema import SchemaParseException, UnknownType
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

AVRO, PROTOBUF = "avro", "protobuf"
KINDS = (AVRO, PROTOBUF)

# What a reader can raise on bytes that are not of its schema: short reads, odd
# lengths, a union index out of range, text that is not UTF-8, a value out of range.
NOT_OF_SCHEMA = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    struct.error,
    DecodeError,
    json_format.Error,
)


class SchemaError(ValueError):
    """An uploaded schema that cannot be used, and what is wrong with it, in words.

    `field` is the upload's field to blame: "content" (the file) or "message_type".
    """

    def __init__(self, message: str, field: str = "content") -> None:
        super().__init__(message)
        self.field = field


class NotOfSchema(ValueError):
    """The bytes do not read as this schema's type."""


@dataclass(frozen=True)
class Schema:
    """An uploaded schema, parsed: where it applies and how it reads a payload."""

    name: str
    kind: str  # AVRO or PROTOBUF
    read: Callable[[bytes], Any] = field(repr=False, compare=False)
    destination: str = ""  # an fnmatch pattern; "" for any destination
    header: str = ""  # a header the message must carry; "" for none
    header_value: str = ""  # the value it must have; "" for any value
    message_type: str = ""  # Protobuf: the full name of the message type

    @property
    def label(self) -> str:
        """How a page names what read the body: "Avro (orders-value)"."""
        return f"{'Avro' if self.kind == AVRO else 'Protobuf'} ({self.name})"

    def applies(self, destinations: Iterable[str], headers: Mapping[str, str]) -> bool:
        """Whether this schema is for a body at one of `destinations` with these headers."""
        if self.destination and not any(
            fnmatch.fnmatchcase(name, self.destination) for name in destinations if name
        ):
            return False
        if self.header:
            if self.header not in headers:
                return False
            if self.header_value and headers[self.header] != self.header_value:
                return False
        return True


def compile_schema(
    name: str,
    kind: str,
    content: bytes,
    message_type: str = "",
    destination: str = "",
    header: str = "",
    header_value: str = "",
) -> Schema:
    """The uploaded schema, parsed and ready; SchemaError saying why it cannot be."""
    if not destination and not header:
        raise SchemaError(
            "Say which bodies the schema reads: a destination pattern, a header, or both.",
            "destination",
        )
    if kind == AVRO:
        read = avro_reader(content)
    elif kind == PROTOBUF:
        read, message_type = protobuf_reader(content, message_type)
    else:
        raise SchemaError(f"Unknown kind of schema {kind!r}: avro or protobuf.", "kind")
    return Schema(
        name=name,
        kind=kind,
        read=read,
        destination=destination,
        header=header,
        header_value=header_value,
        message_type=message_type,
    )


# -- Avro ---------------------------------------------------------------------


def avro_reader(content: bytes) -> Callable[[bytes], Any]:
    """A reader of one Avro datum of the .avsc schema in `content`."""
    try:
        text = content.decode("utf-8")
        schema = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"An Avro schema is JSON (an .avsc file); this is not: {exc}") from None
    if not isinstance(schema, dict | list | str):
        raise SchemaError("An Avro schema is a JSON object, array or type name.")
    try:
        parsed = fastavro.parse_schema(schema)
    except (SchemaParseException, UnknownType, ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"Not a valid Avro schema: {exc}") from None
    empty = _empty_items(parsed, {})
    if empty:
        # An array of items that take no bytes: a few bytes of count would make
        # the reader build a list of billions, so no body is read with it.
        raise SchemaError(
            f"The schema has an array of {empty}, which takes no bytes per item: a body could "
            "claim billions of them. Such a schema is not accepted."
        )
    reader = avro_py.schemaless_reader if _recursive(parsed, [], {}) else fastavro.schemaless_reader

    def read(payload: bytes) -> Any:
        stream = io.BytesIO(payload)
        try:
            value = reader(stream, parsed, None)
        except (*NOT_OF_SCHEMA, RecursionError) as exc:
            raise NotOfSchema(f"not of this Avro schema: {exc or type(exc).__name__}") from None
        left = len(payload) - stream.tell()
        if left:
            raise NotOfSchema(f"{left:,} bytes are left after the Avro datum")
        return value

    return read


def _named(schema: Any, names: dict[str, Any]) -> Any:
    """`schema` with a reference to a named type replaced by that type's definition."""
    if isinstance(schema, str):
        return names.get(schema, schema)
    return schema


def _empty_items(schema: Any, names: dict[str, Any], seen: frozenset[str] = frozenset()) -> str:
    """The type of an array's items that takes no bytes, if the schema has one; else ""."""
    schema = _named(schema, names)
    if isinstance(schema, list):
        return next((found for s in schema if (found := _empty_items(s, names, seen))), "")
    if not isinstance(schema, dict):
        return ""
    kind = schema.get("type")
    if "name" in schema and kind in ("record", "error", "enum", "fixed"):
        if schema["name"] in seen:
            return ""
        names[schema["name"]] = schema
        seen = seen | {schema["name"]}
    if kind == "array":
        items = _named(schema["items"], names)
        if _takes_no_bytes(items, names, frozenset()):
            return items if isinstance(items, str) else str(items.get("name") or items.get("type"))
        return _empty_items(items, names, seen)
    if kind == "map":
        return _empty_items(schema["values"], names, seen)
    if kind in ("record", "error"):
        return next(
            (found for f in schema["fields"] if (found := _empty_items(f["type"], names, seen))),
            "",
        )
    return ""


def _takes_no_bytes(schema: Any, names: dict[str, Any], seen: frozenset[str]) -> bool:
    schema = _named(schema, names)
    if schema == "null":
        return True
    if not isinstance(schema, dict):
        return False  # a union reads an index, other primitives at least a byte
    kind = schema.get("type")
    if kind == "fixed":
        return int(schema.get("size", 1)) == 0
    if kind in ("record", "error"):
        if schema.get("name") in seen:
            return False
        inner = seen | {schema.get("name", "")}
        return all(_takes_no_bytes(f["type"], names, inner) for f in schema["fields"])
    return kind == "null"


def _recursive(schema: Any, open_: list[str], names: dict[str, Any]) -> bool:
    """Whether a named type refers to itself: only such a schema lets a body nest without end."""
    if isinstance(schema, str):
        return schema in open_
    if isinstance(schema, list):
        return any(_recursive(s, open_, names) for s in schema)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind in ("record", "error"):
        inner = [*open_, schema.get("name", "")]
        return any(_recursive(f["type"], inner, names) for f in schema["fields"])
    if kind == "array":
        return _recursive(schema["items"], open_, names)
    if kind == "map":
        return _recursive(schema["values"], open_, names)
    return False


# -- Protobuf -----------------------------------------------------------------


def protobuf_reader(content: bytes, message_type: str) -> tuple[Callable[[bytes], Any], str]:
    """A reader of `message_type` from a FileDescriptorSet, and the type's full name."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(content)
    except DecodeError:
        raise SchemaError(
            "Not a Protobuf FileDescriptorSet. Upload what `protoc --include_imports "
            "--descriptor_set_out=FILE your.proto` writes, not the .proto text."
        ) from None
    if not files.file:
        raise SchemaError("The FileDescriptorSet holds no .proto file.")
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        try:
            pool.Add(proto)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"{proto.name or 'A file'} could not be loaded ({exc}). If it imports other "
                "files, run protoc with --include_imports."
            ) from None
    names = [
        f"{proto.package}.{m.name}" if proto.package else m.name
        for proto in files.file
        for m in proto.message_type
    ]
    wanted = message_type.strip().lstrip(".")
    if not wanted:
        if len(names) != 1:
            raise SchemaError(
                f"Name the message type: the set has {', '.join(names[:20]) or 'none'}.",
                "message_type",
            )
        wanted = names[0]
    try:
        descriptor = pool.FindMessageTypeByName(wanted)
    except KeyError:
        raise SchemaError(
            f"No message type {wanted!r} in the set; it has {', '.join(names[:20]) or 'none'}.",
            "message_type",
        ) from None
    cls = message_factory.GetMessageClass(descriptor)

    def read(payload: bytes) -> Any:
        message: Message = cls()
        try:
            message.ParseFromString(payload)
            # Bytes of another type often parse as fields this one does not know.
            if payload and not message.ListFields():
                raise NotOfSchema(f"no field of {wanted} in the bytes")
            return json_format.MessageToDict(message, preserving_proto_field_name=True)
        except NOT_OF_SCHEMA as exc:
            if isinstance(exc, NotOfSchema):
                raise
            raise NotOfSchema(f"not a {wanted}: {exc or type(exc).__name__}") from None

    return read, wanted


def confluent_protobuf_payload(payload: bytes) -> bytes:
    """The message after the Confluent Protobuf framing's message indexes.

    The serializer writes, after the schema id, how many indexes follow and then
    each (zigzag varints); a single 0 stands for the first message type. The type
    named in the upload is used whatever the indexes say.
    """
    count, at = _zigzag(payload, 0)
    for _ in range(count if count > 0 else 0):
        _, at = _zigzag(payload, at)
    return payload[at:]


def _zigzag(data: bytes, at: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if at >= len(data) or shift > 63:
            raise NotOfSchema("the Confluent message indexes are cut short")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at
