"""RabbitMQ over AMQP 0-9-1 (pika): reading, browsing, publishing and moving messages.

Talks to: one broker's AMQP port through pika, one connection per session
(`AmqpTransfer`) or per call (`publish`, stream `browse`); classic and quorum
queues are browsed through the management API instead (`POST .../get`).
This is the only package that imports pika; `brokers.rabbitmq.adapter` imports it
lazily so that monitoring never does.

Options:
    amqp_url    amqp(s)://user:password@host:5672/vhost; `vhost` arguments
                override the URL's vhost
    timeout     seconds allowed for each wait: connecting, a channel RPC, a
                batch's confirms (counted from the last confirm that arrived)

Also here, pure and broker-free: `routes` (where a message would go, from
collected bindings), `history` (a dead letter's x-death, read defensively) and
`replay_target` (where a dead letter came from).

Modules:
    codec       the wire format of basic properties and field tables; json_safe
    messages    `Message`s from deliveries; fingerprint (the id without message_id)
    wire        the connection (`_Connection`) and its frame reader; ChannelClosed
    publish     batches published pipelined and confirmed (`_Publisher`); publish
    transfer    AmqpTransfer: consume, publish confirmed, then ack
    browse      browse: the management API's get, or a stream read over AMQP
    routing     routes, topic_matches, headers_match, replay_target
    deadletters history: x-death and x-first-death-*, every field read defensively

Speed: pika's BlockingChannel waits for each publisher confirm, and its
pure-Python frame handling costs more per message than everything else. So
connections are opened by BlockingConnection but driven through its
asynchronous core: batches are written whole and confirmed pipelined
(`_Publisher`), deliveries and confirms are read by `_FrameReader`, and basic
properties go through a codec of our own that decodes straight to JSON-safe
values and re-sends unchanged headers byte for byte. That leans on pika
internals, each listed with its reason and the versions checked in
`brokers.rabbitmq.internals`; the tests exercise every one of them.

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

from brokers.rabbitmq.browse import API_NOT_UTF8, STREAM_IDLE, browse
from brokers.rabbitmq.codec import (
    HEADERS_FLAG,
    PROPERTY_FIELDS,
    SCALARS,
    RawProperties,
    encode_properties,
    json_safe,
)
from brokers.rabbitmq.deadletters import Death, History, history
from brokers.rabbitmq.messages import (
    PROPERTY_NAMES,
    VOLATILE_HEADERS,
    fingerprint,
    message_from_amqp,
    properties_dict,
)
from brokers.rabbitmq.publish import EMIT_BYTES, FRAME_END, PUBLISH, publish
from brokers.rabbitmq.routing import headers_match, replay_target, routes, topic_matches
from brokers.rabbitmq.transfer import LINGER, AmqpTransfer
from brokers.rabbitmq.wire import (
    ACK,
    DELIVER,
    NACK,
    SKIP,
    WHOLE_DELIVERY,
    ChannelClosed,
    channel_error,
)

__all__ = [
    "ACK",
    "API_NOT_UTF8",
    "DELIVER",
    "EMIT_BYTES",
    "FRAME_END",
    "HEADERS_FLAG",
    "LINGER",
    "NACK",
    "PROPERTY_FIELDS",
    "PROPERTY_NAMES",
    "PUBLISH",
    "SCALARS",
    "SKIP",
    "STREAM_IDLE",
    "VOLATILE_HEADERS",
    "WHOLE_DELIVERY",
    "AmqpTransfer",
    "ChannelClosed",
    "Death",
    "History",
    "RawProperties",
    "browse",
    "channel_error",
    "encode_properties",
    "fingerprint",
    "headers_match",
    "history",
    "json_safe",
    "message_from_amqp",
    "properties_dict",
    "publish",
    "replay_target",
    "routes",
    "topic_matches",
]
