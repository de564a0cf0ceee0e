"""`Message`s from AMQP deliveries, and the id of a message without a message_id.

Every AMQP read (a transfer's fetch, a stream browse, a delivery pika made
elsewhere) becomes a `Message` here, and a browse through the management API
uses the same `fingerprint`, so a message keeps its id whichever way it was read.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pika

from brokers.base import Message
from brokers.rabbitmq.codec import RawProperties, json_safe

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
