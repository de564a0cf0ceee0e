"""RabbitMQ, through the management plugin's HTTP API.

Talks to: the management API (`/api/...`, port 15672 by default) through one
`requests.Session` (`brokers.rabbitmq.management`, which also turns every failure into
a `BrokerError`). Monitoring needs nothing else; AMQP (pika) is reserved for
message browsing, publishing and moving (`brokers.rabbitmq.amqp`), imported
only when `transfer`, `browse` or `publish` is first called.

Options:
    management_url  http(s)://[user:password@]host:15672[/path-prefix]
    amqp_url        amqp(s)://user:password@host:5672/vhost; its credentials are
                    the fallback for the management API
    username, password
                    override the credentials in either URL; default guest/guest
    timeout         seconds allowed for each HTTP request (connect and read)

One collection costs 3 + ceil(queues / 500) requests: overview, nodes,
consumers, and the queue listing paged 500 at a time in the broker's default
order (vhost, name), so that it computes statistics for one page only.
Topology adds vhosts, exchanges (both paged) and bindings (not pageable).

Cannot:
    - see anything fresher than the management statistics interval (5 s by
      default); rates are the broker's, averaged over that interval;
    - report rates when the broker runs with `rates_mode = none` or
      `disable_stats`: rates are then None;
    - count dead letters per queue (RabbitMQ keeps only node-wide counters);
    - list atomically: a queue created or deleted while the pages are read can
      shift another queue across a page boundary and out of one snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from brokers.base import (
    Binding,
    BrokerError,
    Consumer,
    Destination,
    Exchange,
    Health,
    Message,
    Node,
    Published,
    Snapshot,
    Topology,
)
from brokers.rabbitmq import keys
from brokers.rabbitmq.management import ManagementAPI

if TYPE_CHECKING:
    from brokers.rabbitmq.amqp import AmqpTransfer

# Every listing asks only for what it maps: less JSON to build, send and parse.
OVERVIEW_COLUMNS = (
    "rabbitmq_version,management_version,cluster_name,node,rates_mode,disable_stats,"
    "statistics_db_event_queue,object_totals,queue_totals,message_stats"
)
NODE_COLUMNS = "name,running,mem_used,mem_limit,mem_alarm,disk_free,disk_free_limit,disk_free_alarm"
QUEUE_COLUMNS = (
    "name,vhost,type,state,node,durable,auto_delete,exclusive,arguments,policy,"
    "effective_policy_definition,messages,messages_ready,messages_unacknowledged,"
    "message_bytes,memory,consumers,consumer_capacity,consumer_utilisation,idle_since,"
    "message_stats.publish,message_stats.publish_details,message_stats.deliver_get,"
    "message_stats.deliver_get_details,message_stats.ack_details,message_stats.redeliver_details"
)
CONSUMER_COLUMNS = (
    "consumer_tag,queue.name,queue.vhost,prefetch_count,ack_required,channel_details.name,"
    "channel_details.connection_name,channel_details.peer_host,channel_details.peer_port"
)
EXCHANGE_COLUMNS = (
    "name,vhost,type,durable,auto_delete,internal,arguments,policy,"
    "message_stats.publish_in_details,message_stats.publish_out_details"
)
BINDING_COLUMNS = "source,vhost,destination,destination_type,routing_key,arguments"

# Dead-letter and length settings a queue argument `x-<key>` and a policy can
# both set. RabbitMQ then takes the argument for names and the lower of the two
# for numeric limits (`res_arg` / `res_min` in rabbit_amqqueue_process).
ARGUMENT_WINS = (
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "overflow",
)
LOWER_WINS = ("message-ttl", "max-length", "max-length-bytes", "delivery-limit")


class RabbitMQ:
    """One RabbitMQ cluster, read through its management API."""

    lacks: ClassVar[dict[str, str]] = {
        "tail": "not built: no live reader of a RabbitMQ queue or stream exists, "
        "in brokers/rabbitmq or in the dashboard",
    }

    def __init__(
        self,
        management_url: str,
        amqp_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.amqp_url = amqp_url
        self._credentials = (username, password)
        self.api = ManagementAPI(management_url, amqp_url, username, password, timeout)

    def __repr__(self) -> str:
        return f"RabbitMQ({self.api.base_url!r}, username={self.api.username!r})"

    def close(self) -> None:
        self.api.close()

    # -- messages (AMQP: pika is imported here only, on first use) -----------

    def transfer(self, vhost: str, queue: str, prefetch: int = 1000) -> AmqpTransfer:
        """A session moving messages out of `queue`: read, send confirmed, then settle."""
        from brokers.rabbitmq.amqp import AmqpTransfer

        return AmqpTransfer(self._amqp(), vhost, queue, prefetch=prefetch)

    def browse(
        self,
        vhost: str,
        queue: str,
        queue_type: str,
        count: int,
        offset: int | None = None,
        truncate: int | None = 65536,
    ) -> list[Message]:
        """Up to `count` messages of `queue`, left in place (a stream from `offset`)."""
        from brokers.rabbitmq import amqp

        return amqp.browse(
            self._amqp(), self.api, vhost, queue, queue_type, count, offset, truncate
        )

    def publish(
        self,
        vhost: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: dict[str, Any],
        headers: dict[str, Any],
    ) -> Published:
        """Publish one message, mandatory and confirmed."""
        from brokers.rabbitmq import amqp

        return amqp.publish(self._amqp(), vhost, exchange, routing_key, body, properties, headers)

    def replay_target(self, message: Message, mode: str = "auto") -> tuple[str, str] | None:
        """Where a dead letter came from: (exchange, routing key), from its x-death headers."""
        from brokers.rabbitmq.amqp import replay_target

        return replay_target(message, mode)

    # -- capabilities (brokers.base): sources and targets are "<vhost>/<name>" --

    def read(self, source: str, limit: int, truncate: int | None = None) -> list[Message]:
        """Browse: `browse` on the queue the key `source` names."""
        vhost, queue, queue_type = keys.queue(self.api, source)
        return self.browse(vhost, queue, queue_type, limit, truncate=truncate)

    def send(
        self, target: str, body: bytes, key: str = "", headers: dict[str, str] | None = None
    ) -> Published:
        """Publish: `publish` to the exchange `target` ("<vhost>/<exchange>") with routing key `key`."""
        vhost, exchange = keys.locate(self.api, target, "exchange", empty_name=True)
        return self.publish(vhost, exchange, key, body, {}, dict(headers or {}))

    def open_transfer(self, source: str) -> AmqpTransfer:
        """Transfers: `transfer` on the queue the key `source` names."""
        vhost, queue, _ = keys.queue(self.api, source)
        return self.transfer(vhost, queue)

    def _amqp(self) -> str:
        """amqp_url with the username and password options, when given, as its credentials."""
        if not self.amqp_url:
            raise BrokerError("this broker has no amqp_url configured", retryable=False)
        username, password = self._credentials
        if username is None and password is None:
            return self.amqp_url
        parts = urlsplit(self.amqp_url)
        user = username if username is not None else unquote(parts.username or "guest")
        secret = password if password is not None else unquote(parts.password or "guest")
        hostport = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{hostport}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- collection ---------------------------------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Read health, queues and consumers; with `topology`, also vhosts, exchanges, bindings."""
        before = self.api.requests_made
        overview = self.api.get("/api/overview", {"columns": OVERVIEW_COLUMNS})
        nodes = self.api.get("/api/nodes", {"columns": NODE_COLUMNS})
        # Without statistics, absent message_stats means "unknown", not "idle".
        stats = overview.get("rates_mode", "basic") != "none" and not overview.get("disable_stats")
        consumers = self._consumers()
        queues = self.api.paged("/api/queues", QUEUE_COLUMNS)
        # Keyed, because a queue shifted across a page boundary comes twice.
        destinations = {d.key: d for d in (_destination(q, consumers, stats) for q in queues)}
        topo = self._topology(stats) if topology else None
        return Snapshot(
            health=_health(overview, nodes),
            destinations=tuple(destinations.values()),
            topology=topo,
            requests=self.api.requests_made - before,
        )

    def _consumers(self) -> dict[tuple[str, str], list[Consumer]]:
        grouped: dict[tuple[str, str], list[Consumer]] = {}
        for c in self.api.get("/api/consumers", {"columns": CONSUMER_COLUMNS}):
            queue = c.get("queue") or {}
            channel = c.get("channel_details") or {}
            peer = channel.get("peer_host")
            client = channel.get("connection_name") or (
                f"{peer}:{channel.get('peer_port')}" if peer else ""
            )
            consumer = Consumer(
                tag=c.get("consumer_tag", ""),
                channel=channel.get("name") or "",
                prefetch=c.get("prefetch_count"),
                ack_required=bool(c.get("ack_required", True)),
                client=client,
            )
            grouped.setdefault((queue.get("vhost", ""), queue.get("name", "")), []).append(consumer)
        return grouped

    def _topology(self, stats: bool) -> Topology:
        vhosts = self.api.paged("/api/vhosts", "name")
        exchanges = self.api.paged("/api/exchanges", EXCHANGE_COLUMNS)
        bindings = self.api.get("/api/bindings", {"columns": BINDING_COLUMNS})
        idle = 0.0 if stats else None
        return Topology(
            vhosts=tuple(v["name"] for v in vhosts),
            exchanges=tuple(
                Exchange(
                    name=e["name"],
                    type=e.get("type", ""),
                    vhost=e.get("vhost", ""),
                    durable=bool(e.get("durable", True)),
                    auto_delete=bool(e.get("auto_delete", False)),
                    internal=bool(e.get("internal", False)),
                    arguments=e.get("arguments") or {},
                    policy=e.get("policy") or "",
                    in_rate=_rate(e, "publish_in_details", idle),
                    out_rate=_rate(e, "publish_out_details", idle),
                )
                for e in exchanges
            ),
            bindings=tuple(
                Binding(
                    source=b.get("source", ""),
                    destination=b.get("destination", ""),
                    destination_type=b.get("destination_type", ""),
                    routing_key=b.get("routing_key", ""),
                    arguments=b.get("arguments") or {},
                    vhost=b.get("vhost", ""),
                )
                for b in bindings
            ),
        )


