"""Kafka, and Kafka-protocol brokers (Tansu, Redpanda...), through kafka-python.

Talks to: the brokers' Kafka port with one `KafkaAdminClient`, created on the
first `collect()`, reused by the next ones and closed by `close()`. A
collection (`brokers.kafka.monitor`) sends its requests through that client's
connections, each stage's requests at once.

Options:
    bootstrap_servers   "host:port[,host:port...]"
    security_protocol   PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism      PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username, sasl_password
    timeout             seconds allowed for bootstrapping and for each request

One collection costs 1 + B + 2L + 2C requests, with B brokers, L partition
leaders and C group coordinators: Metadata; ListGroups on every broker and
ListOffsets (earliest, latest) per leader, together; then OffsetFetch and
DescribeGroups per coordinator, together. Never one per group, except that a
broker older than Kafka 3.0 answers OffsetFetch one group at a time. Added
when needed: FindCoordinator for groups not seen before (one, batched); Fetch
rounds, one request per leader each, reading the timestamp at committed
offsets for lag in seconds (a timestamp never changes, so each is read once);
and, with `topology=True` or for new topics, DescribeConfigs (one, all topics)
and DescribeLogDirs (per broker, where supported).

Cannot:
    - tell the broker's software version: the protocol does not carry it;
      facts["api_version"] is the Kafka release its API versions match;
    - give rates: topics and groups carry monotonic totals (`in_total`,
      `out_total`) from which the collector derives them;
    - show log sizes on brokers without DescribeLogDirs (Tansu 0.6): the
      topic says "not reported by this broker";
    - describe KIP-848 consumer groups (Kafka 4 `group.protocol=consumer`):
      their lag is right, but state and members may be blank;
    - see lag of a group that has never committed an offset;
    - tell when a group last committed: the protocol keeps no commit times;
    - on Tansu 0.6: show members' client id, host and assignment (its
      DescribeGroups sends them empty), or see groups whose id holds
      characters such as < > " / (its ListGroups returns them percent-encoded).
"""

from __future__ import annotations

import socket
from collections import defaultdict
from typing import TYPE_CHECKING, Any, ClassVar

import kafka.errors as errors
from kafka import KafkaAdminClient

from brokers.base import BrokerError, Message, Published, Snapshot
from brokers.kafka import internals
from brokers.kafka.monitor import Monitor
from brokers.kafka.monitor_wire import DESCRIBE_GROUPS_MAX_VERSION, describe_groups_request

if TYPE_CHECKING:
    from brokers.kafka.browse import Record
    from brokers.kafka.transfer import LogTransfer

__all__ = ["DESCRIBE_GROUPS_MAX_VERSION", "Kafka"]


