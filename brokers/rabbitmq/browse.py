"""Browse a queue: read messages from its head (or a stream's offset) and leave them there.

Classic and quorum queues are read through the management API (get, then
requeue); streams over AMQP with a throwaway consumer, since acks on a stream
remove nothing. Both give the same `Message`s (ids, headers) as an AMQP read.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from brokers.base import Message
from brokers.rabbitmq.codec import MAX_DEPTH, TOO_DEEP
from brokers.rabbitmq.management import ManagementAPI, quote_path
from brokers.rabbitmq.messages import PROPERTY_NAMES, _message, fingerprint
from brokers.rabbitmq.wire import _Connection

# How the management API renders a longstr that is not UTF-8.
API_NOT_UTF8 = "Not UTF-8, base64 is: "
# A stream browse stops when no message came for this long (streams have no end marker).
STREAM_IDLE = 0.3


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


def _from_api(value: Any, depth: int = 0) -> Any:
    """A header value from the management API's JSON, as `json_safe` renders it from AMQP
    (and as the codec does, TOO_DEEP past MAX_DEPTH levels)."""
    if isinstance(value, str) and value.startswith(API_NOT_UTF8):
        return {"base64": value[len(API_NOT_UTF8) :]}
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {k: _from_api(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_api(v, depth + 1) for v in value]
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
