"""Pages share one rendering of their live part per change (dashboard/live/fragments.py).

The rows come from a real collection of the real RabbitMQ; the collection's own
writes are bulk writes, so the worker's `changed` call is what moves pages on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard import tasks
from dashboard.collection import collector, queries
from dashboard.live import fragments
from dashboard.live.watch import View
from dashboard.models import Broker, Destination, Incident
from dashboard.triage import evaluate as triage
from dashboard.views import pages
from tests.app_fixtures import closed_port, wait_for
from tests.rabbit_fixtures import management

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


# -- rendered before published: the worker's collection task, run eagerly ----------------


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """`.delay()` runs the task at once, in this process, as a worker would."""
    from dashboard import celery_app

    was = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = was


def home() -> View:
    return pages.listing_view(pages.DEFAULT_OVERVIEW)


def test_after_a_collection_the_home_page_is_ready_with_its_figures(
    client_for, rabbit_broker, rabbitmq, amqp, unique_name, eager_tasks
):
    amqp.queue_declare(unique_name)
    tasks.collect_broker.run(rabbit_broker.pk)
    carol = client_for("carol")
    carol.get("/")  # the session's first request writes nothing after this one
    for n in range(3):
        amqp.basic_publish("", unique_name, f"message {n}".encode())
    path = f"/api/queues/%2F/{unique_name}"
    wait_for(lambda: management(rabbitmq, "GET", path).json().get("messages") == 3)
    tasks.collect_broker.run(rabbit_broker.pk)  # and its push, which publishes it
    html, reads = listing_queries(carol, "/")
    row = re.search(rf'data-key="//{unique_name}">.*?</tr>', html, re.S)
    assert row and '<td class="n backlog">3</td>' in row.group(0), "not the new figures"
    assert reads == 0, "a page load rendered the overview after a collection"


@pytest.mark.parametrize("action", ["ack", "snooze"])
def test_an_acknowledgement_or_snooze_shows_at_once_to_the_one_who_made_it(
    client_for, personas, rabbitmq, eager_tasks, action
):
    broker = Broker.objects.create(
        name="rabbit-gone",
        kind="rabbitmq",
        options={"management_url": f"http://127.0.0.1:{closed_port()}/"},
    )
    tasks.collect_broker.run(broker.pk)
    incident = Incident.objects.get(broker=broker, cause="unreachable", state="open")
    on_fire = f'data-incident="{incident.public_id}"'
    bob, carol = client_for("bob"), client_for("carol")
    page = bob.get("/").content.decode()
    assert on_fire in page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, "no acknowledge form with a token"

    # The worker has begun rendering the overview, from rows read before bob's change.
    assert cache.add(fragments.rendering_key(home()), 1)
    try:
        done = bob.post(
            f"/incidents/{incident.public_id}/{action}",
            {"csrfmiddlewaretoken": token.group(1), "next": "/", "minutes": "15"},
        )
        assert done.status_code == 302
        mine = bob.get("/").content.decode()
        assert on_fire not in mine and "1 more acknowledged or snoozed" in mine
        # Others see the rendering being replaced, at most one change old, read from the cache.
        _, reads = listing_queries(carol, "/")
        assert reads == 0
    finally:
        cache.delete(fragments.rendering_key(home()))
    assert on_fire not in carol.get("/").content.decode()  # the change rendered, for everyone


def test_collections_of_two_brokers_close_together_render_the_overview_twice_at_most(
    client_for, rabbit_broker, rabbitmq, amqp, unique_name, eager_tasks, monkeypatch
):
    other = Broker.objects.create(name="rabbit-2", kind="rabbitmq", options=rabbit_broker.options)
    amqp.queue_declare(unique_name)
    renders: list[queries.Listing] = []
    render_live = pages.render_live

    def counted(listing: queries.Listing) -> str:
        renders.append(listing)
        if len(renders) == 1:
            # Both brokers' collections land while the first one's push renders.
            tasks.collect_broker.run(other.pk)
            tasks.collect_broker.run(rabbit_broker.pk)
        return render_live(listing)

    monkeypatch.setattr(pages, "render_live", counted)
    tasks.collect_broker.run(rabbit_broker.pk)
    assert renders.count(pages.DEFAULT_OVERVIEW) == 2
    html, reads = listing_queries(client_for("carol"), "/")
    assert reads == 0 and unique_name in html and "rabbit-2" in html
    assert not cache.get(fragments.rendering_key(home())), "the claim was not let go"


def test_a_collection_landing_while_a_page_load_renders_waits_then_renders_it_itself(
    client_for, rabbit_broker, rabbitmq, amqp, unique_name, eager_tasks
):
    """A page load's rendering goes to no websocket: the push renders after it, not never."""
    amqp.queue_declare(unique_name)
    key = fragments.rendering_key(home())
    assert cache.add(key, fragments.PAGE)  # a page load renders the home page
    threading.Timer(0.5, cache.delete, [key]).start()  # and is done half a second later
    started = time.monotonic()
    tasks.collect_broker.run(rabbit_broker.pk)
    assert time.monotonic() - started >= 0.5, "the push rendered beside the page load"
    stored = fragments.newest(home())
    assert stored and stored[0] == fragments.generation(home()) and unique_name in stored[1]
