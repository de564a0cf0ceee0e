"""A triage scene played in real time: noise through a warm-up, then incidents started at once.

Every kind's scenario test (tests/<kind>/test_triage_scenario.py) sets its scene
on a real broker and plays it here. A collection and its triage run every
INTERVAL seconds, as SLUICE_INTERVAL's default. Nothing in the scene may open
during the warm-up, and the noise never. After the start, each incident must
be open within two collections of becoming detectable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from dashboard.collection.statuswindow import MIN_SPAN_SECONDS, window_since
from dashboard.models import Incident
from tests.app_fixtures import collect_and_triage

INTERVAL = 5  # seconds between collections
WARM_UP = 35
WINDOW = -window_since(0, INTERVAL)  # the seconds of samples the detectors judge

# How long after the start an incident takes to become detectable.
AT_ONCE = 0.0  # at the first collection after it began
TWICE = INTERVAL  # found rising two collections in a row
TREND = MIN_SPAN_SECONDS + INTERVAL  # the window long enough to show a trend
STANDSTILL = WINDOW  # the whole window showing no progress

Place = tuple[str, str]  # (cause, destination key)


@dataclass
class Scene:
    broker: Any
    # Other tests' destinations share the broker: only these incidents belong to the scene.
    in_scene: Callable[[Incident], bool]
    noise: Collection[str]  # destination keys that must never open an incident
    # Each incident the scene starts, with the seconds it needs to become detectable.
    trouble: dict[Place, float]
    # Incidents that may open too, as a consequence of the trouble; None: any but the noise.
    also: Collection[Place] | None = None
    opened_at: dict[Place, float] = field(default_factory=dict)
    began: float = 0.0

    def play(self, begin: Callable[[], None], tick: Callable[[], None] = lambda: None) -> None:
        """Collect and triage every INTERVAL s; call `begin` once WARM_UP is over and `tick`
        before every collection; return once every incident of the scene is open."""
        start = time.time()
        limit = WARM_UP + max(self.trouble.values()) + 4 * INTERVAL
        while True:
            now = time.time()
            if not self.began and now - start >= WARM_UP:
                self.began = now
                begin()
            tick()
            for incident in filter(self.in_scene, collect_and_triage(self.broker, now).opened):
                place = (incident.cause, incident.key)
                assert incident.key not in self.noise, (place, incident.summary)
                if self.also is not None:
                    assert place in self.trouble or place in self.also, (place, incident.summary)
                self.opened_at.setdefault(place, now)
            if self.began and set(self.trouble) <= set(self.opened_at):
                break
            assert now - start < limit, (
                f"not all open after {now - start:.0f} s: {sorted(self.opened_at)}"
            )
            if not self.began:
                assert not self.opened_at, f"during the warm-up: {sorted(self.opened_at)}"
            time.sleep(max(0.0, INTERVAL - (time.time() - now)))

        for place, needs in self.trouble.items():
            late = self.opened_at[place] - self.began
            assert late <= 2 * INTERVAL + needs + 1, (place, late)


def on_fire(page: str) -> str:
    """The On fire section of the overview's HTML."""
    begin = page.index('id="on-fire"')
    return page[begin : page.index("</section>", begin)]
