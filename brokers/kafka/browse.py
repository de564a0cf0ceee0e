"""A Kafka topic's messages: browse them by offset, time or recency, and scan them all.

Talks to: the cluster of a `brokers.kafka.adapter.Kafka` adapter, through a new
`KafkaConsumer` from `Kafka.client()` with no group, assigned its partitions
directly: it joins no group and commits nothing, so reading has no side
effect on the cluster. (Producing one message is `brokers.kafka.publish`.)

Where a topic ends: Tansu (a Kafka-protocol broker) answers
ListOffsets(latest) with its last record batch's base offset + 1, which is
short of the end when producers batch records; the high watermark of a Fetch
is right. So every read first fixes each partition's end as the larger of the
two (`TopicReader.bounds`), and never trusts ListOffsets alone. Likewise a
broker that answers ListOffsets(timestamp) with no real answer (Tansu: offset
0, timestamp -1) is searched by bisection on the records' timestamps.

Cannot:
    - read the records of aborted transactions differently from committed
      ones (isolation is read_uncommitted: an operator sees what is stored).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as errors
from kafka import KafkaConsumer, TopicPartition

from brokers.base import BrokerError
from brokers.kafka.adapter import Kafka
from brokers.kafka.filters import Matcher
from brokers.kafka.scan import Scan


class Rejected(BrokerError):
    """The request itself cannot be done (offset out of range, record too large); no retry helps."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class NotFound(Rejected):
    """No such topic or partition."""


