"""Producing prepared records in whole batches, with acks=all, for replays.

kafka-python's `KafkaProducer.send` costs tens of microseconds per record
(partitioner, accumulator, a future each); a replay knows its whole batch up
front, so it encodes each partition's records into one v2 record batch and
sends one ProduceRequest per partition leader, waiting for every answer.
Records keep their key and headers; their timestamp is the time of the replay,
as any producer's would be. Keyed records go to the partition Kafka's default
partitioner picks (murmur2 of the key), so per-key order holds for consumers.
"""

from __future__ import annotations

import struct
import time
from collections import defaultdict
from typing import Any

import kafka.errors as errors
from kafka.partitioner.default import murmur2
from kafka.protocol.producer import ProduceRequest
from kafka.record.util import calc_crc32c

from brokers.kafka import internals

# A batch stays under the broker's default max.message.bytes (1 MiB); a request
# (one per leader, several partitions' batches) under a tenth of its default
# socket.request.max.bytes (100 MiB).
MAX_BATCH_BYTES = 900 * 1024
MAX_REQUEST_BYTES = 8 * 1024 * 1024
_HEADER = struct.Struct(">hiqqqhii")  # attributes .. record count, after the CRC
_PREFIX = struct.Struct(">qiib")  # base offset, batch length, leader epoch, magic


