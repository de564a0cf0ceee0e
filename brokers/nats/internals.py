"""The nats-py internals Sluice relies on, each behind one small name.

Checked on nats-py 2.16.x (2.16.0); pyproject.toml pins `nats-py>=2.16,<2.17`
so that an upgrade past that range is a deliberate step, with the NATS tests
run against it. The rest of `brokers.nats` uses nats-py's public API and these
names, never a private name or behaviour of its own.

Each internal, and why the public API does not do the job:

- `Client._process_headers`, overridden by `Client` here: nats-py parses a
  message's header block into a dict, so `A: 1`, `A: 2` arrive as {"A": "2"};
  this private coroutine is the only place that sees the raw block, and the
  override attaches every pair as it came (read back by
  `brokers.nats.wire.pairs_of`).
- `Client._server_info`, the INFO the server sent: its "version" as sent. The
  public `connected_server_version` parses it strictly as semantic version and
  raises ValueError on anything else, where a major.minor prefix is all a
  feature check needs.
- That publishing only iterates the headers' `.items()` (core publish,
  request, and JetStream's `publish_async` without `stream` or `msg_ttl`,
  which would add to them): `outgoing` hands it pairs in a list, so repeated
  names go out as given; a dict, as the API is typed, would fold them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from nats.aio.client import Client as _NatsPy

from brokers.nats.wire import header_pairs


class _HeaderDict(dict[str, str]):
    """nats-py's header dict, plus every pair as sent (`pairs`)."""

    pairs: tuple[tuple[str, bytes], ...] = ()


class Client(_NatsPy):
    """nats-py's client, keeping repeated header names (see the module docstring)."""

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        parsed = await super()._process_headers(headers)
        if parsed is None or not headers:
            return parsed
        kept = _HeaderDict(parsed)
        kept.pairs = header_pairs(bytes(headers))
        return kept


def server_version(nc: _NatsPy) -> str:
    """The version the connected server announced, as sent; "0" before connecting."""
    return str(nc._server_info.get("version", "0"))


class _Outgoing:
    """Headers for nats-py, which only iterates `.items()`: a list keeps repeated names."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __bool__(self) -> bool:
        return bool(self._pairs)


def outgoing(headers: Sequence[tuple[str, str]]) -> Any:
    """`headers` as nats-py's publish and request take them; None for none."""
    return _Outgoing(headers) if headers else None
