"""Scanning whole ranges of a Kafka topic fast: raw Fetch requests, filters tried on batches first.

A plain KafkaConsumer turns every record into a ConsumerRecord in Python, which
is nearly all of its time. A search mostly looks for a few records among
millions, so this scanner sends Fetch requests itself and, for each record
batch, asks the filters first whether the batch's (decompressed) bytes can hold
a match at all (`Matcher.may_match`): a key, header name or body text that is
not in the batch rules out every record in it, and the batch is counted from
its header without decoding a record. Batches that may match are decoded and
filtered record by record, exactly as the browse page does.

The next Fetch to a broker is sent before the last one's batches are looked
at, so the broker works while Python filters.

Talks to: the leaders of the topic's partitions, through the connections of
the reader's KafkaConsumer, with `FetchRequest` and `MemoryRecords`; no public
call gives raw batches, so the sending and a batch's decompressed bytes come
through `brokers.kafka.internals`. Fetches carry no session (the legacy
session id 0, epoch -1) and read uncommitted, as the plain consumer does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import kafka.errors as errors
from kafka import TopicPartition
from kafka.protocol.consumer import FetchRequest
from kafka.record import MemoryRecords

from brokers.base import BrokerError
from brokers.kafka import internals
from brokers.kafka.filters import Matcher

FETCH_VERSION = 12  # the newest Fetch that names topics (v13 uses topic ids), as kafka-python's
# Errors after which the partition's leader is looked up again.
RELOCATED = (
    errors.NotLeaderForPartitionError,
    errors.LeaderNotAvailableError,
    errors.UnknownTopicOrPartitionError,
    errors.FencedLeaderEpochError,
    errors.UnknownLeaderEpochError,
    errors.KafkaStorageError,
)
EMPTY_FETCHES = 3  # answers in a row with no batch before the partitions left count as done


class Raw(NamedTuple):
    """A record decoded from a batch: what filters and `to_record` read."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class Scan:
    """One pass over `ranges` ({partition: (from, to)}) of a topic; `run()` does it."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        ranges: dict[int, tuple[int, int]],
        matcher: Matcher,
        on_batch: Callable[[int, list[Raw]], bool],
        *,
        partition_bytes: int,
        timeout: float,
        wait_ms: int = 100,
    ) -> None:
        self.consumer = consumer
        self.cluster = internals.cluster_of(consumer)
        self.topic = topic
        self.ends = {p: end for p, (_, end) in ranges.items()}
        self.pos = {p: start for p, (start, end) in ranges.items() if start < end}
        self.matcher = matcher
        # Called with the records scanned and the matches of each answer; False stops the scan.
        self.on_batch = on_batch
        self.partition_bytes = partition_bytes
        self.timeout = timeout
        self.wait_ms = wait_ms
        self.empty_answers = 0  # answers in a row that brought no batch
        self.turn = 0
        self.stuck_since: float | None = None  # when leaders went missing, until progress

    def run(self) -> None:
        inflight: dict[int, tuple[Any, threading.Event, list[int]]] = {}
        while self.pos or inflight:
            busy = {p for _, _, parts in inflight.values() for p in parts}
            for node, parts in self._by_leader([p for p in self.pos if p not in busy]).items():
                if node not in inflight:
                    inflight[node] = self._send(node, parts)
            if not inflight:
                self._stuck("no partition has a leader it can be read from")
                continue
            node, response = self._first_answer(inflight)
            work = self._advance(response)
            if work:
                self.stuck_since = None
            # The next fetch to this broker goes out before the batches are looked at.
            parts = [p for p in self._by_leader(list(self.pos)).get(node, [])]
            if parts:
                inflight[node] = self._send(node, parts)
            for partition, start, batches in work:
                scanned, hits = self._look(partition, start, batches)
                if (scanned or hits) and not self.on_batch(scanned, hits):
                    return

    # -- fetching -----------------------------------------------------------

    def _by_leader(self, partitions: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for p in partitions:
            leader = self.cluster.leader_for_partition(TopicPartition(self.topic, p))
            if leader is None or leader < 0:
                self.cluster.request_update()
                continue
            out.setdefault(leader, []).append(p)
        return out

    def _stuck(self, why: str) -> None:
        """Wait for fresh metadata; give up once nothing moved for the timeout."""
        now = time.monotonic()
        self.stuck_since = self.stuck_since or now
        if now - self.stuck_since > self.timeout:
            raise BrokerError(f"{self.topic!r}: {why} (for {self.timeout:g} s)")
        time.sleep(0.1)

    def _send(self, node: int, parts: list[int]) -> tuple[Any, threading.Event, list[int]]:
        # A broker fills its answer in the order asked: take turns being first.
        self.turn += 1
        shift = self.turn % len(parts)
        parts = parts[shift:] + parts[:shift]
        fetch_topic = FetchRequest.FetchTopic
        request = FetchRequest(
            max_wait_ms=self.wait_ms,
            min_bytes=1,
            max_bytes=self.partition_bytes * len(parts),
            isolation_level=0,  # read uncommitted, like the plain consumer
            session_id=0,
            session_epoch=-1,
            topics=[
                fetch_topic(
                    topic=self.topic,
                    partitions=[
                        fetch_topic.FetchPartition(
                            partition=p,
                            current_leader_epoch=-1,
                            fetch_offset=self.pos[p],
                            last_fetched_epoch=-1,
                            log_start_offset=-1,
                            partition_max_bytes=self.partition_bytes,
                        )
                        for p in parts
                    ],
                )
            ],
            forgotten_topics_data=[],
            rack_id="",
            max_version=FETCH_VERSION,
        )
        future = internals.send_soon(self.consumer, request, node)
        done = threading.Event()
        future.add_both(lambda _: done.set())
        return future, done, parts

    def _first_answer(self, inflight: dict[int, tuple[Any, threading.Event, list[int]]]) -> Any:
        deadline = time.monotonic() + self.timeout + self.wait_ms / 1000
        while True:
            for node, (future, done, _) in inflight.items():
                if done.is_set():
                    del inflight[node]
                    if future.failed():
                        raise future.exception
                    return node, future.value
            if time.monotonic() > deadline:
                raise errors.KafkaTimeoutError("no Fetch answer")
            next(iter(inflight.values()))[1].wait(0.005)

    def _advance(self, response: Any) -> list[tuple[int, int, list[Any]]]:
        """Each partition's batches in its range, moving its position past them."""
        work = []
        empty = []
        for topic in response.responses:
            for data in topic.partitions:
                p = data.partition_index
                if p not in self.pos:
                    continue
                error = errors.for_code(data.error_code)
                if error in RELOCATED:
                    self._stuck(f"partition {p}: {error.__name__}")
                    self.cluster.request_update()
                    continue
                if error is errors.OffsetOutOfRangeError:
                    raise BrokerError(
                        f"partition {p} of {self.topic!r} no longer holds offset {self.pos[p]} "
                        "(deleted by retention during the scan)",
                        retryable=False,
                    )
                if error is not errors.NoError:
                    raise error()
                start, end = self.pos[p], self.ends[p]
                batches, nxt = _batches(data.records, start, end)
                if not batches:
                    # A size-limited answer may leave some partitions out.
                    empty.append(p)
                    continue
                if nxt >= end:
                    del self.pos[p]
                else:
                    self.pos[p] = nxt
                work.append((p, start, batches))
        # Answers with no batch at all, though the range goes on: nothing is
        # left to read there (the tail was compacted away).
        self.empty_answers = 0 if work else self.empty_answers + 1
        if self.empty_answers >= EMPTY_FETCHES:
            for p in empty:
                self.pos.pop(p, None)
        return work

    # -- looking ------------------------------------------------------------

    def _look(self, partition: int, start: int, batches: list[Any]) -> tuple[int, list[Raw]]:
        """How many records of `batches` lie in the range, and which of them match."""
        end = self.ends[partition]
        may_match = None if self.matcher.unbounded else self.matcher.may_match
        scanned, hits = 0, []
        for batch in batches:
            if batch.magic >= 2:
                if not batch.validate_crc():
                    raise BrokerError(
                        f"corrupt record batch at offset {batch.base_offset} of partition {partition}"
                    )
                if batch.is_control_batch:
                    continue  # a transaction marker, not a message
                whole = batch.base_offset >= start and batch.last_offset < end
                if whole and may_match is not None:
                    if not may_match(internals.decompressed(batch)):
                        scanned += batch.records_count
                        continue
            records = [
                Raw(
                    self.topic,
                    partition,
                    r.offset,
                    r.timestamp,
                    r.timestamp_type,
                    r.key,
                    r.value,
                    r.headers,
                )
                for r in batch
                if start <= r.offset < end
            ]
            scanned += len(records)
            hits.extend(self.matcher.select(records))
        return scanned, hits


def _batches(raw: bytes | None, start: int, end: int) -> tuple[list[Any], int]:
    """The batches of a Fetch answer that reach into [start, end), and the offset after them."""
    out: list[Any] = []
    nxt = start
    if not raw:
        return out, nxt
    records = MemoryRecords(raw)
    while (batch := records.next_batch()) is not None:
        if batch.magic >= 2:
            first, after = batch.base_offset, batch.next_offset
        else:  # message format 0 or 1: no batch header with the offsets
            offsets = [r.offset for r in batch]
            if not offsets:
                continue
            first, after = offsets[0], offsets[-1] + 1
        if after <= start:
            continue
        if first >= end:
            break
        out.append(batch)
        nxt = after
    return out, nxt
