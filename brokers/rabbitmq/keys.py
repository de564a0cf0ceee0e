"""Destination keys and publish targets ("<vhost>/<name>") back into a vhost and a name.

A queue's key is f"{vhost}/{name}" (`monitor._destination`): "//orders" is
queue "orders" of vhost "/". Vhosts and names may both hold "/", so a key with
several of them can be split more than one way; the broker's vhosts then
decide (one management API request), the shortest existing vhost first.
"""

from __future__ import annotations

from brokers.base import BrokerError
from brokers.rabbitmq.management import ManagementAPI, quote_path


def splits(key: str, empty_name: bool = False) -> list[tuple[str, str]]:
    """Every (vhost, name) that `key` can mean, the shortest vhost first."""
    return [
        (key[:i], key[i + 1 :])
        for i, c in enumerate(key)
        if c == "/" and i > 0 and (empty_name or i + 1 < len(key))
    ]


def locate(api: ManagementAPI, key: str, what: str, empty_name: bool = False) -> tuple[str, str]:
    """(vhost, name) of `key`; BrokerError when it names no vhost of this broker."""
    found = splits(key, empty_name)
    if len(found) > 1:
        vhosts = {v["name"] for v in api.paged("/api/vhosts", "name")}
        found = [(vhost, name) for vhost, name in found if vhost in vhosts]
    if not found:
        raise BrokerError(f"{key!r} is not <vhost>/<{what}> on this broker", retryable=False)
    return found[0]


def queue(api: ManagementAPI, key: str) -> tuple[str, str, str]:
    """(vhost, name, type) of the queue `key` names; BrokerError if there is none."""
    vhost, name = locate(api, key, "queue")
    info = api.get("/api/queues" + quote_path(vhost, name), {"columns": "type"})
    return vhost, name, str(info.get("type") or "classic")
