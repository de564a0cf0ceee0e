"""The NATS server itself: /varz, /connz, /subsz, /routez, /gatewayz, /leafz mapped to plain dicts.

These end up in `NatsHealth` and `NatsTopology` (brokers/nats/monitor.py) and
from there in the broker's stored health and topology, so everything here is
plain JSON: numbers, strings, lists and dicts. Durations come from the server
as Go strings ("2.05ms", "1d2h3m4s") and are turned into seconds.
"""

from __future__ import annotations

import re
from typing import Any

from brokers.nats.monitor import Rates, parse_time

# /connz pages over connections; one page is read, of this many (the server's own default).
CONNZ_LIMIT = 1024

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(y|d|h|ms|m|s|µs|μs|us|ns)")
_UNITS = {
    "y": 365 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # Greek mu
    "us": 1e-6,
    "ns": 1e-9,
}


def seconds(duration: Any) -> float | None:
    """A Go duration string as seconds; None if it is not one."""
    text = str(duration or "").strip()
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def configured(varz: dict[str, Any]) -> dict[str, bool]:
    """Which of cluster routes, gateways and leaf nodes this server has configured."""
    cluster = varz.get("cluster") or {}
    gateway = varz.get("gateway") or {}
    leaf = varz.get("leaf") or {}
    return {
        # A gateway alone names a cluster too, without a cluster port.
        "routes": bool(cluster.get("cluster_port") or varz.get("routes")),
        "gateways": bool(gateway.get("port") or gateway.get("gateways")),
        "leafs": bool(leaf.get("port") or leaf.get("remotes") or varz.get("leafnodes")),
    }


def server(varz: dict[str, Any], rates: Rates) -> dict[str, Any]:
    """The server panel's figures from /varz; byte rates from the counters' change."""
    at = parse_time(varz.get("now"))
    js = varz.get("jetstream") or {}
    js_config = js.get("config") or {}
    js_stats = js.get("stats") or {}
    return {
        "server_name": varz.get("server_name", ""),
        "server_id": varz.get("server_id", ""),
        "version": varz.get("version", ""),
        "go": varz.get("go", ""),
        "git_commit": varz.get("git_commit", ""),
        "host": varz.get("host", ""),
        "port": varz.get("port"),
        "start": varz.get("start"),
        "now": varz.get("now"),
        "uptime": varz.get("uptime", ""),
        "uptime_seconds": seconds(varz.get("uptime")),
        "cores": varz.get("cores", 0),
        "cpu": varz.get("cpu", 0.0),  # percent of one core
        "mem": varz.get("mem", 0),  # resident bytes
        "connections": varz.get("connections", 0),
        "total_connections": varz.get("total_connections", 0),
        "max_connections": varz.get("max_connections"),
        "subscriptions": varz.get("subscriptions", 0),
        "slow_consumers": varz.get("slow_consumers", 0),
        "slow_consumer_stats": varz.get("slow_consumer_stats") or {},
        "stale_connections": varz.get("stale_connections", 0),
        "max_payload": varz.get("max_payload"),
        "in_msgs": varz.get("in_msgs", 0),
        "out_msgs": varz.get("out_msgs", 0),
        "in_bytes": varz.get("in_bytes", 0),
        "out_bytes": varz.get("out_bytes", 0),
        # Bytes/s; messages/s are the health's in_rate and out_rate.
        "in_bytes_rate": rates.rate("in_bytes", varz.get("in_bytes"), at),
        "out_bytes_rate": rates.rate("out_bytes", varz.get("out_bytes"), at),
        "cluster": (varz.get("cluster") or {}).get("name", ""),
        "routes": varz.get("routes", 0),  # route connections (a pooled route has several)
        "route_peers": varz.get("remotes", 0),  # servers those routes lead to
        "leafnodes": varz.get("leafnodes", 0),
        "configured": configured(varz),
        "jetstream": {
            "enabled": bool(js_config),
            "max_memory": js_config.get("max_memory"),
            "max_storage": js_config.get("max_storage"),
            "memory": js_stats.get("memory"),
            "storage": js_stats.get("storage"),
            "api_total": (js_stats.get("api") or {}).get("total"),
            "api_errors": (js_stats.get("api") or {}).get("errors"),
            "domain": js_config.get("domain", ""),
        },
    }


