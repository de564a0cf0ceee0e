"""The interface every broker adapter implements, and the data it returns.

Adapters talk to one broker each and return these frozen dataclasses, never
raw client objects or API JSON. They know nothing of Django: configuration is
passed to the constructor, and every failure leaves the adapter as a
`BrokerError`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class BrokerError(Exception):
    """A broker could not do what was asked; `message` is safe to show."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        # False when trying again cannot help (bad credentials, unknown queue).
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Node:
    name: str
    running: bool = True
    mem_used: int | None = None  # bytes
    mem_limit: int | None = None  # bytes; the memory alarm's threshold
    mem_alarm: bool = False
    disk_free: int | None = None  # bytes
    disk_free_limit: int | None = None  # bytes; the disk alarm's threshold
    disk_alarm: bool = False


@dataclass(frozen=True)
class Health:
    """One broker as a whole, as seen by one collection."""

    version: str = ""
    nodes: tuple[Node, ...] = ()
    # Messages waiting, messages delivered but not yet acknowledged.
    backlog: int = 0
    in_flight: int = 0
    consumers: int = 0
    # Messages/s entering the broker and delivered to consumers. None when the
    # broker gives no rate; the collector then derives it from the totals.
    in_rate: float | None = None
    out_rate: float | None = None
    in_total: int | None = None  # monotonic: messages ever received
    out_total: int | None = None  # monotonic: messages ever delivered or consumed
    # Free-form facts worth showing (cluster name, object counts...).
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def alarms(self) -> list[str]:
        out = []
        for node in self.nodes:
            if node.mem_alarm:
                out.append(f"memory alarm on {node.name}")
            if node.disk_alarm:
                out.append(f"disk alarm on {node.name}")
            if not node.running:
                out.append(f"{node.name} is not running")
        return out


@dataclass(frozen=True)
class Consumer:
    tag: str
    channel: str = ""  # RabbitMQ: the channel's name; Kafka: the member's host
    prefetch: int | None = None
    ack_required: bool = True
    client: str = ""  # connection or client id


@dataclass(frozen=True)
class Binding:
    source: str  # the exchange; "" is RabbitMQ's default exchange
    destination: str
    destination_type: str  # "queue" or "exchange"
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    vhost: str = ""


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str  # direct, topic, fanout, headers...
    vhost: str = ""
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    in_rate: float | None = None  # messages/s published in
    out_rate: float | None = None  # messages/s routed out


