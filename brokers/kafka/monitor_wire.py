"""The requests a Kafka collection sends, built, and their answers, decoded.

No I/O: `brokers.kafka.monitor` sends these through kafka-python's admin
client and maps the decoded answers with `brokers.kafka.monitor_map`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import kafka.errors as errors
from kafka.protocol.admin import DescribeConfigsRequest, DescribeGroupsRequest
from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest, OffsetFetchRequest

from brokers.kafka.monitor_map import TP, Group, Partition, Sizes

EARLIEST, LATEST = -2, -1

# DescribeGroups v3+ carries `authorized_operations`; kafka-python 3.0 fails on
# the value Tansu sends there (all 32 bits set, even unasked). Versions 0 to 2
# carry the same state and members without it, and Kafka 0.9 to 4.x answer them.
DESCRIBE_GROUPS_MAX_VERSION = 2

# Fetch v13+ names topics by id; v12 by name is all a timestamp read needs.
FETCH_MAX_VERSION = 12
# Enough for the first record batch at an offset (a larger first batch still
# comes whole, KIP-74): timestamps need one record, not the backlog.
FETCH_PARTITION_BYTES = 1024
# How long a Fetch may take. Kafka answers at once when any partition has
# records (timestamp reads only ask where there are), so this costs nothing
# there; Tansu 0.6 reads partitions until this deadline and answers with those
# it got to (with 0, with none), so it needs room to read them all.
FETCH_MAX_WAIT_MS = 500


def partitions(topics: Any) -> dict[str, list[Partition]]:
    """Metadata's topics as Partition lists, internal ones left out."""
    out: dict[str, list[Partition]] = {}
    for t in topics:
        # `__consumer_offsets`, `__transaction_state`, and by convention any `__` topic.
        if t.error_code or t.is_internal or t.name.startswith("__"):
            continue
        name = t.name
        out[name] = sorted(
            (
                Partition(
                    (name, p.partition_index),
                    p.leader_id,
                    replicas := list(p.replica_nodes or ()),
                    isr := list(p.isr_nodes or ()),
                    len(isr) < len(replicas),
                )
                for p in t.partitions
            ),
            key=lambda p: p.tp[1],
        )
    return out


def list_offsets_request(tps: list[TP], spec: int) -> Any:
    """ListOffsets for these partitions: `spec` is EARLIEST or LATEST."""
    _Topic = ListOffsetsRequest.ListOffsetsTopic
    _Part = _Topic.ListOffsetsPartition
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, partition in tps:
        by_topic[topic].append(partition)
    return ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=[
            _Topic(name=t, partitions=[_Part(partition_index=p, timestamp=spec) for p in ps])
            for t, ps in by_topic.items()
        ],
        min_version=1,
    )


def offsets(responses: list[Any]) -> dict[TP, int]:
    """Offsets per partition; a partition answering with an error is left out (unknown)."""
    return {
        (t.name, p.partition_index): p.offset
        for response in responses
        for t in response.topics
        for p in t.partitions
        if not p.error_code and p.offset >= 0
    }


def offset_fetch_requests(gids: list[str], batched: bool) -> list[tuple[str | None, Any]]:
    """OffsetFetch for these groups: one for all (v8+, Kafka 3.0), else one per group."""
    if batched:
        _Group = OffsetFetchRequest.OffsetFetchRequestGroup
        groups = [_Group(group_id=g, topics=None) for g in gids]
        return [(None, OffsetFetchRequest(groups=groups, min_version=8, max_version=8))]
    return [(g, OffsetFetchRequest(group_id=g, topics=None, min_version=2)) for g in gids]


def committed(response: Any, gid: str | None) -> list[Group]:
    """Groups' committed offsets from one OffsetFetch (v8+: many groups; older: `gid` only)."""
    answers = response.groups if gid is None else [response]
    out = []
    for answer in answers:
        group = Group(group_id=answer.group_id if gid is None else gid, committed={})
        if answer.error_code:
            group.error = f"OffsetFetch: {errors.for_code(answer.error_code).__name__}"
        for topic in answer.topics:
            for p in topic.partitions:
                if p.error_code:
                    code = errors.for_code(p.error_code).__name__
                    where = f"{topic.name}/{p.partition_index}"
                    group.error = group.error or f"OffsetFetch {where}: {code}"
                    continue
                group.committed[(topic.name, p.partition_index)] = p.committed_offset
        out.append(group)
    return out


def describe_groups_request(gids: list[str]) -> Any:
    # kafka-python's public describe_groups() always asks for v3+ (see
    # DESCRIBE_GROUPS_MAX_VERSION).
    return DescribeGroupsRequest(groups=gids, max_version=DESCRIBE_GROUPS_MAX_VERSION)


def describe_configs_request(topics: list[str]) -> Any:
    """One DescribeConfigs for every config of every topic.

    All of them: Tansu 0.6 drops the connection when asked for named keys
    (it cannot decode `configuration_keys`); `topic_configs` keeps the few shown.
    """
    _Resource = DescribeConfigsRequest.DescribeConfigsResource
    topic_type = 2
    return DescribeConfigsRequest(
        resources=[
            _Resource(resource_type=topic_type, resource_name=name, configuration_keys=None)
            for name in topics
        ],
        include_synonyms=False,
    )


def log_sizes(answers: list[tuple[int, Any]]) -> Sizes:
    """Log sizes per partition (largest replica) and free disk per broker, from DescribeLogDirs."""
    sizes = Sizes()
    for node, response in answers:
        dirs = [d for d in response.results if not d.error_code]
        for log_dir in dirs:
            for topic in log_dir.topics:
                for p in topic.partitions:
                    if p.is_future_key:
                        continue  # a copy being moved between directories
                    tp = (topic.name, p.partition_index)
                    sizes.by_partition[tp] = max(sizes.by_partition.get(tp, 0), p.partition_size)
        usable = [d.usable_bytes for d in dirs if getattr(d, "usable_bytes", -1) >= 0]
        if usable:  # v4+ (Kafka 3.3)
            sizes.disk_free[node] = sum(usable)
    return sizes


def fetch_request(positions: dict[TP, int]) -> Any:
    """A Fetch of a little data at each position, outside any fetch session."""
    _Topic = FetchRequest.FetchTopic
    _Part = _Topic.FetchPartition
    by_topic: dict[str, list[Any]] = defaultdict(list)
    for (topic, partition), offset in positions.items():
        by_topic[topic].append(
            _Part(
                partition=partition,
                current_leader_epoch=-1,
                fetch_offset=offset,
                last_fetched_epoch=-1,
                log_start_offset=-1,
                partition_max_bytes=FETCH_PARTITION_BYTES,
            )
        )
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=FETCH_MAX_WAIT_MS,
        min_bytes=1,
        max_bytes=max(1 << 20, FETCH_PARTITION_BYTES * len(positions)),
        isolation_level=0,
        session_id=0,
        session_epoch=-1,  # a full fetch, no session
        topics=[_Topic(topic=t, partitions=ps) for t, ps in by_topic.items()],
        forgotten_topics_data=[],
        rack_id="",
        max_version=FETCH_MAX_VERSION,
    )


def broker_name(b: Any) -> str:
    return f"broker {b.node_id} @ {b.host}:{b.port}"
