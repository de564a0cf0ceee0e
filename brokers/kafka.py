"""Kafka, and Kafka-protocol brokers (Tansu, Redpanda...), through kafka-python.

Talks to: the brokers' Kafka port with one `KafkaAdminClient` (cluster, topic
and group metadata, committed offsets) and one `KafkaConsumer` without a group
(first and last offsets of every partition). Both are created on the first
`collect()`, reused by the next ones and closed by `close()`.

Options:
    bootstrap_servers   "host:port[,host:port...]"
    security_protocol   PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism      PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username, sasl_password
    timeout             seconds allowed for bootstrapping and for each request

One collection costs about 2 + B + 2L + 2C requests, with B brokers, L
partition leaders and C group coordinators: DescribeCluster and Metadata,
ListGroups on every broker, ListOffsets (earliest, latest) per leader,
OffsetFetch and DescribeGroups per coordinator. A broker older than Kafka 3.0
answers OffsetFetch one group at a time, so that term becomes the group count.

Cannot:
    - tell the broker's software version: the protocol does not carry it;
      facts["api_version"] is the Kafka release its API versions match;
    - give rates: topics and groups carry monotonic totals (`in_total`,
      `out_total`) from which the collector derives them;
    - show log sizes (DescribeLogDirs is not read);
    - describe KIP-848 consumer groups (Kafka 4 `group.protocol=consumer`):
      their lag is right, but state and members may be blank;
    - see lag of a group that has never committed an offset.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from typing import Any

import kafka.errors as errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.net.selector import NetworkSelector
from kafka.protocol.admin import DescribeGroupsRequest

from brokers.base import BrokerError, Consumer, Destination, Health, Node, Snapshot

# Besides its public API, this module uses a few kafka-python 3.0 internals,
# each where no public call does the job: the admin client's `_manager.run` and
# `_manager.send` (DescribeGroups v2), `_find_coordinator_ids` (cached group
# coordinators) and `_manager.broker_version` (the API level the broker
# matches); both clients' `_manager.config` (the connect timeout); and
# `KafkaNetClient` with `NetworkSelector`, given through the documented
# `kafka_client` option (to stop the IO thread of a client that failed).

# DescribeGroups v3+ carries `authorized_operations`; kafka-python 3.0 fails on
# the value Tansu sends there (all 32 bits set, even unasked). Versions 0 to 2
# carry the same state and members without it, and Kafka 0.9 to 4.x answer them.
DESCRIBE_GROUPS_MAX_VERSION = 2


class Kafka:
    """A Kafka cluster reached through its bootstrap servers."""

    def __init__(
        self,
        bootstrap_servers: str,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        self.timeout = timeout
        self.timeout_ms = max(1000, int(timeout * 1000))
        self.sasl_username = sasl_username
        self._config: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": "sluice",
            "security_protocol": security_protocol,
            # Both clients connect (and check API versions) in their constructor.
            "bootstrap_timeout_ms": self.timeout_ms,
            "request_timeout_ms": self.timeout_ms,
            # Retry a refused connection often enough to succeed within the timeout.
            "reconnect_backoff_max_ms": 1000,
        }
        if sasl_mechanism:
            self._config.update(
                sasl_mechanism=sasl_mechanism,
                sasl_plain_username=sasl_username,
                sasl_plain_password=sasl_password,
            )
        self._admin: Any = None
        self._consumer: Any = None
        self._offset_fetch_batched = True
        self._api_version = ""
        # What earlier collections looked up, to count the lookups a new one adds.
        self._known_topics: set[str] = set()
        self._known_groups: set[str] = set()

    # -- Adapter ------------------------------------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Cluster health, one destination per topic and per group with committed offsets."""
        try:
            return self._collect()
        except errors.KafkaError as exc:
            # Connections may be half-broken now; start afresh next time.
            self.close()
            raise self._error(exc) from None

    def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except errors.KafkaError:
                    pass  # closing a client of a dead broker: nothing left to release
        self._admin = self._consumer = None
        self._known_topics.clear()
        self._known_groups.clear()

    # -- collection ---------------------------------------------------------

    def _collect(self) -> Snapshot:
        admin, consumer = self._clients()
        cluster = admin.describe_cluster()
        metadata = admin.describe_topics()
        requests = 2
        brokers = sorted(cluster["brokers"], key=lambda b: b["broker_id"])
        topics = sorted((t for t in metadata if not _internal(t)), key=lambda t: t["name"])

        # Partitions without a leader cannot answer ListOffsets; asking would
        # only wait out the timeout.
        online = [
            TopicPartition(t["name"], p["partition_index"])
            for t in topics
            for p in t["partitions"]
            if p["leader_id"] >= 0
        ]
        end: dict[Any, int] = {}
        start: dict[Any, int] = {}
        if online:
            # One ListOffsets per partition leader each, sent concurrently.
            end = consumer.end_offsets(online, timeout_ms=self.timeout_ms)
            start = consumer.beginning_offsets(online, timeout_ms=self.timeout_ms)
            leaders = {p["leader_id"] for t in topics for p in t["partitions"]}
            requests += 2 * len(leaders - {-1})
            names = {t["name"] for t in topics}
            if names - self._known_topics:
                requests += 1  # the consumer fetched metadata for the new topics
            self._known_topics = names

        listed = admin.list_groups()
        requests += len(brokers)
        # Share groups (KIP-932) have no committed offsets to fetch.
        group_ids = sorted({g["group_id"] for g in listed if g.get("group_type") != "share"})
        committed: dict[str, dict[Any, Any]] = {}
        described: dict[str, Any] = {}
        facts_extra: dict[str, Any] = {}
        if group_ids:
            if set(group_ids) - self._known_groups:
                requests += 1  # FindCoordinator, batched; kafka-python caches the answer
            self._known_groups = set(group_ids)
            committed = admin.list_group_offsets(group_ids)
            coordinators = self._coordinators(group_ids)
            per_call = len(coordinators) if self._offset_fetch_batched else len(group_ids)
            requests += per_call + len(coordinators)
            try:
                described = self._describe_groups(coordinators)
            except errors.KafkaError as exc:
                # Lag is what matters; a broker that cannot describe groups
                # still gets its lag shown, with state and members blank.
                facts_extra["describe_groups_error"] = str(exc)

        topic_dests = [_topic(t, start, end) for t in topics]
        groups = [
            _group(gid, offsets, end, described.get(gid))
            for gid, offsets in sorted(committed.items())
            if offsets
        ]
        destinations = topic_dests + groups

        partitions = [p for t in topics for p in t["partitions"]]
        health = Health(
            version="",
            nodes=tuple(
                Node(name=f"broker {b['broker_id']} @ {b['host']}:{b['port']}") for b in brokers
            ),
            backlog=sum(g.backlog for g in groups),
            consumers=sum(len(d.members) for d in described.values() if d.error_code == 0),
            # Produced: every topic's end offsets; consumed: every group's commits.
            in_total=sum(t.in_total or 0 for t in topic_dests),
            out_total=sum(g.out_total or 0 for g in groups),
            facts={
                "cluster_id": cluster.get("cluster_id") or "",
                "controller": cluster.get("controller_id"),
                "api_version": self._api_version,
                "brokers": len(brokers),
                "topics": len(topics),
                "partitions": len(partitions),
                "under_replicated": sum(1 for p in partitions if _under_replicated(p)),
                "offline": sum(1 for p in partitions if p["leader_id"] < 0),
                "groups": len(group_ids),
                **facts_extra,
            },
        )
        return Snapshot(health=health, destinations=tuple(destinations), requests=requests)

    def _clients(self) -> tuple[Any, Any]:
        try:
            if self._admin is None:
                self._admin = self._build(KafkaAdminClient)
                versions = {k.name: v for k, v in self._admin.api_versions().items()}
                # OffsetFetch v8 (Kafka 3.0, KIP-709) takes many groups at once.
                self._offset_fetch_batched = versions.get("OffsetFetch", (0, 0))[1] >= 8
                version = self._admin._manager.broker_version or ()
                self._api_version = ".".join(str(n) for n in version)
            if self._consumer is None:
                self._consumer = self._build(
                    KafkaConsumer,
                    group_id=None,
                    enable_auto_commit=False,
                    allow_auto_create_topics=False,
                    fetch_max_wait_ms=100,
                )
        except errors.KafkaTimeoutError:
            self.close()
            raise BrokerError(self._unreachable()) from None
        return self._admin, self._consumer

    def _build(self, cls: Any, **options: Any) -> Any:
        """A kafka-python client that leaves no thread behind when it cannot bootstrap."""
        selectors: list[Any] = []

        def network_client(**configs: Any) -> Any:
            # The constructors start an IO thread, then bootstrap, and keep the
            # thread running when bootstrapping fails: a collector retrying a
            # dead broker would gain one thread per attempt. Holding the
            # selector lets us stop it.
            selector = NetworkSelector(**configs)
            selectors.append(selector)
            return KafkaNetClient(net=selector, **configs)

        try:
            client = cls(kafka_client=network_client, **self._config, **options)
        except errors.KafkaError:
            for selector in selectors:
                selector.close()
            raise
        # Neither constructor takes the connect timeout (10 s, doubling to
        # 30 s), which bounds connecting to every broker after the bootstrap
        # one: a silent broker would stall a collection that long.
        client._manager.config.update(
            socket_connection_setup_timeout_ms=self.timeout_ms,
            socket_connection_setup_timeout_max_ms=self.timeout_ms,
        )
        return client

    def _coordinators(self, group_ids: list[str]) -> dict[int, list[str]]:
        """Group ids by the broker that coordinates them (cached by kafka-python)."""
        admin = self._admin
        ids = admin._manager.run(admin._find_coordinator_ids, group_ids)
        by_node: dict[int, list[str]] = defaultdict(list)
        for gid, node in ids.items():
            by_node[node].append(gid)
        return by_node

    def _describe_groups(self, coordinators: dict[int, list[str]]) -> dict[str, Any]:
        """State and members of every group, one DescribeGroups per coordinator."""
        # kafka-python's public describe_groups() always asks for v3+ (see
        # DESCRIBE_GROUPS_MAX_VERSION), so send the request through the admin
        # client's connection manager.
        manager = self._admin._manager
        out: dict[str, Any] = {}
        for node, gids in coordinators.items():
            request = DescribeGroupsRequest(groups=gids, max_version=DESCRIBE_GROUPS_MAX_VERSION)
            response = manager.run(manager.send, request, node)
            out.update({g.group_id: g for g in response.groups})
        return out

    # -- errors -------------------------------------------------------------

    def _error(self, exc: errors.KafkaError) -> BrokerError:
        where = ",".join(self.servers)
        if isinstance(
            exc, (errors.SaslAuthenticationFailedError, errors.UnsupportedSaslMechanismError)
        ):
            return BrokerError(
                f"{where}: authentication failed for user {self.sasl_username!r}", retryable=False
            )
        if isinstance(exc, errors.AuthorizationError):
            return BrokerError(f"{where}: not authorized: {exc}", retryable=False)
        if isinstance(exc, errors.KafkaConfigurationError):
            return BrokerError(f"bad Kafka settings: {exc}", retryable=False)
        if isinstance(exc, (errors.KafkaTimeoutError, errors.RequestTimedOutError)):
            return BrokerError(f"{where}: no answer within {self.timeout:g} s")
        if isinstance(exc, errors.KafkaConnectionError):
            return BrokerError(f"lost connection to {where}: {exc}")
        return BrokerError(f"{where}: {exc}", retryable=exc.retriable)

    def _unreachable(self) -> str:
        """Why bootstrapping failed, found by a plain TCP connect to each server.

        kafka-python only says it could not bootstrap; the operator needs to
        know whether the port is closed, the host unknown or the path silent.
        """
        reasons = []
        for server in self.servers:
            host, port = _host_port(server)
            try:
                with socket.create_connection((host, port), timeout=min(self.timeout, 2.0)):
                    pass
            except ConnectionRefusedError:
                reasons.append(f"{server}: connection refused")
            except socket.gaierror:
                reasons.append(f"{server}: unknown host")
            except TimeoutError:
                reasons.append(f"{server}: no answer (timed out)")
            except OSError as exc:
                reasons.append(f"{server}: {exc.strerror or exc}")
            else:
                return (
                    f"{server} accepts connections but gave no Kafka answer within "
                    f"{self.timeout:g} s (wrong port, or TLS/SASL settings?)"
                )
        return "cannot reach " + "; ".join(reasons)


