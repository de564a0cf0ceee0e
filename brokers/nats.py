"""NATS and JetStream, through one server's HTTP monitoring endpoint.

Talks to: the monitoring port (8222 by default) with one `requests.Session`:
`/varz` for the server, `/jsz` for JetStream streams and consumers. The
monitoring port usually has no authentication; basic auth is sent when a user
and password are given (for a monitoring port behind a proxy).

Options:
    monitoring_url  http(s)://host:8222[/base-path]
    url             nats://host:4222; the client port, kept for message
                    browsing, which will use nats-py; monitoring does not need it
    user, password  basic auth for the monitoring URL
    token           for the client port (unused by monitoring)
    timeout         seconds allowed for each HTTP request (connect and read)

One collection costs 2 requests (`/varz`, then `/jsz` with streams, consumers
and their configuration), or 1 when `/varz` shows JetStream disabled.

Cannot:
    - see beyond one server: `/jsz` is asked for the streams this server
      leads (`stream-leader-only`), so a replicated stream is counted once,
      but in a cluster the streams led by other servers are missing;
    - give rates: streams and consumers carry monotonic totals from which the
      collector derives them;
    - see plain NATS subjects (no backlog to show) or dead letters (JetStream
      has none; it only advertises messages that reached max deliveries);
    - list more than 1024 JetStream accounts (`/jsz` pages over accounts).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from datetime import datetime
from typing import Any

import requests

from brokers.base import BrokerError, Destination, Health, Node, Snapshot, redact_url

JSZ_PARAMS = {
    "accounts": "true",
    "streams": "true",
    "consumers": "true",
    "config": "true",
    # Each server reports the streams it replicates; the leader's view is the
    # authoritative one, and asking only for it counts every stream once.
    "stream-leader-only": "true",
}

# A pull client that delivered or acked within this many seconds is taken as
# still there between two fetches.
ACTIVE_WINDOW = 60.0

# Without explicit accounts every client lives in the global account.
DEFAULT_ACCOUNT = "$G"


class Nats:
    """One NATS server seen through its monitoring endpoint."""

    def __init__(
        self,
        monitoring_url: str,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.monitoring_url = monitoring_url.rstrip("/")
        self.shown_url = redact_url(self.monitoring_url)
        self.url = url
        self.user = user
        self.timeout = timeout
        self._token = token  # for the client connection, when there is one
        self.session = requests.Session()
        if user is not None and password is not None:
            self.session.auth = (user, password)

    # -- Adapter ------------------------------------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Server health, one destination per stream and per consumer."""
        varz = self._get("/varz")
        requests_made = 1
        jsz: dict[str, Any] = {}
        # /varz shows JetStream's configuration only when it is enabled; a
        # server without it is healthy and simply has no streams.
        if (varz.get("jetstream") or {}).get("config"):
            jsz = self._get("/jsz", JSZ_PARAMS)
            requests_made += 1
        jetstream = bool(jsz) and not jsz.get("disabled", False)

        now = _time(jsz.get("now")) or _time(varz.get("now"))
        streams: list[Destination] = []
        consumers: list[Destination] = []
        accounts = (jsz.get("account_details") or []) if jetstream else []
        for account in accounts:
            for detail in account.get("stream_detail") or ():
                streams.append(_stream(account, detail))
                for info in detail.get("consumer_detail") or ():
                    consumers.append(_consumer(account, detail, info, now))

        # Waiting messages: what consumers have yet to receive, plus work-queue
        # streams no consumer reads (their consumers would count them twice).
        unread = sum(s.backlog for s in streams if s.consumers == 0)
        server = varz.get("server_name") or varz.get("server_id", "")
        health = Health(
            version=varz.get("version", ""),
            nodes=(Node(name=server, mem_used=varz.get("mem")),),
            backlog=sum(c.backlog for c in consumers) + unread,
            in_flight=sum(c.in_flight for c in consumers),
            consumers=sum(c.consumers for c in consumers),
            # The server's own counters: every message in and out, core NATS too.
            in_total=varz.get("in_msgs"),
            out_total=varz.get("out_msgs"),
            facts=_facts(varz, jsz, jetstream),
        )
        return Snapshot(
            health=health, destinations=tuple(streams + consumers), requests=requests_made
        )

    def close(self) -> None:
        self.session.close()

    # -- HTTP ---------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        where = f"{self.shown_url}{path}"
        try:
            response = self.session.get(
                self.monitoring_url + path, params=params, timeout=self.timeout
            )
        except requests.Timeout:
            raise BrokerError(f"{where}: no answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            reason, retryable = _reason(exc)
            raise BrokerError(f"cannot reach {self.shown_url}: {reason}", retryable) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:  # fmt: skip
            # The exception's text may quote the URL, password included.
            raise BrokerError(
                f"bad monitoring URL {self.shown_url!r} ({type(exc).__name__})", retryable=False
            ) from None
        except requests.RequestException as exc:
            raise BrokerError(f"{where}: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            who = f"user {self.user!r}" if self.user else "anonymous access"
            raise BrokerError(f"{where}: {who} refused ({response.status_code})", retryable=False)
        if response.status_code == 404:
            raise BrokerError(f"{where}: not a NATS monitoring endpoint (404)", retryable=False)
        if response.status_code != 200:
            raise BrokerError(
                f"{where}: HTTP {response.status_code} {response.reason}",
                retryable=response.status_code >= 500,
            )
        try:
            body = response.json()
        except requests.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise BrokerError(f"{where}: not a NATS monitoring endpoint", retryable=False)
        return body


# -- mapping ------------------------------------------------------------------


def _stream(account: dict[str, Any], detail: dict[str, Any]) -> Destination:
    name = detail["name"]
    config = detail.get("config") or {}
    state = detail.get("state") or {}
    retention = config.get("retention", "")
    vhost, prefix = _account(account)
    return Destination(
        kind="stream",
        key=f"stream/{prefix}{name}",
        name=name,
        vhost=vhost,
        type=retention,
        state="sealed" if config.get("sealed") else "",
        # Only a work queue's messages wait for someone; limits and interest
        # streams keep them for any reader, whose backlog the consumers show.
        backlog=state.get("messages", 0) if retention == "workqueue" else 0,
        consumers=state.get("consumer_count", 0),
        # The last sequence only grows: its change is the ingest rate.
        in_total=state.get("last_seq", 0),
        extra={
            "messages": state.get("messages", 0),
            "bytes": state.get("bytes", 0),
            "subjects": config.get("subjects") or [],
            "num_subjects": state.get("num_subjects", 0),
            "storage": config.get("storage", ""),
            "replicas": config.get("num_replicas", 1),
            "first_seq": state.get("first_seq", 0),
            "last_seq": state.get("last_seq", 0),
            "first_ts": state.get("first_ts"),
            "last_ts": state.get("last_ts"),
        },
    )


def _consumer(
    account: dict[str, Any], detail: dict[str, Any], info: dict[str, Any], now: datetime | None
) -> Destination:
    stream, name = detail["name"], info["name"]
    config = info.get("config") or {}
    delivered = info.get("delivered") or {}
    ack_floor = info.get("ack_floor") or {}
    pending = info.get("num_pending", 0)
    waiting = info.get("num_waiting", 0)
    push = bool(config.get("deliver_subject"))
    last_active = max(
        (
            t
            for t in (_time(delivered.get("last_active")), _time(ack_floor.get("last_active")))
            if t
        ),
        default=None,
    )
    at = _time(info.get("ts")) or now
    recent = bool(last_active and at and (at - last_active).total_seconds() <= ACTIVE_WINDOW)
    # A consumer is a cursor, not a connection: the server does not say who
    # reads it. Count one reader on evidence: a push consumer bound to a
    # subscriber, pull requests waiting, or a delivery or ack in the last
    # minute (a pull client between two fetches). A durable whose client has
    # gone therefore shows 0 readers once its last requests expire.
    reading = bool(info.get("push_bound")) or waiting > 0 or recent
    vhost, prefix = _account(account)
    filters = config.get("filter_subjects") or (
        [config["filter_subject"]] if config.get("filter_subject") else []
    )
    # Each delivery, first or repeated, moves the consumer sequence: its
    # change is the delivery rate (as `nats consumer graph` plots it).
    sent = delivered.get("consumer_seq", 0)
    return Destination(
        kind="consumer",
        key=f"consumer/{prefix}{stream}/{name}",
        name=f"{stream} › {name}",
        vhost=vhost,
        type="push" if push else "pull",
        state="paused" if info.get("paused") else "",
        backlog=pending,
        in_flight=info.get("num_ack_pending", 0),
        consumers=1 if reading else 0,
        # Messages that reached this consumer: delivered plus still pending.
        # Unlike the stream's last sequence this counts only what matches the
        # filter, so in-rate minus out-rate is exactly the backlog's growth.
        in_total=sent + pending,
        out_total=sent,
        extra={
            "durable": config.get("durable_name") or "",
            "filter_subject": ", ".join(filters),
            "ack_policy": config.get("ack_policy", ""),
            "max_deliver": config.get("max_deliver", -1),
            "num_redelivered": info.get("num_redelivered", 0),
            "num_waiting": waiting,
            "delivered_seq": delivered.get("stream_seq", 0),
            "ack_floor_seq": ack_floor.get("stream_seq", 0),
            "last_active": last_active.isoformat() if last_active else None,
        },
    )


def _facts(varz: dict[str, Any], jsz: dict[str, Any], jetstream: bool) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "server_name": varz.get("server_name", ""),
        "server_id": varz.get("server_id", ""),
        "cluster": (varz.get("cluster") or {}).get("name", ""),
        "uptime": varz.get("uptime", ""),
        "connections": varz.get("connections", 0),
        "subscriptions": varz.get("subscriptions", 0),
        "slow_consumers": varz.get("slow_consumers", 0),
        "mem": varz.get("mem", 0),
        "cpu": varz.get("cpu", 0.0),
        "cores": varz.get("cores", 0),
        # Counters since the server started; rates are their change.
        "in_msgs": varz.get("in_msgs", 0),
        "out_msgs": varz.get("out_msgs", 0),
        "in_bytes": varz.get("in_bytes", 0),
        "out_bytes": varz.get("out_bytes", 0),
        "jetstream": jetstream,
    }
    if jetstream:
        facts.update(
            streams=jsz.get("streams", 0),
            consumers=jsz.get("consumers", 0),
            messages=jsz.get("messages", 0),
            bytes=jsz.get("bytes", 0),
            api_errors=(jsz.get("api") or {}).get("errors", 0),
            meta_leader=(jsz.get("meta_cluster") or {}).get("leader", ""),
        )
    return facts


def _account(account: dict[str, Any]) -> tuple[str, str]:
    """(vhost, key prefix): stream names are unique only within an account."""
    name = account.get("name") or DEFAULT_ACCOUNT
    return ("", "") if name == DEFAULT_ACCOUNT else (name, f"{name}/")


def _time(value: Any) -> datetime | None:
    """A server timestamp; None for a missing one or Go's zero time."""
    if not value or str(value).startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _reason(exc: requests.ConnectionError) -> tuple[str, bool]:
    """The cause a person can act on, and whether retrying can help."""
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused", True
        if isinstance(cause, socket.gaierror):
            return "unknown host", True
        if isinstance(cause, http.client.BadStatusLine):
            # The client port greets every connection with INFO {...}.
            if str(cause).startswith("INFO {"):
                return "that is the NATS client port; give the monitoring port (8222)", False
            return "the server does not speak HTTP", False
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})", False
        if isinstance(cause, ConnectionResetError):
            return "connection reset", True
    return "connection failed", True


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it: chained exceptions, urllib3's `reason`, wrapped args."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 20:
        e = todo.pop(0)
        if e in out:
            continue
        out.append(e)
        todo += [
            c
            for c in (e.__cause__, e.__context__, getattr(e, "reason", None))
            if isinstance(c, BaseException)
        ]
        todo += [a for a in e.args if isinstance(a, BaseException)]
    return out
