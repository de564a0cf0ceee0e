"""The kafka-python internals Sluice relies on, each behind one small function.

Checked on kafka-python 3.0.x (3.0.12); pyproject.toml pins `kafka-python>=3.0,<3.1`
so that an upgrade past that range is a deliberate step, with the Kafka tests
run against it. The rest of `brokers.kafka` uses kafka-python's public API and
these functions, never a private name of its own.

Each internal, and why the public API does not do the job:

- A client's connection manager, `_manager` (a producer's is
  `_sender._client._manager`). Every request of a collection, a scan and a
  batch produce goes through it:
    - `run` runs a coroutine on the client's IO thread and waits for it, and
      `call_soon` starts one from another thread without waiting; the public
      calls send one request after another, and DescribeGroups only as v3+;
    - `send` sends one prepared request to a node (or the least loaded one);
      no public call sends a request we built (raw Fetch, batched Produce,
      DescribeGroups at the version we pick);
    - `cluster` is the client's ClusterMetadata, for routing to brokers and
      partition leaders and for its cached group coordinators;
    - `broker_version`, the Kafka release the broker's API versions match;
    - `config`, where the connect timeout lives: no constructor takes
      `socket_connection_setup_timeout_ms` (10 s, doubling to 30 s), which
      bounds connecting to every broker after the bootstrap one.
- `KafkaAdminClient._find_coordinator_ids`: the coordinators of many groups,
  found with one batched FindCoordinator and cached; the public calls look
  them up one group at a time.
- A v2 record batch's `_maybe_uncompress()` and `_buffer`: the decompressed
  records' bytes, which the search's filters rule a whole batch out on before
  any record is decoded; iterating the batch is the only public way in.
- `KafkaNetClient` with `NetworkSelector` (kafka.net), given through the
  documented `kafka_client` option: holding the selector is the only way to
  stop the IO thread of a client whose constructor failed to bootstrap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kafka.errors as errors
from kafka.net.compat import KafkaNetClient
from kafka.net.selector import NetworkSelector


def manager_of(client: Any) -> Any:
    """The connection manager of an admin client, consumer or producer."""
    manager = getattr(client, "_manager", None)
    return manager if manager is not None else client._sender._client._manager


def run_on_io_thread(client: Any, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run the coroutine function `fn(*args)` on the client's IO thread; its result."""
    return manager_of(client).run(fn, *args)


def send(client: Any, request: Any, node: int | None = None) -> Any:
    """Send `request` to `node` (any broker if None); awaitable on the client's IO thread."""
    return manager_of(client).send(request, node)


def send_soon(client: Any, request: Any, node: int) -> Any:
    """Send `request` to `node` from another thread; a kafka Future of the answer."""
    manager = manager_of(client)
    return manager.call_soon(manager.send, request, node)


def send_and_wait(client: Any, request: Any, node: int) -> Any:
    """Send `request` to `node` and wait for its answer, from outside the IO thread."""
    manager = manager_of(client)
    return manager.run(manager.send, request, node)


def cluster_of(client: Any) -> Any:
    """The client's ClusterMetadata: brokers, partition leaders and group coordinators."""
    return manager_of(client).cluster


def broker_version(admin: Any) -> tuple[int, ...]:
    """The Kafka release the broker's API versions match; () before bootstrapping."""
    return tuple(manager_of(admin).broker_version or ())


def find_coordinator_ids(admin: Any, group_ids: list[str]) -> Awaitable[dict[str, int]]:
    """Each group's coordinator node id; awaitable on the admin client's IO thread."""
    found: Awaitable[dict[str, int]] = admin._find_coordinator_ids(group_ids)
    return found


def coordinator_ids(admin: Any, group_ids: list[str]) -> dict[str, int]:
    """Each group's coordinator node id, from outside the IO thread."""
    found: dict[str, int] = manager_of(admin).run(admin._find_coordinator_ids, group_ids)
    return found


def set_connect_timeout(client: Any, timeout_ms: int) -> None:
    """Bound connecting to each broker by `timeout_ms`, retries included."""
    manager_of(client).config.update(
        socket_connection_setup_timeout_ms=timeout_ms,
        socket_connection_setup_timeout_max_ms=timeout_ms,
    )


def decompressed(batch: Any) -> bytearray:
    """The bytes of a v2 record batch's records, decompressed."""
    batch._maybe_uncompress()
    raw: bytearray = batch._buffer
    return raw


def build(cls: Any, **config: Any) -> Any:
    """`cls(**config)`, a kafka-python client that leaves no thread behind when it cannot bootstrap."""
    selectors: list[Any] = []

    def network_client(**configs: Any) -> Any:
        # The constructors start an IO thread, then bootstrap, and keep the
        # thread running when bootstrapping fails: a collector retrying a
        # dead broker would gain one thread per attempt. Holding the
        # selector lets us stop it.
        selector = NetworkSelector(**configs)
        selectors.append(selector)
        return KafkaNetClient(net=selector, **configs)

    try:
        return cls(kafka_client=network_client, **config)
    except errors.KafkaError:
        for selector in selectors:
            selector.close()
        raise