# -- mapping ------------------------------------------------------------------


def _internal(topic: dict[str, Any]) -> bool:
    # `__consumer_offsets`, `__transaction_state`, and by convention any `__` topic.
    return bool(topic.get("is_internal")) or topic["name"].startswith("__")


def _under_replicated(partition: dict[str, Any]) -> bool:
    return len(partition.get("isr_nodes") or ()) < len(partition.get("replica_nodes") or ())


def _topic(t: dict[str, Any], start: dict[Any, int], end: dict[Any, int]) -> Destination:
    name = t["name"]
    parts = t["partitions"]
    tps = [TopicPartition(name, p["partition_index"]) for p in parts]
    known = [tp for tp in tps if tp in end and tp in start]
    return Destination(
        kind="topic",
        key=f"topic/{name}",
        name=name,
        # Topics keep messages for any number of readers: backlog is the groups' lag.
        backlog=0,
        # The sum of end offsets only grows: its change is the produce rate.
        in_total=sum(end[tp] for tp in known),
        extra={
            "partitions": len(parts),
            "replication_factor": max((len(p["replica_nodes"]) for p in parts), default=0),
            "messages": sum(end[tp] - start[tp] for tp in known),
            "under_replicated": sum(1 for p in parts if _under_replicated(p)),
            "offline": sum(1 for p in parts if p["leader_id"] < 0),
        },
    )