# -- mapping ----------------------------------------------------------------


def _destination(
    q: dict[str, Any], consumers: dict[tuple[str, str], list[Consumer]], stats: bool
) -> Destination:
    name, vhost = q["name"], q["vhost"]
    qtype = q.get("type", "classic")
    ms = q.get("message_stats")
    # No message_stats with statistics on: the queue has had no traffic.
    idle = 0.0 if stats else None
    arguments = q.get("arguments") or {}
    policy = q.get("effective_policy_definition") or {}
    capacity = q.get("consumer_capacity", q.get("consumer_utilisation"))
    return Destination(
        kind="stream" if qtype == "stream" else "queue",
        name=name,
        key=f"{vhost}/{name}",
        vhost=vhost,
        type=qtype,
        state=q.get("state", ""),
        # For a stream this is its stored length: readers track their own offsets.
        backlog=q.get("messages_ready") or 0,
        in_flight=q.get("messages_unacknowledged") or 0,
        consumers=q.get("consumers") or 0,
        consumer_capacity=None if capacity is None else float(capacity),
        in_rate=_rate(q, "publish_details", idle),
        out_rate=_rate(q, "deliver_get_details", idle),
        in_total=ms.get("publish") if ms else None,
        out_total=ms.get("deliver_get") if ms else None,
        arguments=arguments,
        policy=q.get("policy") or "",
        effective_policy=policy,
        consumer_details=tuple(consumers.get((vhost, name), ())),
        extra={
            "ack_rate": _rate(q, "ack_details", idle),
            "redeliver_rate": _rate(q, "redeliver_details", idle),
            "messages": q.get("messages"),
            "message_bytes": q.get("message_bytes"),
            "memory": q.get("memory"),
            "node": q.get("node"),
            "durable": q.get("durable"),
            "auto_delete": q.get("auto_delete"),
            "exclusive": q.get("exclusive"),
            "idle_since": q.get("idle_since"),
            "limits": limits(arguments, policy) if arguments or policy else {},
        },
    )


