"""A page makes as many SQL queries with 2,000 destinations as with 50 (issue 12).

The rows are built as collections store them: RabbitMQ queues, Kafka topics and
groups, NATS streams and consumers, with figures, details, the recent window,
samples for the sparklines and open incidents for the On fire section. Each page
is counted twice per size: cache cold (the generation moved on, as after a
collection) and warm (a second look at the same view).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from brokers.base import Health
from dashboard.collection import queries
from dashboard.live import fragments
from dashboard.models import Broker, Destination, Incident, Sample
from dashboard.views import pages

pytestmark = pytest.mark.django_db

SMALL, LARGE = 50, 2_000
KINDS = {  # broker kind -> the kinds of destination its collections store
    "rabbitmq": ("queue",),
    "kafka": ("topic", "group"),
    "nats": ("stream", "consumer"),
}
PAGES = [
    "/",
    "/?q=orders&sort=-backlog",
    "/?kind=queue&page=2",
    "/?broker=kafka&sort=name",
    "/brokers/rabbit/",
    "/brokers/kafka/?q=orders.00&sort=-lag",
    "/brokers/nats/?kind=consumer",
    "/api/v1/brokers/rabbit/destinations",
    "/api/v1/brokers/kafka/destinations?q=orders&limit=20&offset=10",
]
SAMPLES = 12  # per destination: a minute of history at the default interval


def _brokers() -> dict[str, Broker]:
    names = {"rabbitmq": "rabbit", "kafka": "kafka", "nats": "nats"}
    return {
        kind: Broker.objects.create(
            name=name,
            kind=kind,
            options={"management_url": "http://127.0.0.1:1"}
            if kind == "rabbitmq"
            else {"bootstrap_servers": "127.0.0.1:1"}
            if kind == "kafka"
            else {"url": "nats://127.0.0.1:1", "monitoring_url": "http://127.0.0.1:1"},
            status="up",
            health=asdict(Health(backlog=1000, version="1.0")),
        )
        for kind, name in names.items()
    }


def _destination(broker: Broker, kind: str, i: int) -> Destination:
    """A row with the fields a collection fills; one in seven is in trouble."""
    now = time.time()
    name = f"orders.{i:05d}"
    backlog = (i * 37) % 5000
    return Destination(
        broker=broker,
        kind=kind,
        key=f"//{name}" if kind == "queue" else f"{kind}:{name}",
        name=name,
        vhost="/" if kind == "queue" else "",
        state="running",
        backlog=backlog,
        in_flight=i % 7,
        consumers=i % 3,
        in_rate=float(i % 11),
        out_rate=float(i % 5),
        lag=backlog if kind == "group" else None,
        trouble=2 if i % 7 == 0 else 0,
        details={"arguments": {"x-queue-type": "classic"}, "consumers": [], "extra": {}},
        recent=[[int(now) - 5 * k, backlog, 0, i % 3, 1.0, 1.0, None] for k in range(6, 0, -1)],
    )


def fill(brokers: dict[str, Broker], start: int, stop: int) -> None:
    """Destinations `start` to `stop` (numbered across brokers), each with its samples."""
    kinds = [(b, k) for kind, b in brokers.items() for k in KINDS[kind]]
    rows = Destination.objects.bulk_create(
        _destination(*kinds[i % len(kinds)], i) for i in range(start, stop)
    )
    now = int(time.time())
    Sample.objects.bulk_create(
        Sample(
            destination=d,
            ts=now - 5 * k,
            backlog=d.backlog + k,
            in_flight=d.in_flight,
            consumers=d.consumers,
            in_rate=d.in_rate,
            out_rate=d.out_rate,
            lag=d.lag,
        )
        for d in rows
        for k in range(SAMPLES)
    )


def open_incidents(brokers: dict[str, Broker]) -> None:
    """Open incidents on a few destinations and on one broker: what On fire shows."""
    for n, dest in enumerate(Destination.objects.filter(trouble=2).order_by("pk")[:4]):
        Incident.objects.create(
            broker=dest.broker,
            destination=dest,
            key=dest.key,
            name=dest.name,
            cause="backlog_growing",
            severity="warning",
            state=Incident.OPEN,
            summary=f"{dest.name} grows by {n + 1} messages a second",
            rule="the backlog grew over the last minute",
            urgency=10 - n,
        )
    Incident.objects.create(
        broker=brokers["nats"],
        cause="unreachable",
        severity="critical",
        state=Incident.OPEN,
        summary="unreachable since 10:42:05: connection refused",
        rule="the broker did not answer",
        urgency=20,
    )


def count(client: Any, path: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        answer = client.get(path)
    assert answer.status_code == 200, f"{path}: HTTP {answer.status_code}"
    return len(queries.captured_queries), [q["sql"] for q in queries.captured_queries]


def counts(client: Any) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(page, "cold"/"warm") -> the queries of one load."""
    found = {}
    for path in PAGES:
        for broker in ("", "rabbit", "kafka", "nats"):
            fragments.changed(broker)  # as after a collection: nothing shared is reused
        found[path, "cold"] = count(client, path)
        found[path, "warm"] = count(client, path)
    return found


