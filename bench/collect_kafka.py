"""Benchmark: what one Kafka collection costs next to the same raw requests sent bare.

Starts (or reuses, through `SLUICE_TEST_KAFKA_BOOTSTRAP` or `--bootstrap`) the
Tansu that `python -m dashboard.devservices` starts, creates `--topics` topics of
`--partitions` partitions with a few messages in each, and `--groups` consumer
groups with committed offsets on two topics each, at offsets that leave most of
them behind (so lag in seconds has timestamps to look up, several groups sitting
at different offsets of the same partition). Then it times, in interleaved rounds:

    reference  a tight script sending the same requests with kafka-python's
               admin client, concurrently where they can be, and only decoding
               the answers: Metadata, ListOffsets (earliest and latest) per
               partition leader, ListGroups per broker, OffsetFetch and
               DescribeGroups per group coordinator;
    ours       `Kafka.collect()`: the same requests, plus the Fetch rounds that
               read the timestamps lag in seconds needs (cached once read),
               mapped to dataclasses.

and prints the medians and ours ÷ reference (target ≤ 1.5, and ours ≤ 5 s).
The first collection (nothing cached: every timestamp is read) and
`collect(topology=True)` (adds DescribeConfigs and DescribeLogDirs) are timed
apart. Topics and groups are deleted at the end.

    .venv/bin/python bench/collect_kafka.py [--topics 200] [--partitions 6] [--groups 300]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic
from kafka.protocol.admin import DescribeGroupsRequest, ListGroupsRequest
from kafka.protocol.consumer import ListOffsetsRequest, OffsetFetchRequest
from kafka.protocol.metadata import MetadataRequest
from timing import cycle_table, interleaved, timed

from brokers.kafka.adapter import DESCRIBE_GROUPS_MAX_VERSION, Kafka

PREFIX = "sluice-bench"
# Names carry a run id: Tansu 0.6 fails to commit offsets for a group that was
# deleted before, so a rerun on the same broker must not reuse group names.
RUN = uuid.uuid4().hex[:6]
TARGET = 1.5
TARGET_SECONDS = 5.0
MESSAGES = 10  # per partition


# -- setup and teardown -------------------------------------------------------


def topic_name(i: int) -> str:
    return f"{PREFIX}-{RUN}-t{i:03d}"


def group_name(i: int) -> str:
    return f"{PREFIX}-{RUN}-g{i:03d}"


def group_topics(i: int, topics: int) -> list[str]:
    return [topic_name(i % topics), topic_name((i + 37) % topics)]


def group_offset(i: int) -> int:
    """Where group `i` sits: every fifth at the end, the others 1 to 10 behind."""
    return MESSAGES if i % 5 == 0 else (i % 4) * 3


def cleanup(admin: Any) -> None:
    groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(PREFIX)]
    if groups:
        admin.delete_groups(groups)
    topics = [t for t in admin.list_topics() if t.startswith(PREFIX)]
    if topics:
        admin.delete_topics(topics)


def setup(bootstrap: str, topics: int, partitions: int, groups: int) -> None:
    started = time.perf_counter()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    try:
        cleanup(admin)
        names = [topic_name(i) for i in range(topics)]
        for chunk in range(0, topics, 50):
            admin.create_topics([NewTopic(n, partitions, 1) for n in names[chunk : chunk + 50]])
        # One record per batch: Tansu answers ListOffsets(latest) with the last
        # batch's base offset + 1 (see tests/kafka_fixtures.py).
        producer = KafkaProducer(bootstrap_servers=bootstrap, batch_size=1, linger_ms=0)
        for name in names:
            for p in range(partitions):
                for m in range(MESSAGES):
                    producer.send(name, f"message {m}".encode(), partition=p)
        producer.flush()
        producer.close()
        for i in range(groups):
            offsets = {
                TopicPartition(t, p): OffsetAndMetadata(group_offset(i), None, -1)
                for t in group_topics(i, topics)
                for p in range(partitions)
            }
            admin.alter_group_offsets(group_name(i), offsets)
    finally:
        admin.close()
    print(
        f"created {topics} topics × {partitions} partitions with {MESSAGES} messages each "
        f"and {groups} groups in {time.perf_counter() - started:.1f} s"
    )


# -- the reference: the same requests, bare -----------------------------------


class Reference:
    """The raw requests a collection needs, sent with kafka-python and barely decoded."""

    def __init__(self, bootstrap: str) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        self.manager = self.admin._manager
        group_ids = [g["group_id"] for g in self.admin.list_groups()]
        # FindCoordinator once, as the adapter does (kafka-python caches it).
        ids = self.manager.run(self.admin._find_coordinator_ids, group_ids)
        self.coordinators: dict[int, list[str]] = defaultdict(list)
        for gid, node in ids.items():
            self.coordinators[node].append(gid)

    def run(self) -> tuple[int, int]:
        result: tuple[int, int] = self.manager.run(self._collect)
        return result

    async def _collect(self) -> tuple[int, int]:
        send = self.manager.send
        metadata = await send(MetadataRequest(topics=None, allow_auto_topic_creation=False))
        by_leader: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for topic in metadata.topics:
            for part in topic.partitions:
                if part.leader_id >= 0:
                    by_leader[part.leader_id][topic.name].append(part.partition_index)
        _Topic = ListOffsetsRequest.ListOffsetsTopic
        _Part = _Topic.ListOffsetsPartition
        pending = []
        for leader, topics in by_leader.items():
            for spec in (-2, -1):  # earliest, latest
                request = ListOffsetsRequest(
                    replica_id=-1,
                    isolation_level=0,
                    topics=[
                        _Topic(
                            name=t,
                            partitions=[_Part(partition_index=p, timestamp=spec) for p in ps],
                        )
                        for t, ps in topics.items()
                    ],
                )
                pending.append(send(request, node_id=leader))
        for broker in metadata.brokers:
            pending.append(send(ListGroupsRequest(), node_id=broker.node_id))
        offsets = 0
        for future in pending:
            response = await future
            for topic in getattr(response, "topics", ()):
                offsets += len(topic.partitions)
        _Group = OffsetFetchRequest.OffsetFetchRequestGroup
        pending = []
        for node, gids in self.coordinators.items():
            pending.append(
                send(
                    OffsetFetchRequest(
                        groups=[_Group(group_id=g, topics=None) for g in gids], min_version=8
                    ),
                    node_id=node,
                )
            )
            pending.append(
                send(
                    DescribeGroupsRequest(groups=gids, max_version=DESCRIBE_GROUPS_MAX_VERSION),
                    node_id=node,
                )
            )
        committed = 0
        for future in pending:
            response = await future
            for group in getattr(response, "groups", ()):
                for topic in getattr(group, "topics", ()):
                    committed += len(topic.partitions)
        return offsets, committed

    def close(self) -> None:
        self.admin.close()


def bench(bootstrap: str, rounds: int) -> dict[str, float]:
    reference = Reference(bootstrap)
    adapter = Kafka(bootstrap, timeout=30)
    try:
        offsets, committed = reference.run()
        first_wall, _ = timed(adapter.collect)  # cold: nothing cached
        snapshot = adapter.collect()
        topo = adapter.collect(topology=True)
        groups = [d for d in snapshot.destinations if d.kind == "group"]
        behind = [g for g in groups if (g.extra.get("lag_seconds") or {}).get("max")]
        print(
            f"reference reads {offsets} partition offsets and {committed} committed offsets; "
            f"collect() maps {len(snapshot.destinations)} destinations ({len(groups)} groups, "
            f"{len(behind)} behind in time) in {snapshot.requests} requests, "
            f"{topo.requests} with topology"
        )
        runs: dict[str, Callable[[], object]] = {
            "reference": reference.run,
            "ours": adapter.collect,
            "topology": lambda: adapter.collect(topology=True),
        }
        times = interleaved(runs, rounds)
    finally:
        adapter.close()
        reference.close()

    wall = cycle_table(
        times,
        {
            "reference": "reference requests",
            "ours": "collect()",
            "topology": "collect(topology=True)",
        },
    )
    print(f"{'first collect() (cold cache)':30}{first_wall * 1000:>7.0f}ms")
    ratio = wall["ours"] / wall["reference"]
    ok = ratio <= TARGET and wall["ours"] <= TARGET_SECONDS
    print(
        f"\nours ÷ reference = {ratio:.2f}  (target ≤ {TARGET}, and ≤ {TARGET_SECONDS:g} s)  "
        f"{'OK' if ok else 'OVER'}"
    )
    return {**wall, "first": first_wall, "ratio": ratio}


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("SLUICE_TEST_KAFKA_BOOTSTRAP", ""),
        help="a Kafka to use; default: start Tansu as devservices does",
    )
    parser.add_argument("--keep", action="store_true", help="leave the topics and groups behind")
    args = parser.parse_args()

    bootstrap = args.bootstrap
    if not bootstrap:
        from dashboard import devservices

        bootstrap = devservices.kafka()["bootstrap_servers"]  # stopped at exit
    print(f"Kafka at {bootstrap}")
    setup(bootstrap, args.topics, args.partitions, args.groups)
    try:
        bench(bootstrap, args.rounds)
    finally:
        if not args.keep:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
            cleanup(admin)
            admin.close()
            print("deleted the bench topics and groups")


if __name__ == "__main__":
    main()
