"""One RabbitMQ collection: the management API's listings, and what their fields mean.

Costs 3 + ceil(queues / 500) requests (overview, nodes, consumers, the queue
listing paged 500 at a time); topology adds vhosts, exchanges and bindings.
`brokers.rabbitmq.adapter` holds the connection; this module, the requests
and the mapping of their answers to the project's dataclasses.
"""

from __future__ import annotations

from typing import Any

from brokers.base import (
    Binding,
    Consumer,
    Destination,
    Exchange,
    Health,
    Node,
    Snapshot,
    Topology,
)
from brokers.rabbitmq.management import ManagementAPI

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


def collect(api: ManagementAPI, topology: bool = False) -> Snapshot:
    """Read health, queues and consumers; with `topology`, also vhosts, exchanges, bindings."""
    before = api.requests_made
    overview = api.get("/api/overview", {"columns": OVERVIEW_COLUMNS})
    nodes = api.get("/api/nodes", {"columns": NODE_COLUMNS})
    # Without statistics, absent message_stats means "unknown", not "idle".
    stats = overview.get("rates_mode", "basic") != "none" and not overview.get("disable_stats")
    consumers = _consumers(api)
    queues = api.paged("/api/queues", QUEUE_COLUMNS)
    # Keyed, because a queue shifted across a page boundary comes twice.
    destinations = {d.key: d for d in (_destination(q, consumers, stats) for q in queues)}
    topo = _topology(api, stats) if topology else None
    return Snapshot(
        health=_health(overview, nodes),
        destinations=tuple(destinations.values()),
        topology=topo,
        requests=api.requests_made - before,
    )


def _consumers(api: ManagementAPI) -> dict[tuple[str, str], list[Consumer]]:
    grouped: dict[tuple[str, str], list[Consumer]] = {}
    for c in api.get("/api/consumers", {"columns": CONSUMER_COLUMNS}):
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


def _topology(api: ManagementAPI, stats: bool) -> Topology:
    vhosts = api.paged("/api/vhosts", "name")
    exchanges = api.paged("/api/exchanges", EXCHANGE_COLUMNS)
    bindings = api.get("/api/bindings", {"columns": BINDING_COLUMNS})
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
        removed_total=_removed_total(q, stats),
        arguments=arguments,
        policy=q.get("policy") or "",
        effective_policy=policy,
        consumer_details=tuple(consumers.get((vhost, name), ())),
        extra={
            "ack_rate": _rate(q, "ack_details", idle),
            "redeliver_rate": _rate(q, "redeliver_details", idle),
            "messages": q.get("messages"),
            "message_bytes": q.get("message_bytes"),
            # What max-length-bytes counts: the bodies of ready messages.
            "message_bytes_ready": q.get("message_bytes_ready"),
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


def _removed_total(q: dict[str, Any], stats: bool) -> int | None:
    """Acknowledged plus delivered or got without acknowledgement, since the queue began."""
    if q.get("type") == "stream":
        return None  # a stream keeps what it delivers
    ms = q.get("message_stats")
    if not ms:
        return 0 if stats else None
    return sum(int(ms.get(k) or 0) for k in ("ack", "deliver_no_ack", "get_no_ack"))


def _rate(obj: dict[str, Any], details: str, missing: float | None) -> float | None:
    """`obj.message_stats.<details>.rate`, or `missing` when the broker gave none."""
    ms = obj.get("message_stats")
    if not ms:
        return missing
    d = ms.get(details)
    return float(d["rate"]) if d and "rate" in d else missing
