"""What every kind's registration provides (`Registration`), and what it hands the tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from brokers.base import adapter_class

BULK = 1000  # above this many messages a source is filled the fast way


@dataclass
class Source:
    """A dead-letter source a registration made: message n has bodies[n] and ids[n]."""

    key: str  # the Destination key a job names as its source
    bodies: list[bytes]
    ids: list[str]  # as browse shows them and a job selects them
    names: dict[str, Any] = field(default_factory=dict)  # the kind's queues, topics, streams

    def bound_for(self, origin: int) -> list[bytes]:
        """The bodies of the messages that came from `origin`."""
        return [body for n, body in enumerate(self.bodies) if n % 2 == origin]


@dataclass(frozen=True)
class Copy:
    """A message read back: a copy found in an origin (0, 1), or one still in the source (-1)."""

    origin: int
    body: bytes
    headers: dict[str, str]


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Registration:
    """What every registration provides; subclasses fill in one kind each."""

    name: ClassVar[str]  # the kind's short name (brokers.base.ADAPTERS)
    broker_name: ClassVar[str]  # the Broker row's name, in the tests and in the stack
    service: ClassVar[str]  # the session fixture with the broker's connection details
    drains: ClassVar[bool]  # whether a plain replay takes each original off its source
    refused: ClassVar[str]  # the outcome recorded for a copy the broker refused
    own_headers: ClassVar[tuple[str, ...]]  # headers every message has, which travel with it
    removing: ClassVar[dict[str, Any]] = {}  # fields that make a replay remove its originals
    kill_count: ClassVar[int]  # messages of the kill -9 test
    drops_resent_copies: ClassVar[bool] = False  # the target drops a copy sent twice
    seeks_ids: ClassVar[bool] = False  # a job over ids reads only where they lie
    cannot: ClassVar[dict[str, str]] = {}  # contract items the kind cannot do, and why

    def __init__(self, services: dict[str, str], unique: str) -> None:
        self.services = services
        self.unique = unique
        self._made = 0

    def fresh(self) -> str:
        """A name no other source of this test or any other uses."""
        self._made += 1
        return f"{self.unique}x{self._made}"

    def require(self, need: str) -> None:
        """Skip the test, saying why, when the kind lacks `need` or cannot do it."""
        lacking = getattr(adapter_class(self.name), "lacks", {})
        if need in lacking:
            pytest.skip(f"{self.name} lacks {need}: {lacking[need]}")
        if need in self.cannot:
            pytest.skip(f"{self.name} cannot {need}: {self.cannot[need]}")

    def replay(self, src: Source) -> dict[str, Any]:
        """The request body of a replay of every message of `src` back to its origin."""
        return {"broker": self.broker_name, "action": "replay", "source": src.key}

    @staticmethod
    def make_bodies(u: str, count: int) -> list[bytes]:
        if count > BULK:  # 200 bytes each, as a real payload would be
            return [f"{u}-{n:06d}".encode().ljust(200, b".") for n in range(count)]
        return [f'{{"n": {n}, "source": "{u}"}}'.encode() for n in range(count)]

    def copy_bodies(self, src: Source) -> Counter[bytes]:
        return Counter(c.body for c in self.copies(src))

    def source_bodies(self, src: Source) -> Counter[bytes]:
        return Counter(c.body for c in self.source_messages(src))

    def collected_count(self, dest: Any) -> int:
        """How many messages a collected Destination row says the source holds."""
        return int(dest.backlog)

    # Each registration's own.
    def options(self) -> dict[str, str]:
        raise NotImplementedError

    def unreachable_options(self, port: int) -> dict[str, str]:
        raise NotImplementedError

    def dead_letters(self, count: int, closed: Iterable[int] = ()) -> Source:
        raise NotImplementedError

    def open(self, src: Source, origin: int) -> None:
        raise NotImplementedError

    def count_source(self, src: Source) -> int:
        raise NotImplementedError

    def source_messages(self, src: Source) -> list[Copy]:
        """What the source holds now (origin -1), read by the test's own client."""
        raise NotImplementedError

    def copies(self, src: Source) -> list[Copy]:
        """What reached the origins, read by the test's own client."""
        raise NotImplementedError

    def publish_request(self, src: Source, body: str, headers: dict[str, str]) -> dict[str, Any]:
        """A POST /api/v1/brokers/<name>/publish body that lands in the source itself."""
        raise NotImplementedError

    def bad_requests(self, src: Source) -> list[tuple[dict[str, Any], str]]:
        """Job requests this kind refuses, each with words of the refusal."""
        raise NotImplementedError

    def import_to(self, src: Source, origin: int) -> dict[str, str]:
        """Query parameters of POST /api/v1/brokers/<name>/import that publish into `origin`."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