def test_pages_make_the_same_queries_with_2000_destinations_as_with_50(client_for):
    brokers = _brokers()
    fill(brokers, 0, SMALL)
    open_incidents(brokers)
    carol = client_for("carol")
    carol.get("/")  # the session's first request writes nothing after this one
    small = counts(carol)
    fill(brokers, SMALL, LARGE)
    assert Destination.objects.count() == LARGE
    large = counts(carol)

    table = "\n".join(
        f"  {path:60} {cache:5} {small[path, cache][0]:>3} with {SMALL}, "
        f"{large[path, cache][0]:>3} with {LARGE:,}"
        for path, cache in small
    )
    print(f"queries per page load:\n{table}")
    grew = [key for key in small if small[key][0] != large[key][0]]
    detail = "".join(
        f"\n{path} ({cache}), with {LARGE:,}:\n    " + "\n    ".join(large[path, cache][1])
        for path, cache in grew
    )
    assert not grew, f"queries per page load:\n{table}{detail}"
    # A warm look at an HTML page reads no destination: the live part comes from the cache.
    for path in PAGES:
        if not path.startswith("/api/"):
            sql = large[path, "warm"][1]
            assert not any('"dashboard_destination"' in q for q in sql), (path, sql)


def test_a_page_load_while_another_renders_the_view_shows_the_latest_rendering(client_for):
    brokers = _brokers()
    fill(brokers, 0, SMALL)
    carol = client_for("carol")
    fragments.changed()
    assert "orders.00007" in carol.get("/").content.decode()  # rendered and stored
    Destination.objects.filter(name="orders.00007").update(name="renamed.00007")
    fragments.changed()
    # Another process (the push, another page load) has begun rendering this generation.
    view = pages.listing_view(queries.Listing.from_params({}))
    assert cache.add(fragments.rendering_key(view), 1)
    _, sql = count(carol, "/")
    assert not any('"dashboard_destination"' in q for q in sql), sql
    page = carol.get("/").content.decode()
    assert "orders.00007" in page and "renamed.00007" not in page
    # Once that render is done, the next one is stored and page loads show it.
    cache.delete(fragments.rendering_key(view))
    assert view.listing is not None
    assert "renamed.00007" in pages.live_fragment(view.listing)
    assert "renamed.00007" in carol.get("/").content.decode()


def test_a_kept_page_shows_each_viewer_their_own_name_role_and_token(client_for, personas):
    """The page around the live part is kept per role: name and CSRF token are each viewer's."""
    from dashboard.auth import VIEWER, ensure_user

    brokers = _brokers()
    fill(brokers, 0, SMALL)
    personas["eve"] = ensure_user("eve<i>", VIEWER, "a-password-for-eve")[0]
    fragments.changed()
    looks = [("alice", "admin"), ("bob", "operator"), ("carol", "viewer"), ("eve", "viewer")]
    tokens = set()
    for name, role in looks + looks:  # the second round reads the kept pages
        client = client_for(name)
        with CaptureQueriesContext(connection) as sql:
            page = client.get("/").content.decode()
        shown = escape(personas[name].get_username())
        assert f'<span class="who">{shown} <span class="role">{role}</span>' in page, name
        assert "eve<i>" not in page and fragments.CSRF_MARK not in page
        assert ('href="/admin/"' in page) is (role == "admin"), name
        assert ('class="can-operate"' in page) is (role in ("admin", "operator")), name
        header = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page)
        form = re.search(r'action="/logout/".*?name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert header and form, name
        tokens.add(form.group(1))
        if (name, role) == looks[-1]:
            # Kept: the page around the live part was not rendered again.
            assert not any('"dashboard_broker"' in q["sql"] for q in sql.captured_queries)
        # The token is this viewer's: their own sign-out form takes it.
        assert client.post("/logout/", {"csrfmiddlewaretoken": form.group(1)}).status_code == 302
    assert len(tokens) == 2 * len(looks)

    # A renamed broker moves the pages on: the kept page is rendered again.
    Broker.objects.filter(name="kafka").update(name="kafka-eu")
    fragments.changed("kafka-eu")
    page = client_for("carol").get("/").content.decode()
    assert '<option value="kafka-eu"' in page and '<option value="kafka"' not in page


def test_a_rendering_kept_in_the_process_is_never_shown_once_redis_has_lost_it(client_for):
    """Redis restarted empty counts the generations from the start again: a kept rendering
    of the same generation number is another rendering, and is not shown."""
    brokers = _brokers()
    fill(brokers, 0, SMALL)
    carol = client_for("carol")
    fragments.changed()
    assert "orders.00007" in carol.get("/").content.decode()  # stored, and kept here
    view = pages.listing_view(queries.Listing.from_params({}))
    gen = fragments.generation(view)
    cache.delete_many([fragments._key(view, "newest"), fragments._key(view, "newest-id")])
    cache.set(fragments._view_gen_key(view), gen, timeout=None)  # counted up to it again
    Destination.objects.filter(name="orders.00007").update(name="renamed.00007")
    page = carol.get("/").content.decode()
    assert ">renamed.00007</a>" in page and ">orders.00007</a>" not in page