def limits(arguments: dict[str, Any], policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dead-letter and length settings in force, each as {"value", "source"}.

    `source` is "argument" (an x- queue argument) or "policy" (the effective
    policy, operator policy included). Settings that are not set are absent.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in ARGUMENT_WINS + LOWER_WINS:
        arg, pol = arguments.get("x-" + key), policy.get(key)
        if arg is None and pol is None:
            continue
        use_policy = arg is None or (
            key in LOWER_WINS
            and isinstance(pol, int | float)
            and isinstance(arg, int | float)
            and pol < arg
        )
        out[key] = (
            {"value": pol, "source": "policy"}
            if use_policy
            else {"value": arg, "source": "argument"}
        )
    return out


def _health(overview: dict[str, Any], nodes: list[dict[str, Any]]) -> Health:
    totals = overview.get("queue_totals") or {}
    objects = overview.get("object_totals") or {}
    ms = overview.get("message_stats") or {}
    return Health(
        version=overview.get("rabbitmq_version", ""),
        nodes=tuple(
            Node(
                name=n["name"],
                running=bool(n.get("running", False)),
                mem_used=n.get("mem_used"),
                mem_limit=n.get("mem_limit"),
                mem_alarm=bool(n.get("mem_alarm", False)),
                disk_free=n.get("disk_free"),
                disk_free_limit=n.get("disk_free_limit"),
                disk_alarm=bool(n.get("disk_free_alarm", False)),
            )
            for n in nodes
        ),
        backlog=totals.get("messages_ready") or 0,
        in_flight=totals.get("messages_unacknowledged") or 0,
        consumers=objects.get("consumers") or 0,
        in_rate=(ms.get("publish_details") or {}).get("rate") or 0.0,
        out_rate=(ms.get("deliver_get_details") or {}).get("rate") or 0.0,
        facts={
            "cluster_name": overview.get("cluster_name", ""),
            "node": overview.get("node", ""),
            "management_version": overview.get("management_version", ""),
            "rates_mode": overview.get("rates_mode", ""),
            "disable_stats": bool(overview.get("disable_stats", False)),
            # Events the statistics database has yet to process; a growing
            # number means every figure here is getting stale.
            "statistics_db_event_queue": overview.get("statistics_db_event_queue"),
            "object_totals": objects,
        },
    )


def _rate(obj: dict[str, Any], details: str, missing: float | None) -> float | None:
    """`obj.message_stats.<details>.rate`, or `missing` when the broker gave none."""
    ms = obj.get("message_stats")
    if not ms:
        return missing
    d = ms.get(details)
    return float(d["rate"]) if d and "rate" in d else missing


# mypy checks RabbitMQ against each capability it does not list in `lacks`.
if TYPE_CHECKING:
    from brokers.base import Adapter, Browse, Declared, Publish, Transfers

    _declared: type[Declared] = RabbitMQ
    _monitor: type[Adapter] = RabbitMQ
    _browse: type[Browse] = RabbitMQ
    _publish: type[Publish] = RabbitMQ
    _transfer: type[Transfers] = RabbitMQ