# Columns of a connection row, in the order the page shows them.
CONNECTION_COLUMNS = (
    "cid",
    "name",
    "lang",
    "version",
    "address",
    "account",
    "subscriptions",
    "pending_bytes",
    "in_msgs",
    "out_msgs",
    "in_rate",
    "out_rate",
    "idle",
    "rtt",
    "uptime",
)


def connections(connz: dict[str, Any], rates: Rates) -> dict[str, Any]:
    """One row per client connection in /connz, with message rates from the last collection."""
    at = parse_time(connz.get("now"))
    rows = []
    for c in connz.get("connections") or ():
        # Connection ids restart with the server; its start time tells them apart.
        ident = ("conn", c.get("cid"), c.get("start"))
        last = parse_time(c.get("last_activity"))
        idle = (at - last).total_seconds() if at and last else seconds(c.get("idle"))
        rows.append(
            {
                "cid": c.get("cid"),
                "name": c.get("name") or "",
                "lang": c.get("lang") or "",
                "version": c.get("version") or "",
                "address": f"{c.get('ip', '')}:{c.get('port', '')}",
                "account": c.get("account") or "",
                "user": c.get("authorized_user") or "",
                "kind": c.get("kind") or "",
                "type": c.get("type") or "",
                "subscriptions": c.get("subscriptions", 0),
                "pending_bytes": c.get("pending_bytes", 0),
                "in_msgs": c.get("in_msgs", 0),
                "out_msgs": c.get("out_msgs", 0),
                "in_bytes": c.get("in_bytes", 0),
                "out_bytes": c.get("out_bytes", 0),
                "in_rate": rates.rate((*ident, "in"), c.get("in_msgs"), at),
                "out_rate": rates.rate((*ident, "out"), c.get("out_msgs"), at),
                "idle": max(0.0, idle) if idle is not None else None,
                "rtt": seconds(c.get("rtt")),
                "uptime": seconds(c.get("uptime")),
                "start": c.get("start"),
            }
        )
    return {
        "total": connz.get("total", len(rows)),
        "limit": connz.get("limit", CONNZ_LIMIT),
        "at": connz.get("now"),
        "rows": rows,
    }


def subscriptions(subsz: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "num_subscriptions",
        "num_cache",
        "num_inserts",
        "num_removes",
        "num_matches",
        "cache_hit_rate",
        "max_fanout",
        "avg_fanout",
    )
    return {k: subsz.get(k) for k in keys}


def _link(c: dict[str, Any]) -> dict[str, Any]:
    """The figures every route, gateway and leaf connection shares."""
    return {
        "address": f"{c.get('ip', '')}:{c.get('port', '')}",
        "rtt": seconds(c.get("rtt")),
        "uptime": seconds(c.get("uptime")),
        "in_msgs": c.get("in_msgs", 0),
        "out_msgs": c.get("out_msgs", 0),
        "in_bytes": c.get("in_bytes", 0),
        "out_bytes": c.get("out_bytes", 0),
        "subscriptions": c.get("subscriptions", 0),
        "pending": c.get("pending_size", c.get("pending_bytes", 0)),
    }


def routes(routez: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per route connection (a pooled route to one server has several)."""
    return [
        {
            "rid": r.get("rid"),
            "remote": r.get("remote_name") or r.get("remote_id", ""),
            "remote_id": r.get("remote_id", ""),
            "solicited": bool(r.get("did_solicit")),
            "configured": bool(r.get("is_configured")),
            "account": r.get("account") or "",
            **_link(r),
        }
        for r in routez.get("routes") or ()
    ]


def gateways(gatewayz: dict[str, Any]) -> dict[str, Any]:
    """This server's gateway name and its outbound and inbound gateway connections."""

    def row(cluster: str, g: dict[str, Any]) -> dict[str, Any]:
        conn = g.get("connection") or {}
        return {
            "cluster": cluster,
            "configured": bool(g.get("configured")),
            "server": conn.get("name", ""),
            **_link(conn),
        }

    outbound = [row(n, g) for n, g in sorted((gatewayz.get("outbound_gateways") or {}).items())]
    inbound = [
        row(n, g)
        for n, conns in sorted((gatewayz.get("inbound_gateways") or {}).items())
        for g in conns or ()
    ]
    return {"name": gatewayz.get("name", ""), "outbound": outbound, "inbound": inbound}


def leafs(leafz: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": leaf.get("name", ""),
            "account": leaf.get("account", ""),
            "spoke": bool(leaf.get("is_spoke")),
            **_link(leaf),
        }
        for leaf in leafz.get("leafs") or ()
    ]