@dataclass(frozen=True)
class Destination:
    """Anything with a backlog: a queue, stream, topic or consumer group.

    Every broker fills the same fields with the same meaning, so destinations
    of different brokers rank side by side.
    """

    kind: str  # "queue", "stream", "topic", "group" or "consumer"
    name: str
    # Unique within the broker; the part of the URL that names it.
    key: str
    vhost: str = ""  # RabbitMQ vhost; "" elsewhere
    type: str = ""  # RabbitMQ: classic, quorum or stream
    state: str = ""  # RabbitMQ: running, idle, flow...; Kafka: group state
    # Messages waiting to be delivered (RabbitMQ: ready; Kafka: lag).
    backlog: int = 0
    # Delivered but not yet acknowledged (RabbitMQ: unacked).
    in_flight: int = 0
    consumers: int = 0
    # Messages/s in and out. None when the broker gave no rate; the collector
    # then derives it from the counters below.
    in_rate: float | None = None
    out_rate: float | None = None
    # Monotonic totals (published, delivered/committed) for rate derivation.
    in_total: int | None = None
    out_total: int | None = None
    # Messages taken off for good (acknowledged, or delivered without acknowledgement),
    # a counter. Where the broker's own in-rate misses arrivals (RabbitMQ's dead-lettered
    # ones), the collector derives arrivals from it and the change of what is held.
    removed_total: int | None = None
    # Messages/s that arrived by every way, where the adapter works it out itself (from
    # readings the broker refreshes on its own timer); the collector then derives none.
    arrival_rate: float | None = None
    # How far behind consumers are: messages for Kafka groups, None elsewhere.
    lag: int | None = None
    # RabbitMQ: the share of time the queue could deliver at once (0..1).
    consumer_capacity: float | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    # The effective policy definition, e.g. {"dead-letter-exchange": "dlx"}.
    effective_policy: dict[str, Any] = field(default_factory=dict)
    consumer_details: tuple[Consumer, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """Slow-changing structure, collected less often than destinations."""

    vhosts: tuple[str, ...] = ()
    exchanges: tuple[Exchange, ...] = ()
    bindings: tuple[Binding, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    health: Health
    destinations: tuple[Destination, ...]
    topology: Topology | None = None  # None when not collected this time
    requests: int = 0  # calls made to the broker for this snapshot


@dataclass(frozen=True)
class Message:
    """One message as read from a broker, with what it takes to send it again."""

    body: bytes
    # The message_id property when set, else a fingerprint of body, headers and
    # properties: RabbitMQ messages carry no identity of their own.
    id: str
    # RabbitMQ: the exchange it was last published to. Kafka: the topic. NATS: the subject.
    exchange: str = ""
    # RabbitMQ: its routing key. Kafka: the key as text. NATS: the subject.
    routing_key: str = ""
    # content_type, content_encoding, delivery_mode, priority, correlation_id,
    # reply_to, expiration, message_id, timestamp (Unix s), type, user_id, app_id.
    properties: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    # Stream offset, Kafka offset or NATS sequence; None for a classic queue.
    position: int | None = None
    size: int = 0  # the whole body's size, even when `body` was truncated
    truncated: bool = False
    # What the reading session needs to settle it (a delivery tag); not data.
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Outgoing:
    """One message to send: the original, where it goes, and the headers it carries."""

    message: Message
    exchange: str  # RabbitMQ exchange ("" is the default exchange), Kafka topic, NATS subject
    routing_key: str
    headers: dict[str, Any]  # the complete set to send
    body: bytes | None = None  # None: the original body


@dataclass(frozen=True)
class Sent:
    """What the broker said of one Outgoing."""

    confirmed: bool  # the broker took responsibility for it (publisher confirm, PubAck, acks=all)
    routed: bool = True  # RabbitMQ: it reached at least one queue (mandatory, no basic.return)
    error: str = ""


@dataclass(frozen=True)
class Published:
    """The outcome of publishing one message from the UI or API."""

    confirmed: bool
    routed: bool
    # Where it landed, when the broker says: Kafka partition/offset, NATS stream/sequence.
    detail: dict[str, Any] = field(default_factory=dict)


class Transfer(Protocol):
    """A session taking messages out of one source: read, send with confirmation, then settle.

    Nothing leaves the source before the broker has confirmed its copy. Messages
    returned by `fetch` are held by the session until settled, kept or released;
    if the process dies, the broker gives held messages back to the source.
    """

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        """Up to `limit` messages from the head of the source; [] if none came within `timeout`."""
        ...

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        """Publish all of `batch` pipelined; return once every confirm (or return) has arrived."""
        ...

    def settle(self, messages: list[Message]) -> None:
        """Remove these from the source: they were sent and confirmed, or discarded on purpose."""
        ...

    def keep(self, messages: list[Message], headers: dict[str, Any]) -> None:
        """Leave these in the source, behind the messages not yet read, with `headers` added.

        Used for messages a job does not move (unselected, unroutable, refused),
        so that one pass over the source reads each message once.
        """
        ...

    def release(self, messages: list[Message]) -> None:
        """Give these back to the source unchanged, where they were (a cancelled job)."""
        ...

    def pending(self) -> int | None:
        """How many messages wait in the source now (None if the broker cannot say)."""
        ...

    def close(self) -> None: ...


# -- capabilities -------------------------------------------------------------
#
class Sender(Protocol):
    """A session publishing batches with confirmation, from no source of the broker's own
    (an import): `send` as a `Transfer`'s."""

    def send(self, batch: list[Outgoing]) -> list[Sent]: ...

    def close(self) -> None: ...


# One small protocol per thing a kind can do. Each adapter class implements
# those it has and names the others in `lacks`, with the reason; each kind's
# adapter module binds its class to every protocol it implements, so mypy
# fails when a kind drifts from one.
#
# Sources are Destination keys as the kind's monitor makes them:
#   RabbitMQ  "<vhost>/<queue>" ("//orders" for vhost "/")
#   Kafka     "topic/<topic>" (the bare topic name is taken too)
#   NATS      "stream/<stream>", "stream/<account>/<stream>" (the bare name too)
# Targets of `send`:
#   RabbitMQ  "<vhost>/<exchange>" ("//" for the default exchange of vhost "/")
#   Kafka     the topic, as above
#   NATS      the subject

CAPABILITIES = ("monitor", "browse", "publish", "transfer", "tail")


class Adapter(Protocol):
    """What the dashboard needs of a broker: monitoring ("monitor")."""

    def collect(self, topology: bool = False) -> Snapshot:
        """Read the broker's state; with `topology`, also its exchanges and bindings."""
        ...

    def close(self) -> None: ...


class Declared(Protocol):
    """Every adapter class: the capabilities it lacks, each with the reason ({} for none)."""

    lacks: ClassVar[dict[str, str]]


class Browse(Protocol):
    """Reading messages and leaving them where they are ("browse")."""

    def read(self, source: str, limit: int, truncate: int | None = None) -> list[Message]:
        """Up to `limit` messages from the head of `source` (a key), oldest first, left in place.

        Bodies longer than `truncate` bytes are cut (`Message.truncated`); None: whole.
        """
        ...


class Publish(Protocol):
    """Publishing one message, confirmed by the broker ("publish")."""

    def send(
        self, target: str, body: bytes, key: str = "", headers: dict[str, str] | None = None
    ) -> Published:
        """Publish `body` to `target` and wait for the broker's confirmation.

        `key`: RabbitMQ's routing key, Kafka's record key ("" for none); NATS
        has none and refuses one. Raises BrokerError if it cannot be sent.
        """
        ...


class Transfers(Protocol):
    """Moving messages out of a source: read, send confirmed, settle ("transfer")."""

    def open_transfer(self, source: str) -> Transfer:
        """A `Transfer` session over `source` (a key), from its head to its end when opened.

        Where the source is a log (Kafka, NATS), the session's cursor is kept
        in memory only: a session to resume after a crash is the kind's own.
        """
        ...


class TailReader(Protocol):
    """A live reader of one source, used from one thread: start, poll, close."""

    description: str  # what is read, for the page: "all 3 partitions, from the end"

    def start(self) -> None:
        """Connect and take position; BrokerError (retryable False: unknown source) if not."""
        ...

    def poll(self, timeout: float) -> list[Message]:
        """What arrived since the last call, waiting up to `timeout` s for something."""
        ...

    def close(self) -> None: ...


class Tail(Protocol):
    """Watching what arrives, live, without taking it from anyone ("tail")."""

    def open_tail(self, source: str, last: int = 0) -> TailReader:
        """A reader (not started) of `source` from its end, or from its `last` N messages.

        `source`: a key, or a subject filter for a subscription such as NATS's core one.
        """
        ...


# Short names to classes, imported on first use so that importing `brokers`
# does not import pika, kafka-python or nats-py.
ADAPTERS = {
    "rabbitmq": "brokers.rabbitmq.adapter.RabbitMQ",
    "kafka": "brokers.kafka.adapter.Kafka",
    "nats": "brokers.nats.adapter.Nats",
}

# Options each kind accepts, and which of them must be present.
OPTIONS: dict[str, dict[str, bool]] = {
    "rabbitmq": {
        "management_url": True,
        "amqp_url": False,
        "username": False,
        "password": False,
        "metrics_source": False,
        "prometheus_url": False,
    },
    "kafka": {
        "bootstrap_servers": True,
        "security_protocol": False,
        "sasl_mechanism": False,
        "sasl_username": False,
        "sasl_password": False,
    },
    "nats": {
        "url": False,
        "monitoring_url": True,
        "user": False,
        "password": False,
        "token": False,
    },
}


def adapter_class(kind: str) -> type:
    try:
        dotted = ADAPTERS[kind]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise BrokerError(
            f"unknown broker kind {kind!r} (known: {known})", retryable=False
        ) from None
    module, name = dotted.rsplit(".", 1)
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def lacks(kind: str) -> dict[str, str]:
    """The capabilities `kind` lacks, each with the reason; {} when it has them all."""
    declared = getattr(adapter_class(kind), "lacks", None)
    if not isinstance(declared, dict) or not set(declared) <= set(CAPABILITIES):
        raise TypeError(f"{ADAPTERS[kind]}.lacks must map names of CAPABILITIES to reasons")
    return dict(declared)


def connect(kind: str, options: dict[str, Any], timeout: float = 3.0) -> Adapter:
    """An adapter for a broker of `kind` configured by `options`."""
    adapter: Adapter = adapter_class(kind)(timeout=timeout, **options)
    return adapter
