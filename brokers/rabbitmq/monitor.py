"""One RabbitMQ collection, from the management API alone or with the Prometheus plugin.

`collect`: 3 + ceil(queues / 500) requests (overview, nodes, consumers, the queue
listing paged 500 at a time); topology adds vhosts, exchanges and bindings.

`collect_prometheus`: overview, nodes and one GET of the plugin's detailed endpoint
for every count; what only the management API knows (type, arguments, policies,
consumer details) is read on the slow cycle (`topology=True`) into a `Settings`
cache, and for a queue the cache does not know yet, one GET per queue (or one
light listing when many are new).

`brokers.rabbitmq.adapter` holds the connections and picks the path; this module,
the requests and the mapping of their answers to the project's dataclasses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
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
from brokers.rabbitmq import prometheus
from brokers.rabbitmq.management import ManagementAPI, quote_path

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
# What only the management API gives of a queue: no statistics, so cheap to list.
SETTINGS_COLUMNS = (
    "name,vhost,type,state,node,durable,auto_delete,exclusive,arguments,policy,"
    "effective_policy_definition"
)
# The broker's own rates of a queue, which the first reading of the plugin takes from the
# listing: it has no counter reading before it to take them from.
SEED_COLUMNS = (
    "message_stats.publish_details,message_stats.deliver_get_details,"
    "message_stats.ack_details,message_stats.redeliver_details"
)
# More queues than this unknown to the cache: one listing instead of a GET each.
LOOKUPS = 20
# Seconds a queue the management API said was gone is not asked about again.
MISSING_FOR = 30.0

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


@dataclass
class Settings:
    """What the management API alone says of each queue, from the last slow cycle."""

    queues: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    consumers: dict[tuple[str, str], list[Consumer]] = field(default_factory=dict)
    read_at: float | None = None  # time.time() of the last full read
    every: float | None = None  # seconds between the last two full reads
    # Queues the plugin still showed but the management API did not know, and when:
    # a deleted queue's metrics linger a few seconds, and are not asked about again.
    missing: dict[tuple[str, str], float] = field(default_factory=dict)
    # The plugin's `prometheus.SIZES` of each queue (keyed as it writes them), from the
    # last reading that asked for them.
    sizes: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    def fill(self, queues: list[dict[str, Any]], consumers: dict[Any, list[Consumer]]) -> None:
        now = time.time()
        if self.read_at is not None:
            self.every = now - self.read_at
        self.queues = {(q["vhost"], q["name"]): q for q in queues}
        self.consumers = consumers
        self.read_at = now
        self.missing = {}

    def counts_bytes(self) -> bool:
        """Whether some queue has a max-length-bytes in force, whose nearness needs fresh bytes."""
        return any(
            "x-max-length-bytes" in (q.get("arguments") or {})
            or "max-length-bytes" in (q.get("effective_policy_definition") or {})
            for q in self.queues.values()
        )

    def name_of(self, vhost: str, written: str) -> str | None:
        """The queue's real name, for a name as the plugin wrote it (raw or escaped)."""
        if (vhost, written) in self.queues:
            return written
        unescaped = prometheus.unescape(written)
        return unescaped if (vhost, unescaped) in self.queues else None


def collect(
    api: ManagementAPI,
    topology: bool = False,
    settings: Settings | None = None,
    totals: bool = True,
) -> Snapshot:
    """Read health, queues and consumers; with `topology`, also vhosts, exchanges, bindings.

    `settings`, when given, is refilled from the listing. Without `totals`, the
    counters are None (the reading before was from another source).
    """
    before = api.requests_made
    overview = api.get("/api/overview", {"columns": OVERVIEW_COLUMNS})
    nodes = api.get("/api/nodes", {"columns": NODE_COLUMNS})
    # Without statistics, absent message_stats means "unknown", not "idle".
    stats = overview.get("rates_mode", "basic") != "none" and not overview.get("disable_stats")
    consumers = _consumers(api)
    queues = api.paged("/api/queues", QUEUE_COLUMNS)
    if settings is not None:
        settings.fill(queues, consumers)
    # Keyed, because a queue shifted across a page boundary comes twice.
    destinations = {d.key: d for d in (_destination(q, consumers, stats) for q in queues)}
    if not totals:
        destinations = {k: _without_totals(d) for k, d in destinations.items()}
    topo = _topology(api, stats) if topology else None
    return Snapshot(
        health=_health(overview, nodes),
        destinations=tuple(destinations.values()),
        topology=topo,
        requests=api.requests_made - before,
    )