@dataclass(frozen=True)
class Record:
    """One Kafka record as read, with its value cut to the reader's limit."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch; -1 when the record has none
    # "create": the producer's clock (CreateTime); "log-append": the broker's (LogAppendTime).
    timestamp_type: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (a record with a null value)
    # In order, and names may repeat: Kafka headers are a list, not a map. A value may be null.
    headers: tuple[tuple[str, bytes | None], ...] = ()
    size: int = 0  # the whole value's size, even when `value` was cut
    truncated: bool = False


@dataclass(frozen=True)
class Page:
    """What one read returned, and where it stopped."""

    records: tuple[Record, ...]
    # Per partition: (first offset, end offset) when the read began.
    bounds: dict[int, tuple[int, int]]
    # Per partition read: the offset to go on from.
    next: dict[int, int] = field(default_factory=dict)
    scanned: int = 0  # records looked at; more than shown when filtering
    complete: bool = True  # nothing in the range read was left unlooked at


def to_record(cr: Any, limit: int | None) -> Record:
    """A kafka-python ConsumerRecord as a Record, its value cut to `limit` bytes."""
    value = cr.value
    size = len(value) if value is not None else 0
    cut = limit is not None and value is not None and size > limit
    return Record(
        topic=cr.topic,
        partition=cr.partition,
        offset=cr.offset,
        timestamp=cr.timestamp if cr.timestamp is not None else -1,
        timestamp_type="log-append" if cr.timestamp_type == 1 else "create",
        key=cr.key,
        value=value[:limit] if cut else value,
        headers=tuple(cr.headers or ()),
        size=size,
        truncated=cut,
    )


class TopicReader:
    """Reads one topic by offset, time or recency, and scans ranges of it; never commits.

    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        adapter: Kafka,
        topic: str,
        *,
        body_limit: int | None = None,
        partition_fetch_bytes: int = 1024 * 1024,
        wait_ms: int = 50,
    ) -> None:
        self.adapter = adapter
        self.topic = topic
        self.body_limit = body_limit
        self.partition_fetch_bytes = partition_fetch_bytes
        self.wait_ms = wait_ms
        self.timeout_ms = adapter.timeout_ms
        self.consumer = adapter.client(
            KafkaConsumer,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=wait_ms,
            max_partition_fetch_bytes=partition_fetch_bytes,
            fetch_max_bytes=max(52428800, partition_fetch_bytes * 8),
        )
        try:
            found = self._call(self.consumer.partitions_for_topic, topic)
        except BrokerError:
            self.close()
            raise
        if not found:
            self.close()
            raise NotFound(f"no topic {topic!r} on this cluster")
        self.partitions: list[int] = sorted(found)

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except errors.KafkaError:
            pass  # a consumer of a broker gone away: nothing left to release

    # -- where the partitions start and end ---------------------------------

    def check_partition(self, partition: int) -> None:
        if partition not in self.partitions:
            last = self.partitions[-1]
            raise NotFound(
                f"topic {self.topic!r} has partitions 0 to {last}; there is no partition {partition}"
            )

    def bounds(self, partitions: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
        """(first offset, end offset) of each partition, the end being right on Tansu too."""
        wanted = sorted(set(self.partitions if partitions is None else partitions))
        for p in wanted:
            self.check_partition(p)
        return self._call(self._bounds, wanted)

    def _bounds(self, wanted: list[int]) -> dict[int, tuple[int, int]]:
        c = self.consumer
        tps = [self._tp(p) for p in wanted]
        start = c.beginning_offsets(tps, timeout_ms=self.timeout_ms)
        listed = c.end_offsets(tps, timeout_ms=self.timeout_ms)
        # A fetch from the listed end brings back the high watermark (and any
        # records ListOffsets left out, which are dropped here).
        self._assign({tp.partition: listed[tp] for tp in tps})
        seen: dict[Any, int] = {}
        deadline = time.monotonic() + self.timeout_ms / 1000
        while len(seen) < len(tps) and time.monotonic() < deadline:
            c.poll(timeout_ms=self.wait_ms, max_records=1)
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None:
                    seen[tp] = hw
        if len(seen) < len(tps):
            raise BrokerError(
                f"no fetch answer from {self.topic!r} within {self.adapter.timeout:g} s"
            )
        return {tp.partition: (start[tp], max(listed[tp], seen[tp])) for tp in tps}

    # -- browsing -----------------------------------------------------------

    def from_offset(
        self, partition: int, offset: int, count: int, matcher: Matcher | None, budget: int
    ) -> Page:
        """Up to `count` matching records of one partition from `offset` on, looking at `budget` at most."""
        bounds = self.bounds([partition])
        start, end = bounds[partition]
        if not start <= offset <= end:
            held = (
                f"holds offsets {start} to {end - 1}"
                if end > start
                else f"is empty (its next offset is {end})"
            )
            raise Rejected(f"partition {partition} {held}; {offset} is out of range")
        stop = min(end, offset + budget)
        found, scanned, nxt = self._call(self._read, {partition: (offset, stop)}, count, matcher)
        records = found[partition]
        return Page(
            tuple(to_record(r, self.body_limit) for r in records),
            bounds,
            nxt,
            scanned,
            complete=nxt[partition] >= end or len(records) >= count,
        )

    def from_time(
        self,
        timestamp_ms: int,
        count: int,
        partition: int | None,
        matcher: Matcher | None,
        budget: int,
    ) -> Page:
        """The first `count` matching records at or after a time, merged across partitions by time."""
        bounds = self.bounds(None if partition is None else [partition])
        starts = self._call(self._offsets_for_time, timestamp_ms, bounds)
        share = max(count, budget // len(bounds))
        ranges = {p: (o, min(bounds[p][1], o + share)) for p, o in starts.items()}
        found, scanned, nxt = self._call(self._read, ranges, count, matcher)
        merged = sorted(
            (r for rs in found.values() for r in rs),
            key=lambda r: (r.timestamp, r.partition, r.offset),
        )[:count]
        complete = all(nxt[p] >= bounds[p][1] or len(found[p]) >= count for p in ranges)
        return Page(
            tuple(to_record(r, self.body_limit) for r in merged), bounds, nxt, scanned, complete
        )

    def newest(
        self, count: int, partition: int | None, matcher: Matcher | None, budget: int
    ) -> Page:
        """The newest `count` matching records, newest first, merged across partitions by time.

        With a filter, only the last `budget` records (shared by the partitions) are looked at.
        """
        bounds = self.bounds(None if partition is None else [partition])
        filtering = matcher is not None and not matcher.empty
        window = max(count, budget // len(bounds)) if filtering else count
        ranges = {p: (max(s, e - window), e) for p, (s, e) in bounds.items()}
        found, scanned, nxt = self._call(self._read, ranges, count, matcher, True)
        merged = sorted(
            (r for rs in found.values() for r in rs),
            key=lambda r: (r.timestamp, r.partition, r.offset),
            reverse=True,
        )[:count]
        complete = all(ranges[p][0] == bounds[p][0] for p in ranges)
        return Page(
            tuple(to_record(r, self.body_limit) for r in merged), bounds, nxt, scanned, complete
        )

    def record(self, partition: int, offset: int) -> Record | None:
        """The record at exactly this offset, whole; None if there is none (compacted, out of range)."""
        start, end = self.bounds([partition])[partition]
        if not start <= offset < end:
            return None
        found, _, _ = self._call(self._read, {partition: (offset, offset + 1)}, 1, None)
        got = [r for r in found[partition] if r.offset == offset]
        return to_record(got[0], None) if got else None

    # -- scanning -----------------------------------------------------------

    def scan(
        self,
        ranges: dict[int, tuple[int, int]],
        matcher: Matcher,
        report: Callable[[int, int, list[Record]], bool],
        keep: int,
        every: float = 0.5,
    ) -> None:
        """Look at every record in `ranges` ({partition: (from, to)}), faster than a consumer reads.

        About every `every` seconds, and at the end, calls `report(scanned, matched,
        new records)` with the counts since the last call and the new matches as
        Records (only the first `keep` matches overall); it returns False to stop.
        See `brokers.kafka.scan` for how.
        """
        counts = {"scanned": 0, "matched": 0, "kept": 0}
        new: list[Record] = []
        last = [time.monotonic()]

        def on_batch(scanned: int, hits: list[Any]) -> bool:
            counts["scanned"] += scanned
            counts["matched"] += len(hits)
            room = keep - counts["kept"]
            if hits and room > 0:
                new.extend(to_record(r, self.body_limit) for r in hits[:room])
                counts["kept"] += min(room, len(hits))
            if time.monotonic() - last[0] < every:
                return True
            return flush()

        def flush() -> bool:
            going_on = report(counts["scanned"], counts["matched"], list(new))
            counts["scanned"] = counts["matched"] = 0
            new.clear()
            last[0] = time.monotonic()
            return going_on

        # The consumer's own fetching stops; the scan sends its own Fetches.
        self._call(self.consumer.unsubscribe)
        scan = Scan(
            self.consumer,
            self.topic,
            ranges,
            matcher,
            on_batch,
            partition_bytes=self.partition_fetch_bytes,
            timeout=self.adapter.timeout,
        )
        self._call(scan.run)
        if counts["scanned"] or counts["matched"] or new or not ranges:
            flush()

    # -- internals ----------------------------------------------------------

    def _tp(self, partition: int) -> Any:
        return TopicPartition(self.topic, partition)

    def _assign(self, positions: dict[int, int]) -> None:
        """Read exactly these partitions, from these offsets."""
        tps = [self._tp(p) for p in positions]
        self.consumer.assign(tps)
        # Partitions that stay assigned keep their paused state across assign().
        self.consumer.resume(*tps)
        for tp in tps:
            self.consumer.seek(tp, positions[tp.partition])

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except errors.CorruptRecordError as exc:
            # The data's fault, not the cluster's: kafka-python gives up on a whole batch
            # when one record in it cannot be decoded (a header name that is not UTF-8).
            raise Rejected(
                f"a record of {self.topic!r} in the range read cannot be decoded ({exc});"
                " read from past it"
            ) from None
        except errors.KafkaError as exc:
            raise self.adapter._error(exc) from None

    def _settle_idle(self, active: dict[int, Any], ranges: dict[int, tuple[int, int]]) -> bool:
        """After an empty poll: drop partitions whose position passed their range's end.

        Positions move past offsets with no record (compaction, transaction
        markers) without returning anything; True if any partition finished so.
        """
        done = [p for p, tp in active.items() if self.consumer.position(tp) >= ranges[p][1]]
        for p in done:
            self.consumer.pause(active.pop(p))
        return bool(done)

    def _read(
        self,
        ranges: dict[int, tuple[int, int]],
        want: int,
        matcher: Matcher | None,
        keep_last: bool = False,
    ) -> tuple[dict[int, list[Any]], int, dict[int, int]]:
        """Matching ConsumerRecords per partition from each range: the first `want`, or the last.

        Returns them with the number of records looked at and, per partition,
        the offset to go on from.
        """
        c = self.consumer
        found: dict[int, Any] = {p: deque(maxlen=want) if keep_last else [] for p in ranges}
        nxt = {p: a for p, (a, _) in ranges.items()}
        active = {p: self._tp(p) for p, (a, b) in ranges.items() if a < b}
        self._assign({p: ranges[p][0] for p in active})
        scanned = 0
        idle_since: float | None = None
        while active:
            got = c.poll(timeout_ms=self.wait_ms * 4, max_records=5000)
            if not got:
                if self._settle_idle(active, ranges):
                    continue
                now = time.monotonic()
                idle_since = idle_since or now
                if now - idle_since > self.adapter.timeout:
                    break  # the rest of the range holds nothing readable
                continue
            idle_since = None
            for tp, records in got.items():
                p = tp.partition
                if p not in active:
                    continue
                end = ranges[p][1]
                records = [r for r in records if r.offset < end]
                if not records:
                    continue
                scanned += len(records)
                nxt[p] = records[-1].offset + 1
                hits = matcher.select(records) if matcher is not None else records
                if keep_last:
                    found[p].extend(hits)
                else:
                    room = want - len(found[p])
                    found[p].extend(hits[:room])
                    if len(hits) >= room:
                        nxt[p] = hits[room - 1].offset + 1
                        del active[p]
                        c.pause(tp)
                        continue
                if nxt[p] >= end:
                    del active[p]
                    c.pause(tp)
        return {p: list(rs) for p, rs in found.items()}, scanned, nxt

    def _offsets_for_time(
        self, timestamp_ms: int, bounds: dict[int, tuple[int, int]]
    ) -> dict[int, int]:
        """Per partition, the first offset whose record is at or after `timestamp_ms` (or the end)."""
        tps = {p: self._tp(p) for p in bounds}
        answer = self.consumer.offsets_for_times(
            {tp: timestamp_ms for tp in tps.values()}, timeout_ms=self.timeout_ms
        )
        out = {}
        for p, tp in tps.items():
            start, end = bounds[p]
            got = answer.get(tp)
            if got is None:
                out[p] = end  # nothing at or after that time
                continue
            # Kafka's answer is exact, and checked with one read. Tansu answers
            # offset 0 with timestamp -1, or the base offset of the batch
            # holding the time: bisect from there.
            real = got.timestamp is not None and got.timestamp >= timestamp_ms
            out[p] = self._bisect_time(
                p, timestamp_ms, max(start, got.offset) if real else start, end
            )
        return out

    def _first(self, partition: int, offset: int, end: int) -> Any:
        """The first record at or after `offset` (and before `end`), or None."""
        found, _, _ = self._read({partition: (offset, end)}, 1, None)
        return found[partition][0] if found[partition] else None

    def _bisect_time(self, partition: int, timestamp_ms: int, lo: int, hi: int) -> int:
        """The first offset at or after a time, from `lo` on, reading one record per step.

        Assumes timestamps grow with offsets, as Kafka's own time index does.
        """
        first = self._first(partition, lo, hi)
        if first is None or first.timestamp >= timestamp_ms:
            return hi if first is None else first.offset
        lo = first.offset + 1
        while lo < hi:
            mid = (lo + hi) // 2
            first = self._first(partition, mid, hi)
            if first is None or first.timestamp >= timestamp_ms:
                hi = mid
            else:
                lo = first.offset + 1
        return lo
