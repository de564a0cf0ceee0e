"""A `NatsClient` for a Broker row: its options with `${VAR}`s expanded, Sluice's timeout.

One client per use (a page, a request, a tail): connecting takes a
round trip, and a client of its own is closed with certainty when the
use ends. `brokers.nats.client` knows nothing of Django; this is the bridge.
"""

from __future__ import annotations

from typing import TypeVar, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from brokers.base import BrokerError
from brokers.nats.client import NatsClient
from dashboard.config import connect_options
from dashboard.models import Broker

Client = TypeVar("Client", bound=NatsClient)


@overload
def nats_client(
    broker: Broker, name: str = ..., ping_interval: int = ..., *, timeout: float | None = ...
) -> NatsClient: ...


@overload
def nats_client(
    broker: Broker,
    name: str = ...,
    ping_interval: int = ...,
    *,
    cls: type[Client],
    timeout: float | None = ...,
) -> Client: ...


def nats_client(
    broker: Broker,
    name: str = "sluice",
    ping_interval: int = 20,
    cls: type[NatsClient] = NatsClient,
    timeout: float | None = None,
) -> NatsClient:
    """A connected client for `broker` (a NATS one), of `cls` (a NatsClient or one
    that extends it); BrokerError if it cannot be made. `timeout`, when shorter
    than SLUICE_BROKER_TIMEOUT, bounds each request (and connection attempt)."""
    if broker.kind != "nats":
        raise BrokerError(f"{broker.name} is not a NATS broker", retryable=False)
    try:
        options = connect_options(broker)
    except ImproperlyConfigured as exc:  # a ${VAR} that is not set, or not allowed
        raise BrokerError(str(exc), retryable=False) from None
    return cls(
        options,
        timeout=min(settings.SLUICE_BROKER_TIMEOUT, timeout or settings.SLUICE_BROKER_TIMEOUT),
        name=name,
        ping_interval=ping_interval,
    )
