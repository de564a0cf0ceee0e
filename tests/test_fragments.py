"""Pages share one rendering of their live part per change (dashboard/live/fragments.py).

The rows come from a real collection of the real RabbitMQ; the collection's own
writes are bulk writes, so the worker's `changed` call is what moves pages on.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard.collection import collector
from dashboard.live import fragments
from dashboard.models import Broker, Destination, Incident
from dashboard.triage import evaluate as triage
from tests.app_fixtures import closed_port

pytestmark = pytest.mark.django_db


def listing_queries(client, path: str) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as queries:
        page = client.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    return html, sum('"dashboard_destination"' in q["sql"] for q in queries.captured_queries)


def test_a_second_look_reuses_the_rendering_until_a_collection_moves_it_on(
    client_for, rabbit_broker, amqp, unique_name
):
    amqp.queue_declare(unique_name)
    assert collector.collect(rabbit_broker), rabbit_broker.error
    fragments.changed(rabbit_broker.name)
    carol, bob = client_for("carol"), client_for("bob")
    for path in ("/", f"/brokers/{rabbit_broker.name}/"):
        first, reads = listing_queries(carol, path)
        assert reads > 0 and unique_name in first
        again, reads_again = listing_queries(bob, path)  # another person, the same view
        assert reads_again == 0, "the listing was computed again for a second viewer"
        assert unique_name in again and fragments.CSRF_MARK not in again

    # A bulk write (as a collection's) shows once the worker says the pages changed.
    Destination.objects.filter(broker=rabbit_broker, name=unique_name).update(backlog=4242)
    assert "4,242" not in listing_queries(carol, "/")[0]
    fragments.changed(rabbit_broker.name)
    fresh, reads = listing_queries(carol, "/")
    assert reads > 0 and "4,242" in fresh


def test_the_shared_part_carries_each_viewers_own_csrf_token(client_for, personas, rabbitmq):
    broker = Broker.objects.create(
        name="rabbit-gone",
        kind="rabbitmq",
        options={"management_url": f"http://127.0.0.1:{closed_port()}/"},
    )
    assert not collector.collect(broker)
    broker.refresh_from_db()
    triage.evaluate(broker)
    fragments.changed(broker.name)
    incident = Incident.objects.get(broker=broker, cause="unreachable", state="open")
    assert f"/incidents/{incident.public_id}/" in client_for("carol").get("/").content.decode()

    bob = Client(enforce_csrf_checks=True)
    bob.force_login(personas["bob"])
    page = bob.get("/").content.decode()  # the part carol's look rendered
    assert fragments.CSRF_MARK not in page
    form = re.search(
        r'action="(/incidents/[^"]+/ack)".*?name="csrfmiddlewaretoken" value="([^"]+)"', page, re.S
    )
    assert form, "no acknowledge form with a token"
    done = bob.post(form.group(1), {"csrfmiddlewaretoken": form.group(2), "next": "/"})
    assert done.status_code == 302
    incident.refresh_from_db()
    assert incident.acknowledged_by == "bob"