def _varint(n: int) -> bytes:
    """Kafka's zig-zag varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [_varint(n) for n in range(-1, 16384)]


def varint(n: int) -> bytes:
    return _SMALL[n + 1] if -1 <= n < 16383 else _varint(n)


def _bytes_field(value: bytes | None) -> bytes:
    if value is None:
        return b"\x01"  # -1: null
    return varint(len(value)) + value


_HEADER_CACHE: dict[tuple[str, bytes | None], bytes] = {}


def _header(name: str, data: bytes | None) -> bytes:
    """One encoded header; the same few (origin, lineage) recur on every record of a job."""
    key = (name, data)
    found = _HEADER_CACHE.get(key)
    if found is None:
        raw = name.encode("utf-8")
        found = varint(len(raw)) + raw + _bytes_field(data)
        if data is None or len(data) < 256:
            if len(_HEADER_CACHE) > 4096:
                _HEADER_CACHE.clear()
            _HEADER_CACHE[key] = found
    return found


def encode_record(
    offset_delta: int, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> bytes:
    parts = [b"\x00\x00", varint(offset_delta)]  # attributes 0, timestamp delta 0
    parts.append(_bytes_field(key))
    parts.append(_bytes_field(value))
    parts.append(varint(len(headers)))
    parts.extend(_header(name, data) for name, data in headers)
    body = b"".join(parts)
    return varint(len(body)) + body


def encode_batch(records: list[bytes], timestamp_ms: int) -> bytes:
    """A magic-2 record batch of encoded records, uncompressed, no producer id."""
    count = len(records)
    tail = _HEADER.pack(0, count - 1, timestamp_ms, timestamp_ms, -1, -1, -1, count)
    body = tail + b"".join(records)
    crc = struct.pack(">I", calc_crc32c(memoryview(body)))
    # batch length counts from the leader epoch: epoch 4 + magic 1 + crc 4 + body
    return _PREFIX.pack(0, 9 + len(body), -1, 2) + crc + body


class BatchProducer:
    """Sends (topic, key, value, headers) records, partitioned like Kafka's default producer."""

    def __init__(self, admin: Any, timeout_ms: int) -> None:
        self._admin = admin  # a KafkaAdminClient this producer may use alone
        self._timeout_ms = timeout_ms
        self._leaders: dict[str, list[int]] = {}  # topic -> leader id per partition
        self._counters: dict[str, int] = defaultdict(int)

    def leaders(self, topic: str, refresh: bool = False) -> list[int]:
        if refresh or topic not in self._leaders:
            found = self._admin.describe_topics([topic])
            info = found[0] if found else None
            if not info or info.get("error_code") or not info.get("partitions"):
                raise errors.UnknownTopicOrPartitionError(f"no topic {topic!r}")
            parts = sorted(info["partitions"], key=lambda p: p["partition_index"])
            self._leaders[topic] = [p["leader_id"] for p in parts]
        return self._leaders[topic]

    def partition(self, topic: str, key: bytes | None) -> int:
        count = len(self.leaders(topic))
        if key is None:
            self._counters[topic] += 1
            return self._counters[topic] % count
        return (murmur2(key) & 0x7FFFFFFF) % count

    def send(
        self, records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]
    ) -> list[str]:
        """Produce every record; returns "" for each acknowledged one, else why it was not."""
        outcome = [""] * len(records)
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, (topic, key, _, _) in enumerate(records):
            try:
                groups[(topic, self.partition(topic, key))].append(i)
            except errors.KafkaError as exc:
                outcome[i] = str(exc)
        for attempt in range(3):
            failed = self._send_groups(records, groups, outcome)
            if not failed:
                break
            for topic in {t for t, _ in failed}:
                self.leaders(topic, refresh=True)
            groups = {tp: groups[tp] for tp in failed}
            time.sleep(0.2 * (attempt + 1))
        return outcome

    def _send_groups(
        self, records: list[Any], groups: dict[tuple[str, int], list[int]], outcome: list[str]
    ) -> list[tuple[str, int]]:
        """One ProduceRequest per leader; the (topic, partition)s worth retrying."""
        now = int(time.time() * 1000)
        by_leader: dict[int, list[tuple[str, int, list[int], bytes]]] = defaultdict(list)
        for (topic, partition), indexes in groups.items():
            leader = self.leaders(topic)[partition]
            chunk: list[bytes] = []
            chunk_ix: list[int] = []
            size = 0
            for i in indexes:
                _, key, value, headers = records[i]
                encoded = encode_record(len(chunk), key, value, headers)
                if chunk and size + len(encoded) > MAX_BATCH_BYTES:
                    by_leader[leader].append((topic, partition, chunk_ix, encode_batch(chunk, now)))
                    chunk, chunk_ix, size = [], [], 0
                    encoded = encode_record(0, key, value, headers)
                chunk.append(encoded)
                chunk_ix.append(i)
                size += len(encoded)
            if chunk:
                by_leader[leader].append((topic, partition, chunk_ix, encode_batch(chunk, now)))
        retry: set[tuple[str, int]] = set()
        for leader, batches in by_leader.items():
            for chunks in _requests(batches):
                request = _produce_request(chunks, self._timeout_ms)
                codes: dict[tuple[str, int], int] = {}
                try:
                    response = internals.send_and_wait(self._admin, request, leader)
                except errors.KafkaError as exc:
                    failure, retryable_failure = str(exc), exc.retriable
                else:
                    failure, retryable_failure = "", False
                    for t in response.responses:
                        for p in t.partition_responses:
                            codes[(t.name, p.index)] = p.error_code
                for topic, partition, indexes, _ in chunks:
                    if failure:
                        why, retryable = failure, retryable_failure
                    else:
                        code = codes.get((topic, partition), -1)
                        error = errors.for_code(code) if code else None
                        why = error.__name__ if error else ""
                        retryable = bool(error and error.retriable) or code == -1
                    for i in indexes:
                        outcome[i] = why
                    if why and retryable:
                        retry.add((topic, partition))
        return sorted(retry)


Chunk = tuple[str, int, list[int], bytes]


def _requests(batches: list[Chunk]) -> list[list[Chunk]]:
    """The batches for one leader, packed into as few requests as the size limit allows.

    A request carries at most one batch per partition, as the protocol expects.
    """
    requests: list[list[Chunk]] = []
    sizes: list[int] = []
    for chunk in batches:
        where = (chunk[0], chunk[1])
        for i, request in enumerate(requests):
            if sizes[i] + len(chunk[3]) <= MAX_REQUEST_BYTES and all(
                (c[0], c[1]) != where for c in request
            ):
                request.append(chunk)
                sizes[i] += len(chunk[3])
                break
        else:
            requests.append([chunk])
            sizes.append(len(chunk[3]))
    return requests


def _produce_request(chunks: list[Chunk], timeout_ms: int) -> Any:
    topic_type = ProduceRequest.TopicProduceData
    partition_type = topic_type.PartitionProduceData
    by_topic: dict[str, list[Any]] = defaultdict(list)
    for topic, partition, _, batch in chunks:
        by_topic[topic].append(partition_type(index=partition, records=batch))
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=timeout_ms,
        topic_data=[topic_type(name=t, partition_data=parts) for t, parts in by_topic.items()],
        max_version=9,
    )
