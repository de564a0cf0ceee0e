"""Replays confirm before they acknowledge: every copy goes back where its message came from,
and a source gives up (a queue) or moves past (a log's cursor) only what the broker confirmed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from dashboard.models import Broker
from tests.contract.flow import collect, replay_here, run_here
from tests.contract.kinds import Copy, Registration

pytestmark = pytest.mark.django_db


LINEAGE = ("sluice-replay-id", "sluice-replayed-from", "sluice-replay-count", "sluice-replayed-by")


def lineage_of(copy: Copy) -> tuple[str, ...]:
    return tuple(copy.headers.get(name, "") for name in LINEAGE)


def test_a_replay_sends_each_message_back_where_it_came_from_with_its_lineage(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(6)
    collect(broker)
    previewed = api("POST", "/jobs", {**kind.replay(src), "dry_run": True})
    preview = previewed["preview"]
    assert (preview["selected"], preview["estimate"], preview["complete"]) == (6, 6, True)
    assert sorted(n for _, n in preview["targets"]) == [3, 3]  # one target per origin
    assert kind.source_bodies(src) == Counter(src.bodies)  # a preview takes nothing

    confirm = preview.get("confirm")
    api("POST", f"/jobs/{previewed['id']}/start", {"confirm": confirm} if confirm else None)
    job = run_here(api, previewed)
    assert [job[k] for k in ("state", "total", "done", "replayed", "kept", "failed")] == [
        "done", 6, 6, 6, 0, 0,
    ]  # fmt: skip
    copies = kind.copies(src)
    assert Counter(c.body for c in copies) == Counter(src.bodies)
    assert all(c.body in src.bound_for(c.origin) for c in copies), "a copy went elsewhere"
    lineage = (job["id"], f"{broker.name}:{src.key}", "1", "bob")
    assert {lineage_of(c) for c in copies} == {lineage}
    assert all(name in c.headers for c in copies for name in kind.own_headers)
    assert kind.count_source(src) == (0 if kind.drains else 6)
    outcomes = api("GET", f"/jobs/{job['id']}?outcomes=all")["outcomes"]
    assert sorted(o[0] for o in outcomes) == sorted(src.ids)
    assert {o[1] for o in outcomes} == {"replayed"}


def test_a_replay_takes_only_what_the_broker_confirmed_and_the_rest_goes_later(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(8, closed=[1])  # the second origin refuses every copy
    collect(broker)
    job = replay_here(api, kind.replay(src))
    assert (job["state"], job["done"], job["replayed"]) == ("done", 8, 4)
    assert job["kept"] + job["failed"] == 4
    kept = api("GET", f"/jobs/{job['id']}?outcomes=kept")["outcomes"]
    assert sorted(o[0] for o in kept) == sorted(src.ids[1::2])
    assert {o[1] for o in kept} == {kind.refused}
    assert kind.copy_bodies(src) == Counter(src.bound_for(0))  # confirmed, once each
    # What the broker refused is still in the source (a queue gave up only the rest).
    left = src.bound_for(1) if kind.drains else src.bodies
    assert kind.source_bodies(src) == Counter(left)

    kind.open(src, 1)
    again = replay_here(api, {**kind.replay(src), "selection": {"ids": src.ids[1::2]}})
    assert (again["state"], again["replayed"], again["failed"]) == ("done", 4, 0)
    assert kind.copy_bodies(src) == Counter(src.bodies)
    assert kind.count_source(src) == (0 if kind.drains else 8)