def collect_prometheus(
    api: ManagementAPI,
    endpoint: prometheus.PrometheusEndpoint,
    settings: Settings,
    counters: prometheus.ChannelTotals,
    topology: bool = False,
    first: bool = False,
) -> Snapshot:
    """The counts from the plugin's detailed endpoint, the rest from the management API.

    Raises `prometheus.Unavailable` before asking the management API anything when
    the plugin does not answer. `first`: the reading before was from another source.
    Its rates are then the broker's own, from one listing with statistics (what the
    management path asks every time), so that a rate is there from the first
    collection on, as on that path; the counters' own follow from the second.
    """
    before = api.requests_made + endpoint.requests_made
    # Sizes and consumer capacity on the slow cycle, unless a byte limit needs them fresh.
    sizes = topology or settings.read_at is None or settings.counts_bytes()
    samples = prometheus.parse(
        endpoint.detailed(prometheus.FAMILIES if sizes else prometheus.FAST_FAMILIES)
    )
    _sizes(settings, samples, sizes)
    overview = api.get("/api/overview", {"columns": OVERVIEW_COLUMNS})
    nodes = api.get("/api/nodes", {"columns": NODE_COLUMNS})
    stats = overview.get("rates_mode", "basic") != "none" and not overview.get("disable_stats")
    # The broker's own rates of queues whose counters have no earlier reading yet (all of
    # them at the first collection, a new one later), from the listings made anyway.
    seed: dict[tuple[str, str], dict[str, Any]] = {}
    if topology or settings.read_at is None or (first and stats):
        listed = api.paged(
            "/api/queues", f"{SETTINGS_COLUMNS},{SEED_COLUMNS}" if stats else SETTINGS_COLUMNS
        )
        if stats:
            # Popped: the cache keeps settings only, not rates that go stale.
            seed = {(q["vhost"], q["name"]): q.pop("message_stats", None) or {} for q in listed}
        settings.fill(listed, _consumers(api))
    found = _resolve(api, settings, samples, seed if stats else None)
    # Consumer details are one cheap request (its cost grows with consumers, not
    # queues): read again only when the plugin's counts say they changed.
    if any((s.consumers or 0) != len(settings.consumers.get(key, ())) for key, s in found.items()):
        settings.consumers = _consumers(api)
    counters.forget(found)
    destinations = []
    for key, sample in found.items():
        dest = _destination(_as_listed(settings.queues[key], sample), settings.consumers, False)
        got = counters.read(key, sample, first)
        if got is None and key in seed:
            dest = _seeded(dest, seed[key])
        elif got is not None:
            rates = got.rates
            dest = replace(
                dest,
                in_total=got.publish,
                out_total=got.deliver_get,
                # As on the management path: a stream keeps what it delivers.
                removed_total=None if dest.type == "stream" else got.removed,
                # Rates over the counters' window (see `prometheus.ChannelTotals`), not
                # derived by the collector from the totals on its own clock: the node
                # refreshes them on timers of its own, which that would alias.
                in_rate=rates.get("publish"),
                out_rate=rates.get("deliver_get"),
                arrival_rate=None if dest.type == "stream" else rates.get("arrivals"),
                # These two over the same window.
                extra={
                    **dest.extra,
                    "ack_rate": rates.get("ack"),
                    "redeliver_rate": rates.get("redeliver"),
                },
            )
            if not rates and key in seed:
                # First sight of its counters: the totals from them, the rates the broker's.
                dest = _seeded(dest, seed[key])
        destinations.append(dest)
    return Snapshot(
        health=_health(overview, nodes),
        destinations=tuple(destinations),
        topology=_topology(api, stats) if topology else None,
        requests=api.requests_made + endpoint.requests_made - before,
    )


