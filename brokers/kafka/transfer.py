"""`LogTransfer`: replay records of a Kafka topic elsewhere, advancing a cursor only on acks=all.

A Kafka topic is a log: reading removes nothing, so "settling" a record means
moving the job's own cursor past it. The cursor is the job's, kept by the
caller (the job row), never a consumer group's committed offset: a replay
reads without a group and leaves the offsets of the user's groups untouched.

If the process dies:
  - after fetch, before send: the cursor has not moved; the records are read again;
  - during send, before every ack: some copies may be written; the cursor has
    not moved, so they are sent again on resume: at worst duplicates;
  - after the acks, before the cursor is saved: the same, duplicates;
  - after the cursor is saved: those records are behind it. Nothing is lost.

Tansu 0.6 answers ListOffsets(latest) with the last record *batch*'s base
offset + 1, below the true end when records were batched. Fetch's high
watermark is right, so `log_range` takes the larger of the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kafka.errors as errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from brokers.base import BrokerError, Message, Outgoing, Sent
from brokers.kafka.produce import BatchProducer

# Headers whose value names the topic a dead letter came from, most specific first.
ORIGIN_HEADERS = ("x-original-topic", "kafka_dlt-original-topic")
# Headers that say why it failed.
REASON_HEADERS = (
    "x-exception-message",
    "kafka_dlt-exception-message",
    "x-exception",
    "kafka_dlt-exception-fqcn",
    "x-exception-fqcn",
)

Ranges = dict[int, tuple[int, int]]  # partition -> [first offset, end offset)


def header_value(value: bytes | None) -> str | bytes:
    """A header value as text when it is UTF-8, else the bytes themselves (kept exact)."""
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def key_text(key: bytes | None) -> str:
    if key is None:
        return ""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.hex()


def as_message(record: Any) -> Message:
    """A consumed record as a `Message`; its id is "partition:offset", unique in the topic."""
    value: bytes | None = record.value
    raw_headers = list(record.headers or [])
    headers: dict[str, Any] = {}
    for name, raw in raw_headers:
        headers.setdefault(name, header_value(raw))
    return Message(
        body=value or b"",
        id=f"{record.partition}:{record.offset}",
        exchange=record.topic,
        routing_key=key_text(record.key),
        properties={
            "timestamp": record.timestamp // 1000
            if record.timestamp and record.timestamp > 0
            else None,
            "timestamp_ms": record.timestamp,
            "partition": record.partition,
        },
        headers=headers,
        position=record.offset,
        size=len(value) if value else 0,
        handle=(record.partition, record.offset, record.key, raw_headers, value),
    )


def origin_topic(message: Message, names: tuple[str, ...] = ORIGIN_HEADERS) -> str | None:
    """The topic a dead letter came from, named by one of `names`; None if none does."""
    for name in names:
        value = message.headers.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode("utf-8")


def outgoing_headers(outgoing: Outgoing) -> list[tuple[str, bytes]]:
    """The record's headers to send: the original ones in order, with the job's changes.

    A header the job kept unchanged (the same value object it was read as) is
    sent byte for byte; names the job dropped (its pass marker) are left out;
    new names (the lineage headers) come last.
    """
    wanted = outgoing.headers
    original = outgoing.message.headers
    handle = outgoing.message.handle
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for name, value in handle[3] if handle else ():
        if name not in wanted:
            continue
        if name in seen:
            out.append((name, value))  # a repeated name: kept as it was
            continue
        seen.add(name)
        now = wanted[name]
        out.append((name, value if now is original.get(name) else _encode(now)))
    out.extend((name, _encode(v)) for name, v in wanted.items() if name not in seen)
    return out


def log_range(
    consumer: Any, topic: str, wanted: dict[int, tuple[int | None, int | None]] | None = None
) -> Ranges:
    """[first, end) of each partition of `topic` (or of those in `wanted`, narrowed to them).

    BrokerError for an unknown topic or partition, or a requested offset outside the log.
    """
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise BrokerError(f"no topic {topic!r} on this cluster", retryable=False)
    if wanted:
        unknown = sorted(set(wanted) - parts)
        if unknown:
            raise BrokerError(
                f"topic {topic!r} has partitions 0 to {max(parts)}; there is no partition {unknown[0]}",
                retryable=False,
            )
        parts = set(wanted)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    first = consumer.beginning_offsets(tps)
    end = dict(consumer.end_offsets(tps))
    for tp, high in high_watermarks(consumer, tps, end).items():
        end[tp] = max(end[tp], high)
    out: Ranges = {}
    for tp in tps:
        lo, hi = first[tp], end[tp]
        ask_lo, ask_hi = (wanted or {}).get(tp.partition, (None, None))
        for asked in (ask_lo, ask_hi):
            if asked is not None and not lo <= asked <= hi:
                held = (
                    f"holds offsets {lo} to {hi - 1}"
                    if hi > lo
                    else f"holds no messages (next offset {hi})"
                )
                raise BrokerError(
                    f"partition {tp.partition} of {topic!r} {held}; {asked} is out of range",
                    retryable=False,
                )
        start = lo if ask_lo is None else ask_lo
        stop = hi if ask_hi is None else ask_hi
        out[tp.partition] = (start, max(start, stop))
    return out


def high_watermarks(consumer: Any, tps: list[Any], near: dict[Any, int]) -> dict[Any, int]:
    """Each partition's high watermark, as Fetch reports it, by fetching at `near` offsets.

    Leaves the consumer unassigned.
    """
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(0, near[tp] - 1) if near[tp] else 0)
    found: dict[Any, int] = {}
    deadline = time.monotonic() + 5.0
    while len(found) < len(tps) and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                found[tp] = high
    consumer.assign([])
    return found


class LogTransfer:
    """A `Transfer` reading `topic` from the job's cursor to fixed ends, producing with acks=all.

    `ranges` are the partitions' [first, end) offsets fixed when the job began;
    `next_offsets` is where each partition stands (the saved cursor);
    `save(next_offsets)` persists the cursor and is called only after every
    record behind it was acknowledged by all in-sync replicas, or kept on purpose.
    """

    def __init__(
        self,
        adapter: Any,
        topic: str,
        ranges: Ranges,
        next_offsets: dict[int, int],
        save: Callable[[dict[int, int]], None],
        fetch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.topic = topic
        self.ranges = dict(ranges)
        self.next = {p: max(next_offsets.get(p, lo), lo) for p, (lo, _) in self.ranges.items()}
        self._save = save
        self._timeout = adapter.timeout
        self._buffer: list[Message] = []
        self._consumer: Any = None
        self._producer: Any = None
        self._consumer = adapter.client(
            KafkaConsumer,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=fetch_bytes,
            fetch_max_bytes=max(fetch_bytes, 52428800),
        )
        try:
            # Its own admin connection: the batch producer sends on it alone.
            self._producer = adapter.client(KafkaAdminClient)
            self._batches = BatchProducer(
                self._producer, timeout_ms=max(10000, int(self._timeout * 3000))
            )
        except BrokerError:
            self._consumer.close()
            raise
        self._open = [TopicPartition(topic, p) for p in sorted(self.ranges) if self._left(p)]
        self._consumer.assign(self._open)
        for tp in self._open:
            self._consumer.seek(tp, self.next[tp.partition])

    def _left(self, partition: int) -> int:
        return max(0, self.ranges[partition][1] - self.next[partition])

    # -- Transfer -----------------------------------------------------------

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        out, self._buffer = self._buffer[:limit], self._buffer[limit:]
        deadline = time.monotonic() + timeout
        while len(out) < limit and self._open:
            wait = 0 if out else max(0, int((deadline - time.monotonic()) * 1000))
            try:
                got = self._consumer.poll(timeout_ms=wait, max_records=limit - len(out))
            except errors.KafkaError as exc:
                raise BrokerError(f"reading {self.topic!r}: {exc}") from None
            for tp, records in got.items():
                end = self.ranges[tp.partition][1]
                for record in records:
                    if record.offset < end:
                        out.append(as_message(record))
                if records and records[-1].offset + 1 >= end:
                    self._finish(tp)
            self._finish_caught_up()
            if not got and (out or time.monotonic() >= deadline):
                break
        return out

    def _finish(self, tp: Any) -> None:
        if tp in self._open:
            self._open.remove(tp)
            self._consumer.pause(tp)

    def _finish_caught_up(self) -> None:
        for tp in list(self._open):
            if self._consumer.position(tp) >= self.ranges[tp.partition][1]:
                self._finish(tp)

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        records = []
        for outgoing in batch:
            handle = outgoing.message.handle
            value = handle[4] if outgoing.body is None else outgoing.body
            records.append((outgoing.exchange, handle[2], value, outgoing_headers(outgoing)))
        try:
            why = self._batches.send(records)
        except errors.KafkaError as exc:
            raise BrokerError(f"producing to {batch[0].exchange!r}: {exc}") from None
        return [Sent(confirmed=True) if not w else Sent(confirmed=False, error=w) for w in why]

    def settle(self, messages: list[Message]) -> None:
        self._advance(messages)

    def keep(self, messages: list[Message], headers: dict[str, Any]) -> None:
        # A log keeps every record anyway; the pass moves on past this one.
        self._advance(messages)

    def release(self, messages: list[Message]) -> None:
        # The cursor did not move past them: a later run reads them again.
        self._buffer = []

    def pending(self) -> int | None:
        return sum(self._left(p) for p in self.ranges)

    def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except errors.KafkaError:
                    pass

    def _advance(self, messages: list[Message]) -> None:
        if not messages:
            return
        for m in messages:
            partition, offset = m.handle[0], m.handle[1]
            if offset + 1 > self.next[partition]:
                self.next[partition] = offset + 1
        self._save(dict(self.next))


def peek(adapter: Any, topic: str, ranges: Ranges, limit: int) -> list[Message]:
    """Up to `limit` records from the start of `ranges`, in partition order, for a dry run."""
    consumer = adapter.client(
        KafkaConsumer, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    try:
        per = max(1, limit // max(1, len(ranges)))
        tps = [TopicPartition(topic, p) for p, (lo, hi) in sorted(ranges.items()) if hi > lo]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, ranges[tp.partition][0])
        taken: dict[int, list[Message]] = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + 5.0
        open_ = set(tps)
        while open_ and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                lo, hi = ranges[tp.partition]
                for record in records:
                    if record.offset < hi and len(taken[tp.partition]) < per:
                        taken[tp.partition].append(as_message(record))
                if len(taken[tp.partition]) >= per or (records and records[-1].offset + 1 >= hi):
                    open_.discard(tp)
                    consumer.pause(tp)
        return [m for p in sorted(taken) for m in taken[p]][:limit]
    except errors.KafkaError as exc:
        raise BrokerError(f"reading {topic!r}: {exc}") from None
    finally:
        consumer.close()


def newest_headers(adapter: Any, topics: list[str], wanted: tuple[str, ...]) -> dict[str, str]:
    """For each topic whose newest records carry one of the `wanted` headers: that header.

    One consumer reads the last record of every partition of every topic.
    """
    consumer = adapter.client(
        KafkaConsumer, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return {}
        first = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        live = [tp for tp in tps if end[tp] > first[tp]]
        consumer.assign(live)
        for tp in live:
            consumer.seek(tp, end[tp] - 1)
        found: dict[str, str] = {}
        waiting = set(live)
        deadline = time.monotonic() + 5.0
        while waiting and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                waiting.discard(tp)
                consumer.pause(tp)
                for record in records:
                    names = {name for name, _ in record.headers or []}
                    header = next((h for h in wanted if h in names), None)
                    if header:
                        found.setdefault(tp.topic, header)
        return found
    except errors.KafkaError as exc:
        raise BrokerError(f"reading the newest records: {exc}") from None
    finally:
        consumer.close()


class TopicSender:
    """Produces whole batches with acks=all for an import: each record's key is the message's
    `routing_key` (the key as text, none when empty), its headers as given."""

    def __init__(self, adapter: Any) -> None:
        self._admin = adapter.client(KafkaAdminClient)
        self._batches = BatchProducer(
            self._admin, timeout_ms=max(10000, int(adapter.timeout * 3000))
        )

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
            (
                o.exchange,
                o.routing_key.encode("utf-8") if o.routing_key else None,
                o.message.body if o.body is None else o.body,
                outgoing_headers(o),
            )
            for o in batch
        ]
        try:
            why = self._batches.send(records)
        except errors.KafkaError as exc:
            raise BrokerError(f"producing to {batch[0].exchange!r}: {exc}") from None
        return [Sent(confirmed=True) if not w else Sent(confirmed=False, error=w) for w in why]

    def close(self) -> None:
        try:
            self._admin.close()
        except errors.KafkaError:
            pass
