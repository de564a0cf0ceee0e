"""A NATS redelivery storm ends once nothing awaits acknowledgement, though the server keeps
counting the messages it gave up on at max deliveries among the "redelivered" ones.

Collections are stamped STEP seconds apart, each followed by triage, as the
worker does; what the server says is real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from nats.js.api import AckPolicy

from dashboard.collection import collector
from dashboard.models import Broker, Destination, Incident
from dashboard.triage import evaluate as triage
from tests.app_fixtures import STEP, collect_at
from tests.nats_fixtures import JetStream, nak_round

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_broker(nats_broker: Broker) -> Iterator[None]:
    """No triage memory from an earlier Broker row with the same id (the cache outlives
    test databases), and an adapter of its own."""
    cache.delete(triage.memo_key(nats_broker))
    yield
    collector.forget_adapter(nats_broker)
    cache.delete(triage.memo_key(nats_broker))


def step(broker: Broker, at: float) -> triage.Outcome:
    collect_at(broker, at)
    broker.refresh_from_db()
    return triage.evaluate(broker, now=at)


def test_a_redelivery_storm_ends_when_all_that_stays_redelivered_was_given_up(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    stream = unique_name.upper()
    js.add_stream(stream, [f"{unique_name}.>"])
    js.add_consumer(stream, "payer", ack_policy=AckPolicy.EXPLICIT, max_deliver=2, ack_wait=30)
    key = f"consumer/{stream}/payer"
    nc = js.connect()

    async def round_of(publish: int, expect: int, ack: bool = False) -> None:
        """Publish, then take every one of the `expect` deliveries due and nak (or ack) it."""
        await nak_round(nc.jetstream(), f"{unique_name}.pay", stream, "payer", publish, expect, ack)

    def consumer() -> Destination:
        return Destination.objects.get(broker=nats_broker, key=key)

    t0 = time.time()
    js.run(round_of(3, 3))  # three delivered once, nak'd
    step(nats_broker, t0)
    js.run(round_of(3, 6))  # those three a second (and last) time, three new: nak'd
    step(nats_broker, t0 + STEP)
    js.run(round_of(3, 6))  # the second three a last time, three new: nak'd
    step(nats_broker, t0 + 2 * STEP)
    storm = Incident.objects.get(broker=nats_broker, cause="redelivery", key=key)
    assert storm.state == "open"

    # The client works again: it acknowledges the third three and new ones. The first and
    # second three were given up on; the server still counts them as redelivered.
    js.run(round_of(3, 6, ack=True))
    outcome = step(nats_broker, t0 + 3 * STEP)
    payer = consumer()
    assert payer.details["extra"]["num_redelivered"] == 6  # as at the collection before
    assert payer.in_flight == 0 and payer.backlog == 0
    storm.refresh_from_db()
    assert storm.state == "resolved" and storm in outcome.resolved
