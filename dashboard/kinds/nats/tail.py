"""The live tail for NATS: a core subscription to a subject, wildcards allowed.

    browser ── ws/nats/tail/<broker>?subject=orders.> ──► NatsTailConsumer (dashboard.live.tail)
                                                            │ the socket's thread
                                                            ▼
                                              NatsReader: a NatsClient of its own,
                                              one subscription, closed with the socket

Core NATS keeps nothing and acknowledges nothing: the tail sees what is
published while it runs, on any subject the filter matches (messages that a
stream also stores included, without their sequence). Subscribing changes
nothing for other subscribers, so viewers may watch. Rows show the time the
message reached Sluice, since core messages carry no timestamp.

NATS's own subjects (the JetStream API and acknowledgements, cluster internals,
the system account: `INTERNAL_PREFIXES`, the ones publishing refuses) are not
tailed: a filter naming them is refused, and a wildcard filter such as `>`,
which matches them too, leaves them out.

A flood is bounded twice: the reader keeps at most MAX_PENDING messages
between two polls (more are counted in `dropped` but not shown or rated), and
the consumer sends at most MAX_ROWS_PER_SECOND rows a second, sampling above.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from brokers.base import BrokerError
from brokers.nats.client import BadSubject, Delivery, NatsClient, check_subject
from dashboard.kinds.nats.connect import nats_client
from dashboard.kinds.nats.views.publish import INTERNAL_PREFIXES
from dashboard.live.tail import (
    CHECK_SECONDS,
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    PREVIEW_BYTES,
    Reader,
    Record,
    Refused,
    TailConsumer,
)
from dashboard.models import Broker

MAX_PENDING = 50_000  # messages held between two polls (a poll comes every 0.25 s)
TEMPLATE = "dashboard/nats/tail.html"


class NatsReader:
    """One core subscription on a connection of its own; messages queue up between polls."""

    def __init__(self, broker: Broker, subject: str) -> None:
        self.broker = broker
        self.subject = subject
        self.description = ""
        self.dropped = 0  # messages that came while MAX_PENDING were waiting
        self._client: NatsClient | None = None
        self._lock = threading.Lock()
        self._waiting: list[Record] = []
        self._arrived = threading.Event()

    def start(self) -> None:
        # Pings every CHECK_SECONDS: a server that went silent is noticed, not waited for.
        self._client = nats_client(
            self.broker, name="sluice-tail", ping_interval=int(CHECK_SECONDS)
        )
        try:
            self._client.subscribe(self.subject, self._deliver)
        except BrokerError:
            self.close()
            raise
        self.description = f"{self.subject} over core NATS, from now on"

    def _deliver(self, d: Delivery) -> None:
        """On the client's thread, for each message: keep a preview for the next poll."""
        if d.subject.startswith(INTERNAL_PREFIXES):
            return  # a wildcard filter's match among NATS's own subjects
        record = Record(
            body=d.body[:PREVIEW_BYTES],
            size=len(d.body),
            subject=d.subject,
            timestamp=d.received,
            # The reply subject (a request's inbox) takes the key's place in a row.
            key=d.reply.encode() if d.reply else None,
            headers=tuple((name, value[:PREVIEW_BYTES]) for name, value in d.headers),
        )
        with self._lock:
            if len(self._waiting) < MAX_PENDING:
                self._waiting.append(record)
            else:
                self.dropped += 1
            self._arrived.set()

    def poll(self, timeout: float) -> list[Record]:
        self._arrived.wait(timeout)
        with self._lock:
            got, self._waiting = self._waiting, []
            self._arrived.clear()
        client = self._client
        if not got and (client is None or not client.connected):
            reason = client.last_error if client else "not started"
            raise BrokerError(f"Lost the NATS server while reading {self.subject}: {reason}")
        return got

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class NatsTailConsumer(TailConsumer):
    """The tail's websocket for a NATS subject: ?subject= names it."""

    template = TEMPLATE

    def make_reader(self, kwargs: Mapping[str, str], query: Mapping[str, str]) -> Reader:
        name = kwargs["broker"]
        broker = Broker.objects.filter(name=name, enabled=True).first()
        if broker is None:
            raise Refused(f"There is no broker {name!r}.", CLOSE_NOT_FOUND)
        if broker.kind != "nats":
            raise Refused(f"{name} is not a NATS broker.", CLOSE_NOT_FOUND)
        try:
            subject = check_subject((query.get("subject") or "").strip(), wildcards=True)
        except BadSubject as exc:
            raise Refused(f"Cannot tail that subject: {exc}.", CLOSE_BAD_REQUEST) from None
        if subject.startswith(INTERNAL_PREFIXES):
            raise Refused(
                f"Cannot tail {subject.split('.')[0]}. subjects: they are NATS's own (the "
                "JetStream API, acknowledgements, the system account).",
                CLOSE_BAD_REQUEST,
            )
        return NatsReader(broker, subject)
