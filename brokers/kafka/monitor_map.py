"""What a Kafka collection's answers mean: topics and consumer groups as `Destination`s.

No I/O: `brokers.kafka.monitor` gathers the answers (decoded by
`brokers.kafka.monitor_wire`) and maps them here. Partitions are
`(topic, partition)` tuples throughout; offsets are dicts keyed by them.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment
from kafka.record import MemoryRecords

from brokers.base import Consumer, Destination

TP = tuple[str, int]

# Topic configs shown on the topic page, asked for by name in one DescribeConfigs.
TOPIC_CONFIGS = (
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "max.message.bytes",
    "segment.bytes",
    "compression.type",
    "message.timestamp.type",
    "delete.retention.ms",
    "min.compaction.lag.ms",
)

# DescribeConfigs `config_source` codes, as an operator would say them.
CONFIG_SOURCES = {
    1: "topic",
    2: "broker (dynamic)",
    3: "cluster default (dynamic)",
    4: "broker (static)",
    5: "default",
    6: "broker logger",
}

NOT_REPORTED = "not reported by this broker"


class Partition(NamedTuple):
    """One partition as Metadata describes it (a tuple: thousands are made per collection)."""

    tp: TP
    leader: int  # -1: no leader (offline)
    replicas: list[int]
    isr: list[int]
    under_replicated: bool


@dataclass
class Sizes:
    """Log sizes from DescribeLogDirs, or why there are none."""

    by_partition: dict[TP, int] = field(default_factory=dict)  # the largest replica
    disk_free: dict[int, int] = field(default_factory=dict)  # broker id -> usable bytes
    note: str = ""  # set when sizes are unknown: not supported, failed, not read yet


@dataclass
class Group:
    """What the broker said of one consumer group in this collection."""

    group_id: str
    committed: dict[TP, int]
    coordinator: int | None = None
    described: Any = None  # DescribeGroups' group, None when not described
    error: str = ""  # OffsetFetch or DescribeGroups failed for this group


# -- topics -------------------------------------------------------------------


def topic_destination(
    name: str,
    parts: list[Partition],
    start: dict[TP, int],
    end: dict[TP, int],
    configs: dict[str, Any] | None,
    sizes: Sizes,
) -> Destination:
    rows: list[dict[str, Any]] = []
    in_total = messages = 0
    by_partition = sizes.by_partition
    for p in parts:
        tp = p.tp
        first, last = start.get(tp), end.get(tp)
        count = None
        if first is not None and last is not None:
            count = last - first if last > first else 0
            in_total += last
            messages += count
        rows.append(
            {
                "partition": tp[1],
                "leader": p.leader,
                "replicas": p.replicas,
                "isr": p.isr,
                "under_replicated": p.under_replicated,
                "first": first,
                "last": last,  # the next offset to be written (the high watermark)
                "messages": count,
                "size": by_partition.get(tp),
            }
        )
    sized = [r["size"] for r in rows if r["size"] is not None]
    return Destination(
        kind="topic",
        key=f"topic/{name}",
        name=name,
        # Topics keep messages for any number of readers: backlog is the groups' lag.
        backlog=0,
        # The sum of end offsets only grows: its change is the produce rate.
        in_total=in_total,
        extra={
            "partitions": len(parts),
            "replication_factor": max((len(p.replicas) for p in parts), default=0),
            "messages": messages,
            "under_replicated": sum(1 for p in parts if p.under_replicated),
            "offline": sum(1 for p in parts if p.leader < 0),
            "partition_details": rows,
            # None until the first DescribeConfigs answered.
            "configs": configs,
            "size": sum(sized) if sized and not sizes.note else None,
            "size_note": sizes.note,
        },
    )


def topic_configs(result: Any) -> dict[str, Any]:
    """The shown configs of one DescribeConfigs result, and any other set on the topic.

    {name: {"value", "source"}}, in TOPIC_CONFIGS order; values of sensitive
    configs are never kept.
    """
    out: dict[str, Any] = {}
    for c in sorted(result.configs, key=_config_order):
        source = getattr(c, "config_source", None)
        if source is None or source < 0:
            source = 5 if getattr(c, "is_default", False) else 1
        if c.name not in TOPIC_CONFIGS and source != 1:
            continue
        out[c.name] = {
            "value": None if c.is_sensitive else c.value,
            "source": CONFIG_SOURCES.get(source, "unknown"),
        }
    return out


def _config_order(c: Any) -> tuple[int, str]:
    name: str = c.name
    return (TOPIC_CONFIGS.index(name) if name in TOPIC_CONFIGS else len(TOPIC_CONFIGS), name)


# -- groups -------------------------------------------------------------------


def group_destination(
    group: Group,
    start: dict[TP, int],
    end: dict[TP, int],
    timestamps: dict[tuple[str, int, int], int],
    now_ms: int,
) -> Destination:
    """A group's lag per partition, per topic and in total, in messages and in seconds.

    Lag in seconds is how long ago the next message the group has to read was
    written: now minus the timestamp at its committed offset; 0 when caught up.
    """
    rows: list[list[Any]] = []  # [topic, partition, committed, end, lag]
    seconds: list[list[Any]] = []  # [topic, partition, seconds or None]
    out_of_range: list[list[Any]] = []
    per_topic: dict[str, int] = {}
    behind_max: float | None = None
    committed_at = group.committed
    for tp in sorted(committed_at):
        committed = committed_at[tp]
        last = end.get(tp)
        # -1: no commit on this partition; no end: topic gone or partition offline.
        if committed < 0 or last is None:
            continue
        topic, partition = tp
        lag = last - committed if last > committed else 0
        rows.append([topic, partition, committed, last, lag])
        per_topic[topic] = per_topic.get(topic, 0) + lag
        first = start.get(tp)
        behind: float | None = 0.0
        if committed > last or (first is not None and committed < first):
            # Below the log start: messages were deleted before it read them.
            out_of_range.append([topic, partition, committed, first, last])
            behind = None
        elif lag:
            ts = timestamps.get((topic, partition, committed))
            behind = None if ts is None or ts < 0 else round(max(0, now_ms - ts) / 1000, 1)
        seconds.append([topic, partition, behind])
        if behind is not None and (behind_max is None or behind > behind_max):
            behind_max = behind
    total = sum(per_topic.values())
    desc = group.described
    ok = desc is not None and desc.error_code == 0
    members = member_rows(desc) if ok else []
    return Destination(
        kind="group",
        key=f"group/{group.group_id}",
        name=group.group_id,
        state=desc.group_state if ok else "",
        backlog=total,
        lag=total,
        consumers=len(members),
        # The changes of these sums are the produce and commit rates of what
        # this group reads.
        in_total=sum(r[3] for r in rows),
        out_total=sum(r[2] for r in rows),
        consumer_details=tuple(
            Consumer(tag=m["member_id"], channel=m["host"], client=m["client_id"]) for m in members
        ),
        extra={
            "topics": per_topic,
            "partitions": rows,
            # The largest over partitions (None when no timestamp could be
            # read), and [topic, partition, seconds] per partition.
            "lag_seconds": {"max": behind_max, "partitions": seconds},
            "members": members,
            "assignor": desc.protocol_data if ok else "",
            "protocol_type": desc.protocol_type if ok else "",
            "coordinator": group.coordinator,
            "error": group.error,
            # [topic, partition, committed, log start, end] outside the log.
            "out_of_range": out_of_range,
        },
    )


def member_rows(desc: Any) -> list[dict[str, Any]]:
    """Members with what each was assigned, from a DescribeGroups answer."""
    return [
        {
            "member_id": m.member_id,
            "client_id": m.client_id,
            "host": m.client_host,
            "instance_id": getattr(m, "group_instance_id", None) or "",
            "assignment": assignment(desc.protocol_type, m.member_assignment),
        }
        for m in desc.members
    ]


def assignment(protocol_type: str, raw: Any) -> list[list[Any]]:
    """[[topic, [partitions]]] from a member's assignment; [] when it is not a consumer's.

    Only the "consumer" protocol's assignment has a known layout; Kafka Connect
    and other group protocols carry their own.
    """
    if protocol_type != "consumer" or not raw:
        return []
    try:
        decoded = ConsumerProtocolAssignment.decode(raw) if isinstance(raw, bytes) else raw
        pairs = [(tp.topic, list(tp.partitions)) for tp in decoded.assigned_partitions]
    except (struct.error, ValueError, AttributeError, TypeError):
        return []
    return [[topic, sorted(parts)] for topic, parts in sorted(pairs)]


# -- timestamps ---------------------------------------------------------------


def needed_offsets(
    groups: Iterable[Group],
    start: dict[TP, int],
    end: dict[TP, int],
    known: dict[tuple[str, int, int], int],
) -> dict[TP, list[int]]:
    """Committed offsets inside the log, with messages after them, whose timestamp is unknown."""
    wanted: dict[TP, set[int]] = defaultdict(set)
    for group in groups:
        for tp, committed in group.committed.items():
            last = end.get(tp)
            if last is None or not start.get(tp, 0) <= committed < last:
                continue
            if (*tp, committed) not in known:
                wanted[tp].add(committed)
    return {tp: sorted(offsets) for tp, offsets in wanted.items()}


def record_timestamps(raw: bytes | None, wanted: list[int]) -> dict[int, int]:
    """For each wanted offset, the timestamp (ms) of the first record at or after it.

    The records are what one Fetch returned from the smallest wanted offset on,
    contiguous in the log, so any wanted offset up to the last record read is
    answered; the rest wait for another round. Control records (transaction
    markers) are skipped: no consumer reads them.
    """
    if not raw or not wanted:
        return {}
    found: dict[int, int] = {}
    pending = sorted(wanted)
    records = MemoryRecords(raw)
    while pending:
        batch = records.next_batch()
        if batch is None:
            break
        if getattr(batch, "is_control_batch", False):
            continue
        for record in batch:
            while pending and pending[0] <= record.offset:
                found[pending.pop(0)] = record.timestamp
            if not pending:
                break
    return found
