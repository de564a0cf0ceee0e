"""Bad job requests change nothing: each is refused with 400 saying what is wrong, no job is
made and no message moves. A replay that removes its originals starts only from a preview
whose confirmation is sent back; one that removes nothing may start at once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from dashboard.models import Broker, Job
from tests.contract.flow import collect, run_here
from tests.contract.kinds import Registration, Source

pytestmark = pytest.mark.django_db


def every_kind_refuses(src: Source) -> list[tuple[dict[str, Any], str]]:
    one = src.ids[0]
    return [
        ({"action": "explode"}, "action must be one of"),
        ({"action": "move"}, "needs a destination"),
        ({"selection": {"ids": []}}, "non-empty list"),
        ({"selection": {"filter": {"colour": "red"}}}, "unknown filter field"),
        ({"rate": -1}, "rate must be"),
        ({"batch_size": 0}, "batch_size must be"),
        (
            {"selection": {"ids": [one]}, "edit": {"id": one, "headers": {"x-death": []}}},
            "cannot be edited",
        ),
        ({"edit": {"id": one, "body_base64": "eA=="}}, "select exactly that message"),
        ({"broker": "no-such-broker"}, "no broker named"),
    ]


def test_bad_job_requests_are_refused_and_change_nothing(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(2)
    collect(broker)
    for n, (change, says) in enumerate(every_kind_refuses(src) + kind.bad_requests(src)):
        # Refused before any look at the source, with or without a preview asked for.
        body = {**kind.replay(src), **change, "dry_run": n % 2 == 1}
        response = api.raw("POST", "/jobs", body)
        assert response.status_code == 400, (change, response.content)
        assert says in response.json()["error"], (change, response.json())
    assert api.raw("POST", "/jobs", "{not json").status_code == 400
    assert Job.objects.count() == 0
    assert kind.source_bodies(src) == Counter(src.bodies)
    assert kind.copies(src) == []


def test_a_replay_that_removes_its_originals_starts_only_from_a_confirmed_preview(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    kind.require("remove originals")
    src = kind.dead_letters(4)
    collect(broker)
    body = {**kind.replay(src), **kind.removing}
    refused = api.raw("POST", "/jobs", body)
    assert refused.status_code == 409 and '"dry_run": true' in refused.json()["error"]
    assert Job.objects.count() == 0

    job = api("POST", "/jobs", {**body, "dry_run": True})
    confirm = job["preview"]["confirm"]
    assert (job["preview"]["selected"], confirm) == (4, f"replay 4 from {src.key}")
    start = f"/jobs/{job['id']}/start"
    unconfirmed = api.raw("POST", start)
    assert (
        unconfirmed.status_code == 409
        and f'{{"confirm": "{confirm}"}}' in unconfirmed.json()["error"]
    )
    wrong = api.raw("POST", start, {"confirm": "replay 1 from x"})
    assert wrong.status_code == 409 and "got 'replay 1 from x'" in wrong.json()["error"]
    assert api("GET", f"/jobs/{job['id']}")["state"] == "preview"
    assert kind.source_bodies(src) == Counter(src.bodies) and kind.copies(src) == []

    assert api("POST", start, {"confirm": confirm})["state"] == "queued"
    done = run_here(api, job)
    assert (done["state"], done["replayed"]) == ("done", 4)
    assert kind.copy_bodies(src) == Counter(src.bodies)
    assert kind.count_source(src) == 0  # each original went once its copy was confirmed


def test_a_replay_that_removes_nothing_may_start_at_once(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    kind.require("keep originals")
    src = kind.dead_letters(2)
    collect(broker)
    created = api.raw("POST", "/jobs", kind.replay(src))
    assert created.status_code == 201, created.content
    job = created.json()
    assert job["state"] == "queued" and "confirm" not in (job["preview"] or {})
    done = run_here(api, job)
    assert (done["state"], done["replayed"]) == ("done", 2)
    assert kind.source_bodies(src) == Counter(src.bodies)
