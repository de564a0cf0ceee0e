"""One Kafka collection: the requests in stages, and what it keeps between collections.

`Monitor.gather` runs on the admin client's IO thread and sends each stage's
requests at once, never one per group:

1. Metadata.
2. ListOffsets (earliest and latest) per partition leader, ListGroups per
   broker; DescribeConfigs (one, all topics) with topology or for new topics;
   DescribeLogDirs per broker with topology, where the broker has it.
3. FindCoordinator for groups not seen before (one, batched; kafka-python
   caches it), then OffsetFetch and DescribeGroups per coordinator.
4. Fetch rounds, one request per leader each, reading the timestamp at
   committed offsets some group lags behind (for lag in seconds). A timestamp
   never changes, so each is read once and kept while a group sits there.

`brokers.kafka.monitor_wire` builds the requests and decodes the answers;
`Monitor.snapshot` maps them (`brokers.kafka.monitor_map`) to a Snapshot.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as errors
from kafka.protocol.admin import DescribeLogDirsRequest, ListGroupsRequest
from kafka.protocol.metadata import MetadataRequest

from brokers.base import Destination, Health, Node, Snapshot, Topology
from brokers.kafka import internals
from brokers.kafka import monitor_map as mapping
from brokers.kafka import monitor_wire as wire
from brokers.kafka.monitor_map import TP, Group, Partition, Sizes
from brokers.kafka.monitor_wire import EARLIEST, LATEST

# Several groups at different offsets of one partition take a round each.
FETCH_ROUNDS = 4
NOT_READ = "not read yet"


@dataclass
class Collected:
    """The decoded answers of one collection, before mapping."""

    brokers: list[Any]
    controller: int | None
    cluster_id: str
    topics: dict[str, list[Partition]]
    start: dict[TP, int]
    end: dict[TP, int]
    groups: list[Group]
    group_ids: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    topology: bool = False  # configs and sizes were read again


class Monitor:
    """Collections of one cluster, with the caches they share."""

    def __init__(self) -> None:
        # Timestamps at (topic, partition, offset).
        self.timestamps: dict[tuple[str, int, int], int] = {}
        # The highest high watermark a Fetch showed per partition, with the
        # topic's id: Tansu's ListOffsets(latest) can be lower (see tests/kafka_fixtures.py).
        self.highs: dict[TP, tuple[str, int]] = {}
        self.topic_ids: dict[str, str] = {}
        # Offsets past ListOffsets' end that a Fetch already checked, with the
        # end then: checked again only once that end moves.
        self.checked: dict[tuple[str, int, int], int] = {}
        # DescribeConfigs per topic and DescribeLogDirs, refreshed with topology.
        self.configs: dict[str, dict[str, Any]] = {}
        self.configs_error = ""
        self.sizes = Sizes(note=NOT_READ)

    async def gather(
        self, admin: Any, versions: dict[str, tuple[int, int]], topology: bool
    ) -> Collected:
        sent = 0

        def send(request: Any, node: Any = None) -> Any:
            nonlocal sent
            sent += 1
            return internals.send(admin, request, node)

        # 1. Metadata.
        metadata = await send(
            MetadataRequest(
                topics=None,
                allow_auto_topic_creation=False,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            )
        )
        brokers = sorted(metadata.brokers, key=lambda b: b.node_id)
        cluster = internals.cluster_of(admin)
        if any(cluster.broker_metadata(b.node_id) is None for b in brokers):
            # A broker the client's own (minutes old) metadata does not know
            # yet: learn it, or requests to it could not be routed.
            cluster.update_metadata(metadata)
        topics = wire.partitions(metadata.topics)
        self._forget_stale_highs(metadata.topics)
        facts: dict[str, Any] = {}

        # 2. Offsets per leader, groups per broker, configs and sizes.
        by_leader: dict[int, list[TP]] = defaultdict(list)
        for parts in topics.values():
            for p in parts:
                if p.leader >= 0:  # a partition without a leader cannot answer
                    by_leader[p.leader].append(p.tp)
        earliest = [send(wire.list_offsets_request(t, EARLIEST), n) for n, t in by_leader.items()]
        latest = [send(wire.list_offsets_request(t, LATEST), n) for n, t in by_leader.items()]
        listed = [send(ListGroupsRequest(), b.node_id) for b in brokers]
        config_topics = sorted(topics) if topology else sorted(set(topics) - set(self.configs))
        configs = send(wire.describe_configs_request(config_topics)) if config_topics else None
        log_dirs = None
        if "DescribeLogDirs" not in versions:
            self.sizes = Sizes(note=mapping.NOT_REPORTED)
        elif topology or self.sizes.note == NOT_READ:
            request = DescribeLogDirsRequest(topics=None)  # every partition
            log_dirs = [(b.node_id, send(request, b.node_id)) for b in brokers]

        start = wire.offsets([await f for f in earliest])
        end = wire.offsets([await f for f in latest])
        group_ids: set[str] = set()
        for future in listed:
            response = await future
            if response.error_code:
                raise errors.for_code(response.error_code)("ListGroups failed")
            # Share groups (KIP-932) have no committed offsets to fetch.
            group_ids.update(
                g.group_id for g in response.groups if getattr(g, "group_type", "") != "share"
            )
        if configs is not None:
            await self._read_configs(configs, config_topics, replace=topology)
        for name in set(self.configs) - set(topics):
            del self.configs[name]
        if log_dirs is not None:
            try:
                self.sizes = wire.log_sizes([(node, await f) for node, f in log_dirs])
            except errors.KafkaError as exc:
                self.sizes = Sizes(note=f"DescribeLogDirs failed: {exc}")

        # 3. Committed offsets and descriptions per coordinator.
        groups: list[Group] = []
        if group_ids:
            unknown = [g for g in group_ids if cluster.get_coordinator(g) is None]
            if unknown:
                batched = versions.get("FindCoordinator", (0, 0))[1] >= 4
                sent += 1 if batched else len(unknown)
            ids = await internals.find_coordinator_ids(admin, sorted(group_ids))
            coordinators: dict[int, list[str]] = defaultdict(list)
            for gid in sorted(group_ids):
                coordinators[ids[gid]].append(gid)
            batched = versions.get("OffsetFetch", (0, 0))[1] >= 8
            fetches = [
                (node, only, send(request, node))
                for node, gids in coordinators.items()
                for only, request in wire.offset_fetch_requests(gids, batched)
            ]
            describes = [
                (gids, send(wire.describe_groups_request(gids), node))
                for node, gids in coordinators.items()
            ]
            described: dict[str, Any] = {}
            failed: dict[str, str] = {}
            for gids, future in describes:
                try:
                    described.update({g.group_id: g for g in (await future).groups})
                except errors.KafkaError as exc:
                    # Lag is what matters; a coordinator that cannot describe
                    # groups still gets their lag shown, state and members blank.
                    facts["describe_groups_error"] = str(exc)
                    failed.update(dict.fromkeys(gids, f"DescribeGroups failed: {exc}"))
            for node, only, future in fetches:
                for group in wire.committed(await future, only):
                    group.coordinator = node
                    group.described = desc = described.get(group.group_id)
                    group.error = group.error or failed.get(group.group_id, "")
                    if desc is not None and desc.error_code and not group.error:
                        group.error = f"DescribeGroups: {errors.for_code(desc.error_code).__name__}"
                    groups.append(group)

        # 4. Timestamps, and the high watermarks the Fetch answers show.
        end = {tp: max(e, self._high(tp)) for tp, e in end.items()}
        sent += await self._read_timestamps(send, topics, groups, start, end)
        end = {tp: max(e, self._high(tp)) for tp, e in end.items()}

        return Collected(
            brokers=brokers,
            controller=getattr(metadata, "controller_id", None),
            cluster_id=getattr(metadata, "cluster_id", None) or "",
            topics=topics,
            start=start,
            end=end,
            groups=groups,
            group_ids=sorted(group_ids),
            facts=facts,
            requests=sent,
            topology=topology,
        )

    async def _read_configs(self, future: Any, names: list[str], replace: bool) -> None:
        try:
            response = await future
        except errors.KafkaError as exc:
            self.configs_error = f"DescribeConfigs failed: {exc}"
            return
        self.configs_error = ""
        if replace:
            self.configs.clear()
        for result in response.results:
            if result.error_code:
                code = errors.for_code(result.error_code).__name__
                self.configs[result.resource_name] = {"error": {"value": code, "source": ""}}
            else:
                self.configs[result.resource_name] = mapping.topic_configs(result)
        for name in names:
            self.configs.setdefault(name, {})

    async def _read_timestamps(
        self, send: Any, topics: dict[str, list[Partition]], groups: list[Group],
        start: dict[TP, int], end: dict[TP, int],
    ) -> int:  # fmt: skip
        """Read the timestamps lag in seconds needs; returns the requests sent.

        Each round sends one Fetch per leader, reading each partition from its
        smallest offset still unknown: the records answer every wanted offset
        up to the last one returned; the rest wait for the next round.
        Committed offsets above ListOffsets' end are fetched too: the high
        watermark in the answer tells whether they are past the log's end or
        only past Tansu's undercounted end.
        """
        leaders = {p.tp: p.leader for parts in topics.values() for p in parts}
        wanted = mapping.needed_offsets(groups, start, end, self.timestamps)
        checking = {}
        for group in groups:
            for tp, offset in group.committed.items():
                if tp in end and offset > end[tp] and self.checked.get((*tp, offset)) != end[tp]:
                    wanted.setdefault(tp, [offset])
                    checking[(*tp, offset)] = tp
        # Keep what earlier collections read while some group still sits there.
        sitting = {(*tp, c) for g in groups for tp, c in g.committed.items()}
        self.timestamps = {k: v for k, v in self.timestamps.items() if k in sitting}
        self.checked = {k: v for k, v in self.checked.items() if k in sitting}
        requests = 0
        answered: set[TP] = set()
        for _ in range(FETCH_ROUNDS):
            wanted = {tp: offs for tp, offs in wanted.items() if offs and leaders.get(tp, -1) >= 0}
            if not wanted:
                break
            by_leader: dict[int, dict[TP, int]] = defaultdict(dict)
            for tp, offs in wanted.items():
                by_leader[leaders[tp]][tp] = offs[0]
            pending = [send(wire.fetch_request(pos), node) for node, pos in by_leader.items()]
            requests += len(pending)
            progress = False
            for future in pending:
                try:
                    response = await future
                except errors.KafkaError:
                    continue  # lag in seconds stays unknown this time; lag is right
                for topic in response.responses:
                    for part in topic.partitions:
                        tp = (topic.topic, part.partition_index)
                        asked = wanted.get(tp)
                        if not asked:
                            continue
                        answered.add(tp)
                        self._note_high(tp, part.high_watermark)
                        if part.error_code:
                            wanted[tp] = []  # out of range, or gone: nothing to read
                            continue
                        found = mapping.record_timestamps(part.records, asked)
                        for offset, ts in found.items():
                            self.timestamps[(*tp, offset)] = ts
                        high = max(end.get(tp, 0), part.high_watermark)
                        rest = [o for o in asked if o not in found and o < high]
                        progress = progress or len(rest) < len(asked)
                        wanted[tp] = rest
            if not progress:
                break
        for key, tp in checking.items():
            if tp in answered:
                self.checked[key] = max(end[tp], self._high(tp))
        return requests

    def _note_high(self, tp: TP, high: int) -> None:
        if high > self._high(tp):
            self.highs[tp] = (self.topic_ids.get(tp[0], ""), high)

    def _high(self, tp: TP) -> int:
        seen = self.highs.get(tp)
        return seen[1] if seen else -1

    def _forget_stale_highs(self, topics: Any) -> None:
        """Drop high watermarks of topics deleted or re-created (a new topic id) since."""
        self.topic_ids = {t.name: str(getattr(t, "topic_id", "") or "") for t in topics}
        self.highs = {tp: s for tp, s in self.highs.items() if self.topic_ids.get(tp[0]) == s[0]}

    # -- mapping ------------------------------------------------------------

    def snapshot(self, c: Collected, api_version: str) -> Snapshot:
        now_ms = int(time.time() * 1000)
        topic_dests = [
            mapping.topic_destination(
                name, parts, c.start, c.end, self.configs.get(name), self.sizes
            )
            for name, parts in sorted(c.topics.items())
        ]
        if self.configs_error:
            for dest in topic_dests:
                dest.extra["configs_error"] = self.configs_error
        groups = [
            mapping.group_destination(g, c.start, c.end, self.timestamps, now_ms)
            for g in sorted(c.groups, key=lambda g: g.group_id)
            if g.committed or g.error
        ]
        destinations: list[Destination] = topic_dests + groups
        partitions = [p for parts in c.topics.values() for p in parts]
        controller = next((b for b in c.brokers if b.node_id == c.controller), None)
        health = Health(
            version="",
            nodes=tuple(
                Node(
                    name=wire.broker_name(b) + (" (controller)" if b is controller else ""),
                    disk_free=self.sizes.disk_free.get(b.node_id),
                )
                for b in c.brokers
            ),
            backlog=sum(g.backlog for g in groups),
            consumers=sum(g.consumers for g in groups),
            # Produced: every topic's end offsets; consumed: every group's commits.
            in_total=sum(t.in_total or 0 for t in topic_dests),
            out_total=sum(g.out_total or 0 for g in groups),
            facts={
                "cluster_id": c.cluster_id,
                "controller": wire.broker_name(controller) if controller else None,
                "api_version": api_version,
                "brokers": len(c.brokers),
                "topics": len(c.topics),
                "partitions": len(partitions),
                "under_replicated": sum(1 for p in partitions if p.under_replicated),
                "offline": sum(1 for p in partitions if p.leader < 0),
                # Listed: groups with committed offsets (or an error); the others
                # (joined but never committed, offsets expired) have no lag to show.
                "groups": len(groups),
                "groups_without_offsets": len(c.group_ids) - len(groups),
                "log_sizes": self.sizes.note or "reported",
                **c.facts,
            },
        )
        return Snapshot(
            health=health,
            destinations=tuple(destinations),
            # Kafka has no exchanges or bindings; an empty Topology tells the
            # collector this was the slow cycle (configs and sizes read again).
            topology=Topology() if c.topology else None,
            requests=c.requests,
        )
