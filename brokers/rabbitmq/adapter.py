"""RabbitMQ, through the management plugin's HTTP API and, when on, the Prometheus plugin.

Talks to: the management API (`/api/...`, port 15672 by default) through one
`requests.Session` (`brokers.rabbitmq.management`, which also turns every failure into
a `BrokerError`), and the rabbitmq_prometheus plugin's detailed endpoint (port 15692,
`brokers.rabbitmq.prometheus`) for the counts. AMQP (pika) is reserved for
message browsing, publishing and moving (`brokers.rabbitmq.amqp`), imported
only when `transfer`, `walk`, `browse` or `publish` is first called.

Options:
    management_url  http(s)://[user:password@]host:15672[/path-prefix]
    amqp_url        amqp(s)://user:password@host:5672/vhost; its credentials are
                    the fallback for the management API
    username, password
                    override the credentials in either URL; default guest/guest
    timeout         seconds allowed for each HTTP request (connect and read)
    metrics_source  "auto" (the default): the Prometheus plugin when it answers, else
                    the management API, the plugin tried again after 1, 2, 4... up
                    to 10 minutes; "prometheus": the plugin only (not answering is
                    an error); "management": the management API only
    prometheus_url  http(s)://host:15692; default: the management URL's scheme and
                    host with port 15692. No credentials are sent unless it has some

With the plugin, one collection costs 3 requests: the detailed endpoint (every
count, consumers and per-channel counters), overview and nodes; on 3.10.8 with
5,000 queues under a fifth of the broker's CPU of the management path (0.04 net of
its background, 0.18 with it, in bench/collect_rabbitmq.py). Queue type,
arguments, policies and consumer details come from the management API on the slow
cycle (`topology=True`), and sizes, memory and consumer capacity from the plugin on
that cycle only (on every one while some queue has a max-length-bytes), and are kept
here in between; a queue new since then costs one more GET (one light listing when
more than 20 are new). The first collection with the plugin lists the queues with
their statistics once, for rates until the counters have two readings.

Without it, one collection costs 3 + ceil(queues / 500) requests: overview, nodes,
consumers, and the queue listing paged 500 at a time in the broker's default
order (vhost, name), so that it computes statistics for one page only.
Topology adds vhosts, exchanges (both paged) and bindings (not pageable).

Cannot:
    - see anything fresher than the management statistics interval (5 s by
      default); rates are the broker's, averaged over that interval;
    - report rates when the broker runs with `rates_mode = none` or
      `disable_stats`: rates are then None;
    - with the plugin, give the broker's own per-queue rates (except at the first
      reading, which takes them from one listing with statistics): they are taken
      from per-channel counters, averaged over the last minute of readings because the
      node refreshes them on timers it does not show, and the node drops a channel's
      some time after it closed, so across a reading where that happened there is
      none (see `prometheus.ChannelTotals`); consumer details and queue settings are
      as of the last slow cycle;
    - count dead letters per queue (RabbitMQ keeps only node-wide counters);
    - list atomically: a queue created or deleted while the pages are read can
      shift another queue across a page boundary and out of one snapshot.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from brokers.base import (
    BrokerError,
    Message,
    Published,
    Snapshot,
)
from brokers.rabbitmq import keys, monitor, prometheus
from brokers.rabbitmq.management import ManagementAPI, quote_path

if TYPE_CHECKING:
    from brokers.rabbitmq.amqp import AmqpTransfer
    from brokers.rabbitmq.publish import ExchangeSender
    from brokers.rabbitmq.walk import QueueWalk


METRICS_SOURCES = ("auto", "prometheus", "management")


class RabbitMQ:
    """One RabbitMQ cluster, read through its management API and Prometheus plugin."""

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
        metrics_source: str = "auto",
        prometheus_url: str | None = None,
    ) -> None:
        if metrics_source not in METRICS_SOURCES:
            raise BrokerError(
                f"metrics_source must be one of {', '.join(METRICS_SOURCES)}, not {metrics_source!r}",
                retryable=False,
            )
        self.amqp_url = amqp_url
        self._credentials = (username, password)
        self.api = ManagementAPI(management_url, amqp_url, username, password, timeout)
        self.metrics_source = metrics_source
        self.prometheus = (
            None
            if metrics_source == "management"
            else prometheus.PrometheusEndpoint(
                prometheus_url or prometheus.default_url(management_url), timeout
            )
        )
        self._settings = monitor.Settings()
        self._counters = prometheus.ChannelTotals()
        self._last_source = ""  # "prometheus" or "management": what the last collection read
        self._failures = 0  # of the plugin in a row, in "auto"
        self._retry_at = 0.0  # time.time() before which "auto" does not ask the plugin
        self._failure = ""

    def __repr__(self) -> str:
        return f"RabbitMQ({self.api.base_url!r}, username={self.api.username!r})"

    def close(self) -> None:
        self.api.close()
        if self.prometheus is not None:
            self.prometheus.close()

    # -- messages (AMQP: pika is imported here only, on first use) -----------

    def transfer(self, vhost: str, queue: str, prefetch: int = 1000) -> AmqpTransfer:
        """A session moving messages out of `queue`: read, send confirmed, then settle."""
        from brokers.rabbitmq.amqp import AmqpTransfer

        return AmqpTransfer(self._amqp(), vhost, queue, prefetch=prefetch)

    def sender(self, vhost: str) -> ExchangeSender:
        """Confirmed, mandatory publishes of whole batches into `vhost` (an import)."""
        from brokers.rabbitmq.publish import ExchangeSender

        return ExchangeSender(self._amqp(), vhost)

    def walk(self, vhost: str, queue: str) -> QueueWalk:
        """Every message of `queue` once, left as it was (brokers.rabbitmq.walk); BrokerError
        if reading it all could harm it: a quorum queue with a delivery limit."""
        from brokers.rabbitmq.walk import QueueWalk, walk_refusal

        info = self.api.get("/api/queues" + quote_path(vhost, queue))
        queue_type = info.get("type", "classic")
        policy = dict(info.get("effective_policy_definition") or {})
        limit = monitor.limits(info.get("arguments") or {}, policy).get("delivery-limit")
        refusal = walk_refusal(queue_type, limit["value"] if limit else None)
        if refusal:
            raise BrokerError(refusal, retryable=False)
        return QueueWalk(self._amqp(), self.api, vhost, queue, queue_type)

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

    # -- collection (brokers.rabbitmq.monitor) ------------------------------

    def collect(self, topology: bool = False) -> Snapshot:
        """Read health, queues and consumers; with `topology`, also vhosts, exchanges, bindings."""
        endpoint = self.prometheus
        if endpoint is not None and (
            self.metrics_source == "prometheus" or time.time() >= self._retry_at
        ):
            try:
                snapshot = monitor.collect_prometheus(
                    self.api,
                    endpoint,
                    self._settings,
                    self._counters,
                    topology,
                    first=self._last_source != "prometheus",
                )
            except prometheus.Unavailable as exc:
                if self.metrics_source == "prometheus":
                    raise
                self._failures += 1
                self._failure = exc.message
                self._retry_at = time.time() + min(600, 60 * 2 ** (self._failures - 1))
            else:
                self._failures, self._last_source = 0, "prometheus"
                return self._says(snapshot, self._prometheus_source())
        snapshot = monitor.collect(
            self.api, topology, self._settings, totals=self._last_source != "prometheus"
        )
        self._last_source = "management"
        return self._says(snapshot, self._management_source())

    def _prometheus_source(self) -> str:
        every = self._settings.every
        when = f"every {every:.0f} s" if every else "on each topology read"
        window = f"{prometheus.WINDOW_SECONDS:.0f} s"
        return (
            f"Prometheus plugin (detailed endpoint), rates averaged over the last "
            f"{window} of its counters; queue type, arguments, policies and consumer details "
            f"from the management API {when}"
        )

    def _management_source(self) -> str:
        if self.prometheus is None:
            return "management API (metrics_source = management)"
        retry = time.strftime("%H:%M:%S", time.gmtime(self._retry_at))
        return f"management API: {self._failure}; the plugin is tried again after {retry} UTC"

    @staticmethod
    def _says(snapshot: Snapshot, source: str) -> Snapshot:
        """`snapshot` with the source of its counts among the facts the broker page shows."""
        facts = {"counts_from": source, **snapshot.health.facts}
        return replace(snapshot, health=replace(snapshot.health, facts=facts))


# mypy checks RabbitMQ against each capability it does not list in `lacks`.
if TYPE_CHECKING:
    from brokers.base import Adapter, Browse, Declared, Publish, Transfers

    _declared: type[Declared] = RabbitMQ
    _monitor: type[Adapter] = RabbitMQ
    _browse: type[Browse] = RabbitMQ
    _publish: type[Publish] = RabbitMQ
    _transfer: type[Transfers] = RabbitMQ