def _resolve(
    api: ManagementAPI,
    settings: Settings,
    samples: dict[tuple[str, str], prometheus.QueueSample],
    seed: dict[tuple[str, str], dict[str, Any]] | None,
) -> dict[tuple[str, str], prometheus.QueueSample]:
    """The samples keyed by (vhost, real name), the settings of new queues read first.

    A new queue's settings come with the broker's own rates when `seed` is given (the
    statistics are on): its counters have no earlier reading to give rates from, and
    a storm on it would otherwise show one collection late.

    A queue the management API does not know (deleted since the plugin's answer) is left
    out, and so is one the plugin shows only through channels' counters, without its own
    counts: deleted, or too new to have them. Read as empty, it would seem to fill up
    (dead letters arriving, to a dead-letter queue) once its counts come.
    """
    found: dict[tuple[str, str], prometheus.QueueSample] = {}
    unknown: list[prometheus.QueueSample] = []
    recently = time.time() - MISSING_FOR
    for (vhost, written), sample in samples.items():
        if sample.messages is None and sample.ready is None:
            continue
        name = settings.name_of(vhost, written)
        if name is not None:
            found[(vhost, name)] = sample
        elif settings.missing.get((vhost, written), 0.0) < recently:
            unknown.append(sample)
    columns = SETTINGS_COLUMNS if seed is None else f"{SETTINGS_COLUMNS},{SEED_COLUMNS}"
    read: list[dict[str, Any]] = []
    if len(unknown) > LOOKUPS:
        read = api.paged("/api/queues", columns)
    else:
        for sample in unknown:
            for name in dict.fromkeys((sample.name, prometheus.unescape(sample.name))):
                q = api.get_or_none(
                    quote_path("api", "queues", sample.vhost, name), {"columns": columns}
                )
                if q:
                    read.append(q)
                    break
    for q in read:
        # Popped: the cache keeps settings only, not rates that go stale.
        stats = q.pop("message_stats", None) or {}
        if seed is not None:
            seed[(q["vhost"], q["name"])] = stats
        settings.queues[(q["vhost"], q["name"])] = q
    for sample in unknown:
        name = settings.name_of(sample.vhost, sample.name)
        if name is not None:
            found[(sample.vhost, name)] = sample
        else:
            settings.missing[(sample.vhost, sample.name)] = time.time()
    return found


def _sizes(
    settings: Settings, samples: dict[tuple[str, str], prometheus.QueueSample], read: bool
) -> None:
    """Keep the sizes just `read`, or give each sample those of the last reading that had them."""
    if read:
        settings.sizes = {
            key: tuple(getattr(s, attr) for attr in prometheus.SIZES) for key, s in samples.items()
        }
        return
    for key, s in samples.items():
        kept = settings.sizes.get(key)
        if kept is not None:
            for attr, value in zip(prometheus.SIZES, kept, strict=True):
                setattr(s, attr, value)


def _as_listed(settings: dict[str, Any], s: prometheus.QueueSample) -> dict[str, Any]:
    """A queue as the management listing gives it: its settings, with the plugin's counts."""
    q = {k: v for k, v in settings.items() if k != "message_stats"}
    q.update(
        messages_ready=s.ready,
        messages_unacknowledged=s.unacked,
        messages=s.messages,
        consumers=s.consumers,
        consumer_capacity=s.consumer_capacity,
        memory=s.memory,
        message_bytes=s.message_bytes,
        message_bytes_ready=s.message_bytes_ready,
        idle_since=None,  # the settings' reading is too old to say
    )
    return q


def _seeded(d: Destination, message_stats: dict[str, Any]) -> Destination:
    """`d` with the broker's own rates of the listing (none listed: no traffic, so 0)."""
    q = {"message_stats": message_stats}
    return replace(
        d,
        in_rate=_rate(q, "publish_details", 0.0),
        out_rate=_rate(q, "deliver_get_details", 0.0),
        extra={
            **d.extra,
            "ack_rate": _rate(q, "ack_details", 0.0),
            "redeliver_rate": _rate(q, "redeliver_details", 0.0),
        },
    )


def _without_totals(d: Destination) -> Destination:
    return replace(d, in_total=None, out_total=None, removed_total=None)


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
