"""Schemas and bodies the decoding tests share: an Avro order, a Protobuf order, their bytes."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ORDER_AVSC: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "item", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def avsc(schema: dict[str, Any] | None = None) -> bytes:
    return json.dumps(schema or ORDER_AVSC).encode()


def avro_bytes(datum: dict[str, Any], schema: dict[str, Any] | None = None) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema or ORDER_AVSC), datum)
    return out.getvalue()


def confluent(schema_id: int, payload: bytes) -> bytes:
    """A Confluent Schema Registry frame: magic byte 0, the id in 4 bytes, the payload."""
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


def order_descriptor_set(with_import: bool = False) -> bytes:
    """What `protoc --descriptor_set_out` writes for shop.proto (message shop.Order).

    With `with_import`, shop.proto imports money.proto, which the set leaves out:
    what protoc writes without --include_imports.
    """
    files = descriptor_pb2.FileDescriptorSet()
    proto = files.file.add(name="shop.proto", package="shop", syntax="proto3")
    order = proto.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)
    order.field.add(name="item", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    line = proto.message_type.add(name="Line")
    line.field.add(name="sku", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    if with_import:
        proto.dependency.append("money.proto")
        order.field.add(
            name="total",
            number=3,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
            type_name=".money.Amount",
        )
    return files.SerializeToString()


def protobuf_order(**fields: Any) -> bytes:
    """A shop.Order message, serialised by the protobuf library itself."""
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(order_descriptor_set()).file:
        pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
    return bytes(cls(**fields).SerializeToString())
