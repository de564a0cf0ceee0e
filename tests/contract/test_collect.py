"""Collection: a broker's collection shows what was made at it; a broker that cannot be
reached raises `BrokerError` from its adapter and shows as down, never as a 500."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import pytest

from brokers.base import BrokerError, connect
from dashboard.models import Broker, Destination
from tests.app_fixtures import closed_port, wait_for
from tests.contract.flow import collect, run_here, start_job
from tests.contract.kinds import Registration

pytestmark = pytest.mark.django_db


def test_a_collection_lists_the_destinations_made_at_the_broker(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("monitor")
    src = kind.dead_letters(3)

    def seen() -> Destination | None:
        collect(broker)
        dest = Destination.objects.filter(broker=broker, key=src.key).first()
        return dest if dest is not None and kind.collected_count(dest) == 3 else None

    # RabbitMQ's management statistics lag the queue by up to their interval.
    dest = wait_for(seen, timeout=30, every=0.5)
    assert dest.gone_since is None
    assert (broker.status, broker.error, broker.down_since) == ("up", "", None)
    assert broker.last_ok is not None
    listed = api("GET", f"/brokers/{broker.name}/destinations?q={dest.name}")["destinations"]
    assert src.key in [d["key"] for d in listed]
    shown = {b["name"]: b for b in api("GET", "/brokers")["brokers"]}
    assert (shown[broker.name]["kind"], shown[broker.name]["status"]) == (kind.name, "up")


def test_an_unreachable_broker_raises_broker_error_and_shows_as_down_until_it_answers(
    kind: Registration, broker: Broker, api: Any, client_for: Any, settings: Any
) -> None:
    kind.require("monitor")
    settings.SLUICE_BROKER_TIMEOUT = 1.0  # a refused connection is known at once anyway
    port = closed_port()
    adapter = connect(kind.name, kind.unreachable_options(port), timeout=1.0)
    with pytest.raises(BrokerError) as caught:
        adapter.collect()
    adapter.close()
    message = caught.value.message
    assert "cannot reach" in message and str(port) in message and "refused" in message
    assert caught.value.retryable

    gone = Broker.objects.create(
        name=f"gone-{kind.name}", kind=kind.name, options=kind.unreachable_options(port)
    )
    collect(gone)
    assert (gone.status, gone.error) == ("down", message)
    first_down = gone.down_since
    assert first_down is not None
    assert collect(broker).status == "up"  # one broker down stops no other
    assert collect(gone).down_since == first_down  # down since the first failure

    carol = client_for("carol")
    for page in ("/", f"/brokers/{gone.name}/", f"/brokers/{broker.name}/"):
        assert carol.get(page).status_code == 200, page
    overview = carol.get("/").content.decode()
    assert "Unreachable since" in overview and html.escape(message) in overview
    shown = {b["name"]: b for b in api("GET", "/brokers")["brokers"]}
    assert (shown[gone.name]["status"], shown[gone.name]["error"]) == ("down", message)
    assert shown[broker.name]["status"] == "up"

    # Someone fixes it; the next collection sees it up, all by itself.
    Broker.objects.filter(pk=gone.pk).update(options=kind.options())
    assert (collect(gone).status, gone.error, gone.down_since) == ("up", "", None)


def test_a_job_whose_broker_went_away_fails_moves_nothing_and_resumes_once_it_is_back(
    kind: Registration, broker: Broker, api: Any, settings: Any
) -> None:
    kind.require("transfer")
    settings.SLUICE_BROKER_TIMEOUT = 1.0
    src = kind.dead_letters(4)
    collect(broker)
    job = start_job(api, kind.replay(src))
    Broker.objects.filter(pk=broker.pk).update(options=kind.unreachable_options(closed_port()))
    failed = run_here(api, job)
    assert failed["state"] == "failed" and "could not open the source" in failed["error"]
    assert (failed["done"], failed["replayed"]) == (0, 0)
    assert kind.count_source(src) == 4 and kind.copies(src) == []

    Broker.objects.filter(pk=broker.pk).update(options=kind.options())
    api("POST", f"/jobs/{job['id']}/resume")
    done = run_here(api, job)
    assert (done["state"], done["done"], done["replayed"]) == ("done", 4, 4)
    assert kind.copy_bodies(src) == Counter(src.bodies)
