"""NATS and JetStream, through one server's HTTP monitoring endpoint.

Talks to: the monitoring port (8222 by default) with one `requests.Session`.
The monitoring port usually has no authentication; basic auth is sent when a
user and password are given (for a monitoring port behind a proxy).

Options:
    monitoring_url  http(s)://host:8222[/base-path]
    url             nats://host:4222; the client port, for message browsing
                    (nats-py); monitoring only uses it to explain a monitoring
                    port that does not answer while the client port does
    user, password  basic auth for the monitoring URL
    token           for the client port (unused by monitoring)
    timeout         seconds allowed for each HTTP request (connect and read)

Requests per collection, each counted in `Snapshot.requests`:
    every cycle     /varz, /healthz, /connz (one page of CONNZ_LIMIT
                    connections), and /jsz with streams, consumers and their
                    configuration when /varz shows JetStream enabled: 4, or 3
                    without JetStream. /connz is on every cycle because its
                    point is now: pending bytes and message rates of clients;
                    its size grows with connections, not with streams.
    topology cycle  adds /subsz, and /routez, /gatewayz, /leafz only where
                    /varz shows them configured: 1 to 4 more. They change
                    slowly and are stored with the topology.

Rates: the server gives none. Messages/s of the server, streams and
consumers' acks are derived by the collector from the totals in `Health` and
`Destination`; byte rates, deliveries/s of consumers and per-connection rates
are derived here from the previous collection's counters (`Rates`), so the
first collection after a restart, or in another worker process, has none.

Cannot:
    - see beyond one server: `/jsz` is asked for the streams this server
      leads (`stream-leader-only`), so a replicated stream is counted once,
      but in a cluster the streams led by other servers are missing;
    - list more than CONNZ_LIMIT connections (the first by connection id),
      or more than 1024 JetStream accounts (`/jsz` pages over accounts);
    - see plain NATS subjects (no backlog to show) or dead letters (JetStream
      has none; it only advertises messages that reached max deliveries).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import requests

from brokers.base import BrokerError, Destination, Message, Node, Published, Snapshot
from brokers.nats import monitor_server as server_map
from brokers.nats.monitor import (
    NatsHealth,
    NatsTopology,
    Rates,
    jetstream_destinations,
    jetstream_facts,
    jetstream_server,
    parse_time,
)
from brokers.redact import redact_url

JSZ_PARAMS = {
    "accounts": "true",
    "streams": "true",
    "consumers": "true",
    "config": "true",
    # Each server reports the streams it replicates; the leader's view is the
    # authoritative one, and asking only for it counts every stream once.
    "stream-leader-only": "true",
}
CONNZ_PARAMS = {"limit": str(server_map.CONNZ_LIMIT), "auth": "true"}

if TYPE_CHECKING:
    from brokers.nats.transfer import SequenceTransfer


class Nats:
    """One NATS server seen through its monitoring endpoint."""

    lacks: ClassVar[dict[str, str]] = {
        "tail": "the live tail's reader is in the dashboard (dashboard/kinds/nats/tail.py, a core "
        "subscription through NatsClient.subscribe), not in brokers/nats",
    }

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
        self._password = password
        self.session = requests.Session()
        if user is not None and password is not None:
            self.session.auth = (user, password)
        self.rates = Rates()
        self._requests = 0

    # -- Adapter ------------------------------------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Server health and connections, one destination per stream and per consumer."""
        self._requests = 0
        try:
            return self._collect(topology)
        finally:
            self.rates.done()

    def _collect(self, topology: bool) -> Snapshot:
        varz = self._get("/varz")
        healthz = self._healthz()
        jsz: dict[str, Any] = {}
        # /varz shows JetStream's configuration only when it is enabled; a
        # server without it is healthy and simply has no streams.
        if (varz.get("jetstream") or {}).get("config"):
            jsz = self._get("/jsz", JSZ_PARAMS)
        jetstream = bool(jsz) and not jsz.get("disabled", False)
        connz = self._get("/connz", CONNZ_PARAMS)

        now = parse_time(jsz.get("now")) or parse_time(varz.get("now"))
        streams, consumers = jetstream_destinations(jsz, now, self.rates) if jetstream else ([], [])
        figures = server_map.server(varz, self.rates)
        figures["jetstream"]["enabled"] = jetstream
        if jetstream:
            figures["jetstream"].update(jetstream_server(jsz))
        # Waiting messages: what consumers have yet to receive, plus work-queue
        # streams no consumer reads (their consumers would count them twice).
        unread = sum(s.backlog for s in streams if s.consumers == 0)
        name = varz.get("server_name") or varz.get("server_id", "")
        health = NatsHealth(
            version=varz.get("version", ""),
            nodes=(Node(name=name, mem_used=varz.get("mem")),),
            backlog=sum(c.backlog for c in consumers) + unread,
            in_flight=sum(c.in_flight for c in consumers),
            consumers=sum(c.consumers for c in consumers),
            # The server's own counters: every message in and out, core NATS too.
            in_total=varz.get("in_msgs"),
            out_total=varz.get("out_msgs"),
            facts=_facts(varz, jetstream, streams, consumers),
            healthz=healthz,
            server=figures,
            connections=server_map.connections(connz, self.rates),
        )
        return Snapshot(
            health=health,
            destinations=tuple(streams + consumers),
            topology=self._topology(varz) if topology else None,
            requests=self._requests,
        )

    def _topology(self, varz: dict[str, Any]) -> NatsTopology:
        """Subscription statistics, and routes, gateways and leaf nodes where configured."""
        has = server_map.configured(varz)
        subsz = self._get("/subsz")
        return NatsTopology(
            subsz=server_map.subscriptions(subsz),
            routes=server_map.routes(self._get("/routez")) if has["routes"] else None,
            gateways=server_map.gateways(self._get("/gatewayz")) if has["gateways"] else None,
            leafs=server_map.leafs(self._get("/leafz")) if has["leafs"] else None,
            at=subsz.get("now", ""),
        )

    def close(self) -> None:
        self.session.close()

    # -- capabilities (brokers.base): sources are streams, targets subjects --

    def read(self, source: str, limit: int, truncate: int | None = None) -> list[Message]:
        """Browse: the first `limit` messages of the stream (`StreamBrowser.first`)."""
        from dataclasses import replace

        from brokers.nats.browse import StreamBrowser
        from brokers.nats.client import NatsClient
        from brokers.nats.transfer import as_message

        with NatsClient(self._client_options(), self.timeout, "sluice-browse") as client:
            page = StreamBrowser(client, stream_of(source), body_limit=truncate).first(limit)
        return [replace(as_message(m, m.seq), truncated=m.truncated) for m in page.messages]

    def send(
        self, target: str, body: bytes, key: str = "", headers: dict[str, str] | None = None
    ) -> Published:
        """Publish: to the subject `target` through JetStream, waiting for its PubAck."""
        from brokers.nats.client import NatsClient

        if key:
            raise BrokerError("NATS messages have no key: the subject is the whole address", False)
        with NatsClient(self._client_options(), self.timeout, "sluice-publish") as client:
            ack = client.publish(target, body, list((headers or {}).items()))
        if ack is None:  # not reached: a JetStream publish answers with a PubAck or raises
            raise BrokerError(f"no PubAck for {target}")
        detail = {"stream": ack.stream, "seq": ack.seq, "duplicate": ack.duplicate}
        return Published(confirmed=True, routed=True, detail=detail)

    def open_transfer(self, source: str) -> SequenceTransfer:
        """Transfers: a `SequenceTransfer` over the whole stream as it is now, its cursor in memory."""
        from brokers.nats.pipeline import DeadLetterClient
        from brokers.nats.transfer import SequenceTransfer

        stream = stream_of(source)
        client = DeadLetterClient(self._client_options(), self.timeout, "sluice-transfer")
        try:
            info = client.info(stream, fresh=True)
            return SequenceTransfer(
                client,
                "stream",
                stream,
                end=info.last_seq + 1 if info.messages else info.first_seq,
                next_seq=info.first_seq,
                save=lambda _next, _deletes: None,
                publish_timeout=max(10.0, self.timeout * 3),
            )
        except BaseException:
            client.close()
            raise

    def _client_options(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "user": self.user,
            "password": self._password,
            "token": self._token,
        }

    # -- HTTP ---------------------------------------------------------------

    def _healthz(self) -> dict[str, str]:
        """/healthz as {"status", "error"}: a failing check is a state to show, not a failure."""
        self._requests += 1
        try:
            response = self.session.get(self.monitoring_url + "/healthz", timeout=self.timeout)
            if response.status_code == 404:
                return {"status": "", "error": ""}  # an old server without /healthz
            body = response.json()
        except requests.Timeout:
            return {"status": "unknown", "error": f"no answer within {self.timeout:g} s"}
        except (requests.RequestException, ValueError) as exc:
            return {"status": "unknown", "error": f"/healthz failed ({type(exc).__name__})"}
        if not isinstance(body, dict):
            body = {}
        ok = response.status_code == 200
        status = str(body.get("status") or ("ok" if ok else f"HTTP {response.status_code}"))
        error = str(body.get("error") or "")
        # Some failures come with a list of the checks that failed.
        for item in body.get("errors") or ():
            if isinstance(item, dict) and item.get("error"):
                error = error or str(item["error"])
        return {"status": status if ok or status != "ok" else "unavailable", "error": error}

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        self._requests += 1
        where = f"{self.shown_url}{path}"
        try:
            response = self.session.get(
                self.monitoring_url + path, params=params, timeout=self.timeout
            )
        except requests.Timeout:
            raise BrokerError(f"{where}: no answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            reason, retryable = _reason(exc)
            if reason == "connection refused" and self._client_port_answers():
                reason += (
                    f"; the client port {redact_url(self._client_url())} answers, so the server "
                    "runs without this monitoring port (start it with -m 8222, or correct "
                    "monitoring_url)"
                )
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

    def _client_url(self) -> str:
        first = (self.url or "").split(",")[0].strip()
        return first if "://" in first else f"nats://{first}"

    def _client_port_answers(self) -> bool:
        """Whether the NATS client port greets us with INFO: the server runs, its monitoring not."""
        if not self.url:
            return False
        try:
            parts = urlsplit(self._client_url())
            host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        except ValueError:
            return False
        try:
            with socket.create_connection((host, port), timeout=min(1.0, self.timeout)) as sock:
                sock.settimeout(min(1.0, self.timeout))
                return sock.recv(5) == b"INFO "
        except OSError:
            return False


def stream_of(key: str) -> str:
    """The stream of a Destination key ("stream/orders", "stream/ACCOUNT/orders") or a bare name."""
    return key.rpartition("/")[2]  # a stream name cannot hold "/"


def _facts(
    varz: dict[str, Any], jetstream: bool, streams: list[Destination], consumers: list[Destination]
) -> dict[str, Any]:
    """A short summary for the broker's header; the server panel shows the rest (`server`)."""
    facts: dict[str, Any] = {
        "cluster": (varz.get("cluster") or {}).get("name", ""),
        "jetstream": jetstream,
    }
    if jetstream:
        facts.update(jetstream_facts(streams, consumers))
    return facts


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


# mypy checks Nats against each capability it does not list in `lacks`.
if TYPE_CHECKING:
    from brokers.base import Adapter, Browse, Declared, Publish, Transfers

    _declared: type[Declared] = Nats
    _monitor: type[Adapter] = Nats
    _browse: type[Browse] = Nats
    _publish: type[Publish] = Nats
    _transfer: type[Transfers] = Nats