class Kafka:
    """A Kafka cluster reached through its bootstrap servers."""

    lacks: ClassVar[dict[str, str]] = {
        "tail": "the live tail's reader is in the dashboard (dashboard/kinds/kafka/tail.py), "
        "not in brokers/kafka",
    }

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
            # Clients connect (and check API versions) in their constructor.
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
        self._versions: dict[str, tuple[int, int]] = {}
        self._api_version = ""
        self._monitor = Monitor()

    # -- Adapter ------------------------------------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Cluster health, one destination per topic and per group with committed offsets.

        With `topology`, topic configs and log sizes are read again; otherwise
        the last ones are reused (and read only for topics not seen before).
        """
        try:
            admin = self._admin_client()
            collected = internals.run_on_io_thread(
                admin, self._monitor.gather, admin, self._versions, topology
            )
        except errors.KafkaError as exc:
            # Connections may be half-broken now; start afresh next time.
            self.close()
            raise self._error(exc) from None
        return self._monitor.snapshot(collected, self._api_version)

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except errors.KafkaError:
                pass  # closing a client of a dead broker: nothing left to release
        self._admin = None
        self._monitor = Monitor()

    def client(self, cls: Any, **options: Any) -> Any:
        """A new kafka-python client (`KafkaConsumer`, `KafkaProducer`, `KafkaAdminClient`)
        with this cluster's connection settings; the caller closes it.

        Raises BrokerError when the cluster cannot be reached.
        """
        try:
            return self._build(cls, **options)
        except errors.KafkaTimeoutError:
            raise BrokerError(self._unreachable()) from None
        except errors.KafkaError as exc:
            raise self._error(exc) from None

    def admin(self) -> Any:
        """The shared admin client of this adapter (created on first use); do not close it."""
        return self._admin_client()

    # -- capabilities (brokers.base): sources and targets are topics -------

    def read(self, source: str, limit: int, truncate: int | None = None) -> list[Message]:
        """Browse: the oldest `limit` records, merged across partitions by time (`TopicReader`)."""
        from brokers.kafka.browse import TopicReader

        with TopicReader(self, topic_of(source), body_limit=truncate) as reader:
            page = reader.from_time(0, limit, None, None, limit)
        return [_message(r) for r in page.records]

    def send(
        self, target: str, body: bytes, key: str = "", headers: dict[str, str] | None = None
    ) -> Published:
        """Publish: one record with acks=all (`produce`); `detail` says where it landed."""
        from brokers.kafka.publish import produce

        pairs = [(name, value.encode()) for name, value in (headers or {}).items()]
        got = produce(self, topic_of(target), body, key.encode() if key else None, pairs)
        return Published(
            confirmed=True,
            routed=True,
            detail={"topic": got.topic, "partition": got.partition, "offset": got.offset},
        )

    def open_transfer(self, source: str) -> LogTransfer:
        """Transfers: a `LogTransfer` over the whole topic as it is now, its cursor in memory."""
        from kafka import KafkaConsumer

        from brokers.kafka.transfer import LogTransfer, log_range

        topic = topic_of(source)
        consumer = self.client(KafkaConsumer, group_id=None, enable_auto_commit=False)
        try:
            ranges = log_range(consumer, topic)
        except errors.KafkaError as exc:
            raise self._error(exc) from None
        finally:
            consumer.close()
        return LogTransfer(self, topic, ranges, {}, save=lambda _next: None)

    # -- clients ------------------------------------------------------------

    def _admin_client(self) -> Any:
        if self._admin is None:
            try:
                self._admin = self._build(KafkaAdminClient)
            except errors.KafkaTimeoutError:
                self.close()
                raise BrokerError(self._unreachable()) from None
            except errors.KafkaError as exc:
                raise self._error(exc) from None
            self._versions = {k.name: v for k, v in self._admin.api_versions().items()}
            version = internals.broker_version(self._admin)
            self._api_version = ".".join(str(n) for n in version)
        return self._admin

    def _build(self, cls: Any, **options: Any) -> Any:
        """A kafka-python client that leaves no thread behind when it cannot bootstrap."""
        client = internals.build(cls, **{**self._config, **options})
        # A silent broker would otherwise stall a collection for kafka-python's
        # connect timeout (10 s, doubling to 30 s) when connecting past the bootstrap one.
        internals.set_connect_timeout(client, self.timeout_ms)
        return client

    def _coordinators(self, group_ids: list[str]) -> dict[int, list[str]]:
        """Group ids by the broker that coordinates them (cached by kafka-python)."""
        admin = self._admin_client()
        ids = internals.coordinator_ids(admin, group_ids)
        by_node: dict[int, list[str]] = defaultdict(list)
        for gid, node in ids.items():
            by_node[node].append(gid)
        return by_node

    def _describe_groups(self, coordinators: dict[int, list[str]]) -> dict[str, Any]:
        """State and members of every group, one DescribeGroups per coordinator, sent at once."""
        admin = self._admin_client()

        async def describe() -> dict[str, Any]:
            pending = [
                internals.send(admin, describe_groups_request(gids), node)
                for node, gids in coordinators.items()
            ]
            out: dict[str, Any] = {}
            for future in pending:
                out.update({g.group_id: g for g in (await future).groups})
            return out

        described: dict[str, Any] = internals.run_on_io_thread(admin, describe)
        return described

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


def topic_of(key: str) -> str:
    """The topic of a Destination key ("topic/orders"), or of a bare topic name."""
    return key.removeprefix("topic/")  # a topic name cannot hold "/"


def _message(record: Record) -> Message:
    """A browsed record as a `Message`, with the fields `transfer.as_message` gives."""
    from brokers.kafka.transfer import header_value, key_text

    headers: dict[str, Any] = {}
    for name, raw in record.headers:
        headers.setdefault(name, header_value(raw))
    stamped = record.timestamp > 0
    return Message(
        body=record.value or b"",
        id=f"{record.partition}:{record.offset}",
        exchange=record.topic,
        routing_key=key_text(record.key),
        properties={
            "timestamp": record.timestamp // 1000 if stamped else None,
            "timestamp_ms": record.timestamp,
            "partition": record.partition,
        },
        headers=headers,
        position=record.offset,
        size=record.size,
        truncated=record.truncated,
    )


def _host_port(server: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' (port 9092)."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return server.strip("[]"), 9092
    return host.strip("[]"), int(port)


# mypy checks Kafka against each capability it does not list in `lacks`.
if TYPE_CHECKING:
    from brokers.base import Adapter, Browse, Declared, Publish, Transfers

    _declared: type[Declared] = Kafka
    _monitor: type[Adapter] = Kafka
    _browse: type[Browse] = Kafka
    _publish: type[Publish] = Kafka
    _transfer: type[Transfers] = Kafka
