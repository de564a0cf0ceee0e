"""JetStream streams and consumers as destinations, and the NATS-specific result types.

`brokers/nats/adapter.py` fetches `/jsz`; the functions here map its streams and
consumers to `Destination`s. `NatsHealth` and `NatsTopology` extend the common
types with what only the NATS pages show (healthz, the server's figures, its
connections, routes, gateways and leaf nodes); the collector stores them like
any other `Health` and `Topology` (`dataclasses.asdict`), so nothing else in
Sluice needs to know them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from brokers.base import Destination, Health, Topology

# A pull client that delivered or acked within this many seconds is taken as
# still there between two fetches.
ACTIVE_WINDOW = 60.0

# Without explicit accounts every client lives in the global account.
DEFAULT_ACCOUNT = "$G"

NANOSECONDS = 1e9


@dataclass(frozen=True)
class NatsHealth(Health):
    """`Health` plus what the NATS server panel shows."""

    # /healthz: {"status": "ok", "error": ""}, or e.g. {"status": "unavailable",
    # "error": "JetStream is still recovering meta layer"}. Not ok is an alarm.
    healthz: dict[str, Any] = field(default_factory=dict)
    # /varz beyond the common figures, with byte rates; see nats_monitor_server.server().
    server: dict[str, Any] = field(default_factory=dict)
    # /connz: {"total", "limit", "at", "rows": [...]}; see nats_monitor_server.connections().
    connections: dict[str, Any] = field(default_factory=dict)

    @property
    def alarms(self) -> list[str]:
        out = super().alarms
        status = self.healthz.get("status")
        if status and status != "ok":
            out.append(f"healthz {status}: {self.healthz.get('error') or 'no reason given'}")
        return out


@dataclass(frozen=True)
class NatsTopology(Topology):
    """What changes slowly on a NATS server, read on the topology cycle."""

    subsz: dict[str, Any] = field(default_factory=dict)  # subscription-table statistics
    # None where the server has none configured (told by /varz, so not fetched).
    routes: list[dict[str, Any]] | None = None
    gateways: dict[str, Any] | None = None
    leafs: list[dict[str, Any]] | None = None
    at: str = ""  # the server's clock when read


class Rates:
    """Counters' previous values, to turn the counters NATS gives into rates.

    Kept in the adapter between collections: the first collection after a
    restart (or in another worker process) has no rate yet. Values unseen in
    a collection are forgotten at its end, so gone connections do not pile up.
    """

    def __init__(self) -> None:
        self._before: dict[Hashable, tuple[float, float]] = {}
        self._now: dict[Hashable, tuple[float, float]] = {}

    def rate(self, key: Hashable, value: float | None, at: datetime | None) -> float | None:
        """Change per second of counter `key` since the last collection; None when unknown."""
        if value is None or at is None:
            return None
        t = at.timestamp()
        self._now[key] = (t, value)
        before = self._before.get(key)
        if before is None or t <= before[0] or value < before[1]:
            return None  # first sight, same instant, or a counter that restarted
        return (value - before[1]) / (t - before[0])

    def done(self) -> None:
        """End of a collection: what was seen now is the reference for the next."""
        self._before, self._now = self._now, {}


# -- streams and consumers -----------------------------------------------------


def jetstream_destinations(
    jsz: dict[str, Any], now: datetime | None, rates: Rates
) -> tuple[list[Destination], list[Destination]]:
    """(streams, consumers) of every account in `/jsz` (asked for leaders' data only)."""
    streams: list[Destination] = []
    consumers: list[Destination] = []
    for account in jsz.get("account_details") or ():
        for detail in account.get("stream_detail") or ():
            streams.append(stream(account, detail, now))
            for info in detail.get("consumer_detail") or ():
                consumers.append(consumer(account, detail, info, now, rates))
    return streams, consumers


def stream(account: dict[str, Any], detail: dict[str, Any], now: datetime | None) -> Destination:
    """One stream of `/jsz`, with the backlog this server alone can tell (see `backlog=` below)."""
    name = detail["name"]
    config = detail.get("config") or {}
    state = detail.get("state") or {}
    cluster = detail.get("cluster") or {}
    retention = config.get("retention", "")
    messages = state.get("messages", 0)
    vhost, prefix = account_of(account)
    first_ts = parse_time(state.get("first_ts"))
    oldest = (now - first_ts).total_seconds() if messages and now and first_ts else None
    return Destination(
        kind="stream",
        key=f"stream/{prefix}{name}",
        name=name,
        vhost=vhost,
        type=retention,
        state="sealed" if config.get("sealed") else "",
        # Only a work queue's messages wait for someone; limits and interest
        # streams keep them for any reader, whose backlog the consumers show.
        # This is the stream alone; the dashboard's NATS kind settles the
        # backlog it stores from the streams and consumers together (its
        # `settle`: the largest num_pending of the stream's consumers, a
        # dead-letter stream's messages), and the rate out of it.
        backlog=messages if retention == "workqueue" else 0,
        consumers=state.get("consumer_count", 0),
        # The last sequence only grows: its change is the ingest rate.
        in_total=state.get("last_seq", 0),
        extra={
            "messages": messages,
            "bytes": state.get("bytes", 0),
            "subjects": config.get("subjects") or [],
            "num_subjects": state.get("num_subjects", 0),
            "num_deleted": state.get("num_deleted", 0),
            "storage": config.get("storage", ""),
            "replicas": config.get("num_replicas", 1),
            "first_seq": state.get("first_seq", 0),
            "last_seq": state.get("last_seq", 0),
            "first_ts": state.get("first_ts") if messages else None,
            "last_ts": state.get("last_ts") if state.get("last_seq") else None,
            # Seconds since the oldest message still kept was stored.
            "oldest_age": max(0.0, oldest) if oldest is not None else None,
            "description": config.get("description") or "",
            "created": detail.get("created"),
            "leader": cluster.get("leader") or "",
            "cluster": cluster.get("name") or "",
            "replica_state": [
                {
                    "name": r.get("name", ""),
                    "current": bool(r.get("current")),
                    "lag": r.get("lag", 0),
                    "offline": bool(r.get("offline")),
                }
                for r in cluster.get("replicas") or ()
            ],
            # Limits; -1 (or 0 for max_age) is unlimited.
            "max_msgs": config.get("max_msgs", -1),
            "max_bytes": config.get("max_bytes", -1),
            "max_age": (config.get("max_age") or 0) / NANOSECONDS,
            "max_msg_size": config.get("max_msg_size", -1),
            "max_msgs_per_subject": config.get("max_msgs_per_subject", -1),
            "discard": config.get("discard", ""),
            "sealed": bool(config.get("sealed")),
            "mirror": (detail.get("mirror") or {}).get("name") or "",
            "sources": [s.get("name", "") for s in detail.get("sources") or ()],
        },
    )


def consumer(
    account: dict[str, Any],
    detail: dict[str, Any],
    info: dict[str, Any],
    now: datetime | None,
    rates: Rates,
) -> Destination:
    stream_name, name = detail["name"], info["name"]
    config = info.get("config") or {}
    delivered = info.get("delivered") or {}
    ack_floor = info.get("ack_floor") or {}
    pending = info.get("num_pending", 0)
    waiting = info.get("num_waiting", 0)
    push = bool(config.get("deliver_subject"))
    last_delivered = parse_time(delivered.get("last_active"))
    last_acked = parse_time(ack_floor.get("last_active"))
    last_active = max((t for t in (last_delivered, last_acked) if t), default=None)
    at = parse_time(info.get("ts")) or now
    recent = bool(last_active and at and (at - last_active).total_seconds() <= ACTIVE_WINDOW)
    # A consumer is a cursor, not a connection: the server does not say who
    # reads it. Count one reader on evidence: a push consumer bound to a
    # subscriber, pull requests waiting, or a delivery or ack in the last
    # minute (a pull client between two fetches). A durable whose client has
    # gone therefore shows 0 readers once its last requests expire.
    reading = bool(info.get("push_bound")) or waiting > 0 or recent
    vhost, prefix = account_of(account)
    key = f"consumer/{prefix}{stream_name}/{name}"
    filters = list(config.get("filter_subjects") or ()) or (
        [config["filter_subject"]] if config.get("filter_subject") else []
    )
    # Consumer sequences count every delivery, first or repeated (as `nats
    # consumer graph` plots them): the delivered one's change is the delivery
    # rate, the ack floor's the acknowledgement rate.
    sent = delivered.get("consumer_seq", 0)
    acked = ack_floor.get("consumer_seq", 0)
    return Destination(
        kind="consumer",
        key=key,
        name=f"{stream_name} › {name}",
        vhost=vhost,
        type="push" if push else "pull",
        state="paused" if info.get("paused") else "",
        backlog=pending,
        in_flight=info.get("num_ack_pending", 0),
        consumers=1 if reading else 0,
        # In: messages that reached this consumer (delivered, repeats too, plus
        # still pending). Unlike the stream's last sequence this counts only
        # what matches the filter. Out: the ack floor, i.e. messages done with;
        # so in-rate minus out-rate is the growth of pending plus unacked, and
        # a consumer whose ack floor does not move has an out-rate of 0.
        in_total=sent + pending,
        out_total=acked,
        extra={
            "durable": config.get("durable_name") or "",
            "consumer_name": name,
            "stream": stream_name,
            "filter_subjects": filters,
            "filter_subject": ", ".join(filters),
            "description": config.get("description") or "",
            "ack_policy": config.get("ack_policy", ""),
            "ack_wait": (config.get("ack_wait") or 0) / NANOSECONDS,
            "max_deliver": config.get("max_deliver", -1),
            "max_ack_pending": config.get("max_ack_pending", -1),
            "deliver_policy": config.get("deliver_policy", ""),
            "deliver_subject": config.get("deliver_subject") or "",
            "deliver_group": config.get("deliver_group") or "",
            "num_pending": pending,
            "num_ack_pending": info.get("num_ack_pending", 0),
            "num_redelivered": info.get("num_redelivered", 0),
            "num_waiting": waiting,
            "delivered_seq": delivered.get("stream_seq", 0),
            "delivered_consumer_seq": sent,
            "ack_floor_seq": ack_floor.get("stream_seq", 0),
            "ack_floor_consumer_seq": acked,
            # Messages/s delivered (first or again); the ack rate is the out-rate.
            "deliver_rate": rates.rate(("deliver", key), sent, at),
            "last_delivered": last_delivered.isoformat() if last_delivered else None,
            "last_acked": last_acked.isoformat() if last_acked else None,
            "last_active": last_active.isoformat() if last_active else None,
            "push_bound": bool(info.get("push_bound")),
            "created": info.get("created"),
            # The stream's limits and fill, which its consumers' backlogs run into.
            "stream_limits": stream_limits(detail),
        },
    )


def stream_limits(detail: dict[str, Any]) -> dict[str, Any]:
    """A stream's max_msgs and max_bytes (-1: unlimited), what it holds, and what it does when full.

    discard "old": the oldest messages are dropped, read or not; "new": publishes are refused.
    """
    config = detail.get("config") or {}
    state = detail.get("state") or {}
    return {
        "max_msgs": config.get("max_msgs", -1),
        "max_bytes": config.get("max_bytes", -1),
        "discard": config.get("discard", "old"),
        "messages": state.get("messages", 0),
        "bytes": state.get("bytes", 0),
    }


def jetstream_facts(streams: list[Destination], consumers: list[Destination]) -> dict[str, Any]:
    """JetStream totals for the broker's facts, from the streams this server leads.

    /jsz's own top-level totals count every replica this server holds, so in
    a cluster each of an R3 stream's servers would count it; these do not.
    """
    return {
        "streams": len(streams),
        "consumers": len(consumers),
        "messages": sum(s.extra["messages"] for s in streams),
    }


def jetstream_server(jsz: dict[str, Any]) -> dict[str, Any]:
    """JetStream's usage and meta group from /jsz, for the server panel."""
    meta = jsz.get("meta_cluster") or {}
    return {
        # What this server stores, its follower replicas included.
        "replica_streams": jsz.get("streams", 0),
        "replica_consumers": jsz.get("consumers", 0),
        "messages": jsz.get("messages", 0),
        "bytes": jsz.get("bytes", 0),
        "memory": jsz.get("memory"),
        "storage": jsz.get("storage"),
        "api_total": (jsz.get("api") or {}).get("total"),
        "api_errors": (jsz.get("api") or {}).get("errors"),
        "meta_leader": meta.get("leader", ""),
        "meta_cluster_size": meta.get("cluster_size"),
    }


def account_of(account: dict[str, Any]) -> tuple[str, str]:
    """(vhost, key prefix): stream names are unique only within an account."""
    name = account.get("name") or DEFAULT_ACCOUNT
    return ("", "") if name == DEFAULT_ACCOUNT else (name, f"{name}/")


def parse_time(value: Any) -> datetime | None:
    """A server timestamp; None for a missing one or Go's zero time."""
    if not value or str(value).startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
