"""Broker access for Sluice: one package per broker kind behind the interface in `base`.

Importing this package imports no broker client library; adapters are loaded
on first use through `brokers.base.connect`.
"""

from brokers.base import BrokerError, connect

__all__ = ["BrokerError", "connect"]