def _group(gid: str, offsets: dict[Any, Any], end: dict[Any, int], desc: Any) -> Destination:
    rows = []
    for tp in sorted(offsets, key=lambda tp: (tp.topic, tp.partition)):
        committed = offsets[tp].offset
        # -1: no commit on this partition; no end: topic gone or partition offline.
        if committed < 0 or tp not in end:
            continue
        rows.append([tp.topic, tp.partition, committed, end[tp], max(0, end[tp] - committed)])
    per_topic: dict[str, int] = defaultdict(int)
    for topic, _, _, _, lag in rows:
        per_topic[topic] += lag
    lag = sum(per_topic.values())
    ok = desc is not None and desc.error_code == 0
    members = desc.members if ok else []
    return Destination(
        kind="group",
        key=f"group/{gid}",
        name=gid,
        state=desc.group_state if ok else "",
        backlog=lag,
        lag=lag,
        consumers=len(members),
        # The changes of these sums are the produce and commit rates of what
        # this group reads.
        in_total=sum(r[3] for r in rows),
        out_total=sum(r[2] for r in rows),
        consumer_details=tuple(
            Consumer(tag=m.member_id, channel=m.client_host, client=m.client_id) for m in members
        ),
        extra={"topics": dict(per_topic), "partitions": rows},
    )


def _host_port(server: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' (port 9092)."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return server.strip("[]"), 9092
    return host.strip("[]"), int(port)
