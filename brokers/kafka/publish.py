"""Producing one message to a Kafka topic, from the publish page or the API.

Talks to: the cluster of a `brokers.kafka.adapter.Kafka` adapter, through its shared
admin client (topic metadata and configs) and a new `KafkaProducer` with
acks=all, closed after the one record. Checks come first, so that a record
that cannot be taken is never sent: the topic exists, the partition is one of
its own, the record fits the topic's max.message.bytes.

Cannot: tell a broker's own message.max.bytes when the topic does not state
max.message.bytes (Tansu does not); Kafka's default is assumed then.
"""

from __future__ import annotations

from dataclasses import dataclass

import kafka.errors as errors
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from brokers.kafka.adapter import Kafka
from brokers.kafka.browse import NotFound, Rejected

# Apache Kafka's default max.message.bytes, assumed when the broker does not say.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588
# What a record batch of one record adds to the key, value and headers.
RECORD_OVERHEAD = 128


@dataclass(frozen=True)
class Produced:
    """Where the broker wrote a record (after acks=all)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch


def max_message_bytes(adapter: Kafka, topic: str) -> tuple[int, str]:
    """The largest record batch `topic` takes, and where that figure comes from."""
    try:
        configs = adapter.admin().describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None
    entry = configs.get("topic", {}).get(topic, {}).get("max.message.bytes")
    if entry and str(entry.get("value") or "").isdigit():
        return int(entry["value"]), "the topic's max.message.bytes"
    return (
        KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
        "Kafka's default max.message.bytes (the broker did not say)",
    )


def partitions_of(adapter: Kafka, topic: str) -> list[int]:
    """The partitions of `topic`; NotFound if there is no such topic."""
    try:
        described = adapter.admin().describe_topics([topic])
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None
    for t in described:
        if t.get("name") == topic and t.get("error_code") == 0:
            return sorted(p["partition_index"] for p in t.get("partitions", []))
    raise NotFound(f"no topic {topic!r} on this cluster")


def produce(
    adapter: Kafka,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> Produced:
    """Write one record with acks=all and return where it landed; check first, send nothing on refusal."""
    headers = headers or []
    parts = partitions_of(adapter, topic)
    if partition is not None and partition not in parts:
        raise NotFound(
            f"topic {topic!r} has partitions 0 to {parts[-1]}; there is no partition {partition}"
        )
    size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
    limit, source = max_message_bytes(adapter, topic)
    if size + RECORD_OVERHEAD > limit:
        raise Rejected(
            f"the record is {size:,} bytes; {topic!r} takes at most {limit:,} ({source}). Nothing was sent."
        )
    producer = adapter.client(
        KafkaProducer,
        acks="all",
        allow_auto_create_topics=False,
        linger_ms=0,
        max_request_size=limit + RECORD_OVERHEAD,
        max_block_ms=adapter.timeout_ms,
        delivery_timeout_ms=max(10_000, 3 * adapter.timeout_ms),
    )
    try:
        future = producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        meta = future.get(timeout=max(10, 3 * adapter.timeout))
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None
    finally:
        try:
            producer.close(timeout=adapter.timeout)
        except errors.KafkaError:
            pass  # the record's fate is known already; closing cannot change it
    return Produced(meta.topic, meta.partition, meta.offset, meta.timestamp)
