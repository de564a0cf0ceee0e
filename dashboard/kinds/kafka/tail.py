"""The live tail's reader for Kafka: a KafkaConsumer without a group, on one topic.

Nothing joins a group and nothing is committed: the partitions are assigned,
not subscribed. The consumer comes from the broker's adapter
(`Kafka.client`), so it has the cluster's connection settings and timeouts.
kafka-python is imported here and in brokers/kafka/adapter.py only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from brokers.base import BrokerError
from dashboard.collection.collector import adapter_for
from dashboard.kinds.kafka.search import TOPIC_NAME
from dashboard.live.tail import (
    CHECK_SECONDS,
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    CLOSE_TRY_LATER,
    MAX_LAST,
    PREVIEW_BYTES,
    Reader,
    Record,
    Refused,
    TailConsumer,
)
from dashboard.models import Broker

TEMPLATE = "dashboard/kafka/tail.html"
FIRST_FETCH_MS = 400  # the fetch that learns where partitions end, at most


class KafkaReader:
    """Reads a topic without a consumer group: no group joins, nothing is committed."""

    def __init__(self, adapter: Any, topic: str, partition: int | None, last: int) -> None:
        self.adapter = adapter
        self.topic = topic
        self.partition = partition
        self.last = last
        self.description = ""
        self._consumer: Any = None
        self._timeout_ms: int = adapter.timeout_ms
        self._checked = time.monotonic()
        # Per partition: records below this offset were there before the tail began.
        self._earlier_until: dict[int, int] = {}

    def start(self) -> None:
        timeout_ms = self._timeout_ms
        self._consumer = self.adapter.client(
            KafkaConsumer,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=200,
        )
        try:
            parts = sorted(self._consumer.partitions_for_topic(self.topic))
            if not parts:
                raise BrokerError(f"There is no topic {self.topic!r}.", retryable=False)
            if self.partition is not None and self.partition not in parts:
                raise BrokerError(
                    f"Topic {self.topic!r} has partitions 0 to {parts[-1]}, not {self.partition}.",
                    retryable=False,
                )
            chosen = parts if self.partition is None else [self.partition]
            tps = [TopicPartition(self.topic, p) for p in chosen]
            self._consumer.assign(tps)
            self._consumer.seek_to_end(*tps)
            listed = {tp: self._consumer.position(tp, timeout_ms=timeout_ms) for tp in tps}
            if None in listed.values():
                raise BrokerError(f"No answer from the leaders of {self.topic!r} in time.")
            # ListOffsets may undercount the end (Tansu answers with the last
            # batch's base offset + 1); a fetch's high watermark is right. So
            # fetch once and start from the larger: what it returned was there
            # before the tail began, and is dropped (or re-read below, for "the last N").
            self._consumer.poll(timeout_ms=FIRST_FETCH_MS)
            begin = (
                self._consumer.beginning_offsets(tps, timeout_ms=timeout_ms) if self.last else {}
            )
            for tp in tps:
                end = max(listed[tp], self._consumer.highwater(tp) or 0)
                self._consumer.seek(tp, max(begin.get(tp, 0), end - self.last))
                self._earlier_until[tp.partition] = end
        except KafkaError as exc:
            self.close()
            raise BrokerError(f"Reading {self.topic!r}: {exc}") from None
        except BrokerError:
            self.close()
            raise
        if self.partition is not None:
            where = f"partition {self.partition}"
        else:
            where = "its one partition" if len(parts) == 1 else f"all {len(parts)} partitions"
        start = f"from the last {self.last} of each" if self.last else "from the end"
        self.description = f"{where}, {start}"

    def poll(self, timeout: float) -> list[Record]:
        try:
            got = self._consumer.poll(timeout_ms=int(timeout * 1000))
            now = time.monotonic()
            if got:
                self._checked = now
            elif now - self._checked >= CHECK_SECONDS:
                # kafka-python's poll() returns nothing, quietly, when the
                # brokers are gone; ListOffsets fails loudly instead.
                self._checked = now
                self._consumer.end_offsets(
                    list(self._consumer.assignment()), timeout_ms=self._timeout_ms
                )
        except KafkaError as exc:
            raise BrokerError(f"Lost {self.topic!r} while reading it: {exc}") from None
        out: list[Record] = []
        for tp, records in got.items():
            earlier_until = self._earlier_until.get(tp.partition, 0)
            out.extend(_record(r, earlier=r.offset < earlier_until) for r in records)
        return out

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False, timeout_ms=1000)
            except KafkaError:
                pass  # a dead broker: nothing left to release on its side


def _record(r: Any, earlier: bool) -> Record:
    body = r.value or b""
    return Record(
        body=body[:PREVIEW_BYTES],
        size=len(body),
        position=r.offset,
        partition=r.partition,
        timestamp=r.timestamp / 1000 if r.timestamp is not None and r.timestamp >= 0 else None,
        key=None if r.key is None else r.key[:PREVIEW_BYTES],
        headers=tuple(
            (name, None if value is None else value[:PREVIEW_BYTES])
            for name, value in (r.headers or [])
        ),
        earlier=earlier,
    )


class KafkaTailConsumer(TailConsumer):
    """The tail's websocket for a Kafka topic: ws/tail/<broker>/<topic>?partition=&last=."""

    template = TEMPLATE

    def make_reader(self, kwargs: Mapping[str, str], query: Mapping[str, str]) -> Reader:
        return reader_for(kwargs["broker"], kwargs["topic"], query)


def parse_options(params: Mapping[str, str]) -> tuple[int | None, int]:
    """(partition or None for all, last N per partition) from the page's query; ValueError."""
    raw_partition = (params.get("partition") or "").strip()
    raw_last = (params.get("last") or "").strip()
    partition = None
    if raw_partition:
        if not raw_partition.isdigit() or int(raw_partition) > 1_000_000:
            raise ValueError("The partition is a number from 0, or empty for all partitions.")
        partition = int(raw_partition)
    last = 0
    if raw_last:
        if not raw_last.isdigit() or int(raw_last) > MAX_LAST:
            raise ValueError(f"Start from the last 0 to {MAX_LAST} messages of each partition.")
        last = int(raw_last)
    return partition, last


def reader_for(broker_name: str, topic: str, query: Mapping[str, str]) -> Reader:
    """The reader a socket asks for, or Refused with what to tell the page."""
    broker = Broker.objects.filter(name=broker_name, enabled=True).first()
    if broker is None:
        raise Refused(f"There is no broker {broker_name!r}.", CLOSE_NOT_FOUND)
    if broker.kind != "kafka":
        raise Refused(f"A live tail is not available for {broker.kind} brokers.", CLOSE_NOT_FOUND)
    if not TOPIC_NAME.fullmatch(topic):
        raise Refused(f"{topic!r} is not a valid topic name.", CLOSE_BAD_REQUEST)
    try:
        partition, last = parse_options(query)
    except ValueError as exc:
        raise Refused(str(exc), CLOSE_BAD_REQUEST) from None
    try:
        adapter = adapter_for(broker)
    except BrokerError as exc:  # a ${VAR} in its options that is not set
        raise Refused(exc.message, CLOSE_TRY_LATER if exc.retryable else CLOSE_NOT_FOUND) from None
    return KafkaReader(adapter, topic, partition, last)
