"""The demo's incident episodes: trouble made on purpose, one at a time, and healed.

`make run`'s demo traffic (dashboard/demo.py) is healthy on its own. Every
`--incidents-every` seconds (0: never) it plays the next episode of EPISODES
whose kind of broker it has, for the episode's length, and logs its start
and end. The broker runners read `Trouble` on every turn and misbehave while
their episode plays; when it ends they behave again, so whatever incident an
episode opens in Sluice resolves by itself a collection or a window later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import cycle
from typing import Any

log = logging.getLogger("sluice.demo")


@dataclass(frozen=True)
class Episode:
    name: str  # what the runners look for in Trouble
    kind: str  # the kind of broker that plays it
    where: str  # the destination it troubles, as the log names it
    seconds: float
    what: str  # what happens, in the log's words
    incident: str  # the cause of the incident it opens in Sluice


EPISODES = (
    Episode(
        "consumer lost", "rabbitmq", "shipments", 60,
        "its consumer goes away while orders keep arriving", "consumers_lost",
    ),
    Episode(
        "stalled group", "kafka", "billing", 100,
        "the group stays joined but stops committing", "stalled",
    ),
    Episode(
        "max deliveries", "nats", "PAYMENTS › charger", 60,
        "the charger refuses every third payment until it reaches max deliveries",
        "dead_letters",
    ),
    Episode(
        "poison payments", "rabbitmq", "payments.dlq", 30,
        "half the payments fail twice and are dead-lettered", "dead_letters",
    ),
    Episode(
        "slow worker", "rabbitmq", "invoices", 90,
        "the invoice worker slows below the rate invoices arrive at", "backlog_growing",
    ),
    Episode(
        "poison records", "kafka", "payments.events.DLT", 30,
        "half the payment records fail and go to the dead-letter topic", "dead_letters",
    ),
)  # fmt: skip


class Trouble:
    """The names of the episodes playing now, read by the broker runners on every turn."""

    def __init__(self) -> None:
        self._playing: set[str] = set()
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        with self._lock:
            self._playing.add(name)

    def end(self, name: str) -> None:
        with self._lock:
            self._playing.discard(name)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._playing


def cast(
    brokers: Iterable[dict[str, Any]], episodes: Iterable[Episode] = EPISODES
) -> list[Episode]:
    """The episodes that the configured brokers can play, in their turn."""
    kinds = {b.get("kind") for b in brokers}
    return [e for e in episodes if e.kind in kinds]


def play(
    brokers: list[dict[str, Any]],
    every: float,
    trouble: Trouble,
    stop: threading.Event,
    episodes: Iterable[Episode] = EPISODES,
) -> None:
    """Until `stop`, start an episode every `every` seconds, the next one after the last has
    ended; the first `every` seconds after the start. Nothing when `every` is 0."""
    playing = cast(brokers, episodes)
    if every <= 0 or not playing:
        return
    started = time.monotonic()
    for episode in cycle(playing):
        if stop.wait(max(0.0, started + every - time.monotonic())):
            return
        started = time.monotonic()
        names = ", ".join(b["name"] for b in brokers if b.get("kind") == episode.kind)
        where = f"{names} {episode.where}"
        log.info(
            "demo: incident episode %r on %s for %s s: %s",
            *(episode.name, where, f"{episode.seconds:g}", episode.what),
        )
        trouble.start(episode.name)
        try:
            stop.wait(episode.seconds)
        finally:
            trouble.end(episode.name)
        log.info("demo: incident episode %r on %s is over", episode.name, where)
