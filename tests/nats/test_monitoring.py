"""NATS monitoring through the collector and the pages, against real nats-servers.

Consumer statuses are judged from the samples of recent collections. These
tests drive real JetStream consumers into each state and run real
collections stamped 15 s apart (`collector.collect(now=...)`), so that a
window of history builds up without waiting minutes, as
tests/kafka/test_status.py does. What the server says is always real; only
the collections' clock is advanced.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from nats.js.api import AckPolicy

from dashboard.collection import collector, queries
from dashboard.kinds.nats import status as natsstatus
from dashboard.models import Broker, Destination
from tests.app_fixtures import STEP, closed_port, collect_at, collect_series
from tests.nats_fixtures import JetStream, NatsServer, free_port, start_linked_servers

pytestmark = pytest.mark.django_db


def stream_name(unique_name: str) -> str:
    return unique_name.upper()


def dest(broker: Broker, key: str) -> Destination:
    return Destination.objects.get(broker=broker, key=key)


def status(d: Destination) -> str:
    return str(d.details["status"]["status"])


def page(client: Any, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return str(response.content.decode())


def dest_page(client: Any, d: Destination) -> str:
    return page(client, f"/brokers/{d.broker.name}/d/{quote(d.key, safe='')}")


@pytest.fixture(autouse=True)
def fresh_adapters() -> Any:
    # Each test's Broker row gets its own adapter (and its counters).
    yield
    for broker in Broker.objects.all():
        collector.forget_adapter(broker)


@pytest.fixture
def stream(js: JetStream, unique_name: str) -> str:
    """A stream of its own on `<unique>.>`."""
    name = stream_name(unique_name)
    js.add_stream(name, [f"{unique_name}.>"])
    return name


# -- consumer statuses ---------------------------------------------------------------


def test_a_pull_consumer_that_does_not_ack_is_STALLED_and_ranks_as_trouble(
    nats_broker: Broker, js: JetStream, stream: str, unique_name: str, client_for: Any
) -> None:
    js.publish(f"{unique_name}.job", count=6)
    js.add_consumer(stream, "stuck", ack_policy=AckPolicy.EXPLICIT, ack_wait=300)
    js.add_consumer(stream, "idle-ok", ack_policy=AckPolicy.EXPLICIT)
    assert js.fetch(stream, "stuck", 2, ack=False) == 2  # taken, never acknowledged
    assert js.fetch(stream, "idle-ok", 6, ack=True) == 6

    t0 = time.time()
    collect_at(nats_broker, t0)
    first = dest(nats_broker, f"consumer/{stream}/stuck")
    assert status(first) == natsstatus.OK
    assert "too little history" in first.details["status"]["rule"]

    collect_series(nats_broker, t0 + STEP, count=2)
    stuck = dest(nats_broker, f"consumer/{stream}/stuck")
    fine = dest(nats_broker, f"consumer/{stream}/idle-ok")

    assert stuck.backlog == 4 and stuck.in_flight == 2
    assert status(stuck) == natsstatus.STALLED
    rule = stuck.details["status"]["rule"]
    assert "4 pending, 2 awaiting acknowledgement" in rule and "ack floor did not move" in rule
    assert stuck.trouble == 2 and stuck.trouble_label == "stalled"
    assert status(fine) == natsstatus.OK and fine.trouble == 0
    ranked = [d.key for d in queries.destinations(queries.Listing(q=stream, kind="consumer"))]
    assert ranked[0] == stuck.key

    html = dest_page(client_for("carol"), stuck)
    assert 'data-status="STALLED"' in html and "ack floor did not move" in html
    assert "How the status is judged" in html
    # The overview flags it with its own words.
    overview = page(client_for("carol"), f"/?q={stream}")
    assert ">stalled</span>" in overview


def test_a_producer_faster_than_its_consumer_makes_it_LAGGING(
    nats_broker: Broker, js: JetStream, stream: str, unique_name: str
) -> None:
    js.add_consumer(stream, "slow", ack_policy=AckPolicy.EXPLICIT)
    t0 = time.time()
    for i in range(3):
        js.publish(f"{unique_name}.job", count=3)  # three arrive while it takes one
        assert js.fetch(stream, "slow", 1, ack=True) == 1
        collect_at(nats_broker, t0 + i * STEP)
    slow = dest(nats_broker, f"consumer/{stream}/slow")

    assert slow.backlog == 6 and slow.out_rate and slow.out_rate > 0
    assert status(slow) == natsstatus.LAGGING
    assert "Pending grew from 2 to 6" in slow.details["status"]["rule"]
    assert slow.trouble == 2 and slow.trouble_label == "lagging"
    assert queries.as_json(slow)["status"] == "LAGGING"


def test_a_consumer_that_keeps_up_is_OK(
    nats_broker: Broker, js: JetStream, stream: str, unique_name: str
) -> None:
    js.add_consumer(stream, "keeps-up", ack_policy=AckPolicy.EXPLICIT)
    js.publish(f"{unique_name}.job")  # one message always waits; it takes as many as arrive
    t0 = time.time()
    for i in range(3):
        js.publish(f"{unique_name}.job", count=2)
        assert js.fetch(stream, "keeps-up", 2, ack=True) == 2
        collect_at(nats_broker, t0 + i * STEP)
    d = dest(nats_broker, f"consumer/{stream}/keeps-up")

    assert d.backlog == 1
    assert status(d) == natsstatus.OK and d.trouble == 0
    assert "ack floor moves and pending is not growing" in d.details["status"]["rule"]


def test_streams_and_consumers_rank_in_the_overview_with_the_other_destinations(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    name = stream_name(unique_name)
    js.add_stream(name, [f"{unique_name}.>"], retention="workqueue")
    js.publish(f"{unique_name}.job", count=5)
    collect_at(nats_broker, time.time())
    work = dest(nats_broker, f"stream/{name}")

    # A work queue no one reads: backlog 5 with no consumers, flagged like a RabbitMQ queue.
    assert work.backlog == 5 and work.consumers == 0
    assert work.trouble == 1 and work.trouble_label == "no consumers"
    listed = queries.destinations(queries.Listing(q=name))
    assert [d.key for d in listed] == [work.key]


# -- the broker page: server panel -------------------------------------------------


def test_server_panel_shows_healthz_rates_jetstream_and_none_configured(
    nats_broker: Broker, js: JetStream, unique_name: str, client_for: Any
) -> None:
    t0 = time.time()
    collect_at(nats_broker, t0)
    js.publish(f"{unique_name}.core", b"x" * 50, count=30, jetstream=False)
    collect_at(nats_broker, t0 + STEP)
    nats_broker.refresh_from_db()

    health = nats_broker.health
    assert health["in_rate"] and health["in_rate"] * STEP >= 30 - 0.01  # 30 in 15 s, at least
    assert health["server"]["in_bytes_rate"] > 0
    assert health["requests"] == 4  # varz, healthz, jsz, connz
    html = page(client_for("carol"), f"/brokers/{nats_broker.name}/")
    assert 'class="flag ok healthz" data-status="ok"' in html
    assert "JetStream is not enabled" not in html and "Storage used" in html
    assert "routes-none" in html and "gateways-none" in html and "leafs-none" in html
    assert "Cache hit rate" in html  # /subsz, read with the first (topology) collection
    assert f"/brokers/{nats_broker.name}/nats/connections/" in html


def test_a_server_without_jetstream_says_so(
    private_nats: Callable[..., NatsServer], client_for: Any
) -> None:
    server = private_nats()
    broker = Broker.objects.create(
        name="plain", kind="nats", options={"monitoring_url": server.monitoring_url}
    )
    collect_at(broker, time.time())
    broker.refresh_from_db()
    assert broker.status == "up" and broker.health["facts"]["jetstream"] is False
    html = page(client_for("carol"), "/brokers/plain/")
    assert "JetStream is not enabled on this server" in html
    assert Destination.objects.filter(broker=broker).count() == 0


def test_a_failing_healthz_is_a_warning_on_the_broker_page_and_overview(
    private_nats: Callable[..., NatsServer], client_for: Any
) -> None:
    server = private_nats(
        "--server_name", "lonely", "--cluster_name", "c1",
        "--cluster", f"nats://127.0.0.1:{free_port()}",
        "--routes", f"nats://127.0.0.1:{free_port()}",
        jetstream=True,
    )  # fmt: skip
    broker = Broker.objects.create(
        name="lonely", kind="nats", options={"monitoring_url": server.monitoring_url}
    )
    collect_at(broker, time.time())
    broker.refresh_from_db()
    healthz = broker.health["healthz"]
    assert broker.status == "up" and healthz["status"] != "ok"

    html = page(client_for("carol"), "/brokers/lonely/")
    assert f'data-status="{healthz["status"]}"' in html and "healthz-error" in html
    overview = page(client_for("carol"), "/")
    assert f"⚠ healthz {healthz['status']}" in overview


def test_routes_gateways_and_leaf_nodes_show_on_the_broker_page(
    private_nats: Callable[..., NatsServer], client_for: Any
) -> None:
    servers = start_linked_servers(private_nats)
    hub_b = Broker.objects.create(
        name="hub-b", kind="nats", options={"monitoring_url": servers["b"].monitoring_url}
    )
    hub_a = Broker.objects.create(
        name="hub-a", kind="nats", options={"monitoring_url": servers["a"].monitoring_url}
    )
    deadline, now = time.monotonic() + 20, time.time()
    while True:
        # Stamped a topology interval apart, so that each collection reads the topology.
        now += settings.SLUICE_TOPOLOGY_INTERVAL
        collect_at(hub_a, now)
        collect_at(hub_b, now)
        hub_a.refresh_from_db()
        hub_b.refresh_from_db()
        if hub_a.topology.get("leafs") and (hub_b.topology.get("gateways") or {}).get("outbound"):
            break
        assert time.monotonic() < deadline, (hub_a.topology, hub_b.topology)
        time.sleep(0.2)

    carol = client_for("carol")
    html_a = page(carol, "/brokers/hub-a/")
    assert '<table class="routes">' in html_a and "<td>hub-b</td>" in html_a
    assert '<table class="leafs">' in html_a and "<td>leaf-l" in html_a
    assert "gateways-none" in html_a and "cluster east" in html_a
    html_b = page(carol, "/brokers/hub-b/")
    assert '<table class="gateways">' in html_b and "<td>west</td><td>outbound</td>" in html_b
    assert "leafs-none" in html_b
    assert "JetStream is not enabled on this server" in html_b


def test_an_unreachable_server_is_a_state_on_its_pages(
    nats: dict[str, str], client_for: Any
) -> None:
    broker = Broker.objects.create(
        name="gone",
        kind="nats",
        options={"monitoring_url": f"http://127.0.0.1:{closed_port()}", "url": nats["url"]},
    )
    broker.refresh_from_db()
    assert not collector.collect(broker, now=time.time())
    broker.refresh_from_db()
    assert broker.status == "down" and "connection refused" in broker.error
    # The client port answers: the message says the monitoring port is what is missing.
    assert "client port" in broker.error

    carol = client_for("carol")
    assert "Unreachable since" in page(carol, "/brokers/gone/")
    connections = page(carol, "/brokers/gone/nats/connections/")
    assert "is unreachable since" in connections and "connection refused" in connections


# -- the connections page -----------------------------------------------------------


def test_connections_page_lists_clients_and_sorts_by_any_column(
    nats_broker: Broker, js: JetStream, unique_name: str, client_for: Any
) -> None:
    busy = js.connect(name=f"{unique_name}-busy")
    quiet = js.connect(name=f"{unique_name}-quiet")
    for i in range(3):
        js.run(busy.subscribe(f"{unique_name}.busy.{i}"))
    js.run(quiet.subscribe(f"{unique_name}.quiet"))
    t0 = time.time()
    collect_at(nats_broker, t0)

    async def chatter() -> None:
        for _ in range(20):
            await busy.publish(f"{unique_name}.nowhere", b"hi")
        await busy.flush()

    js.run(chatter())
    collect_at(nats_broker, t0 + STEP)
    carol = client_for("carol")
    url = f"/brokers/{nats_broker.name}/nats/connections/"

    def names(html: str) -> list[str]:
        found = re.findall(r'<td class="name">([^<]*)</td>', html)
        return [n for n in found if n.startswith(unique_name)]

    html = page(carol, f"{url}?q={unique_name}")
    assert names(html) == [f"{unique_name}-busy", f"{unique_name}-quiet"]  # by connection id
    row = html[html.index(f"{unique_name}-busy") :].split("</tr>")[0]
    assert "<td>python3</td>" in row and '<td class="n">3</td>' in row

    assert names(page(carol, f"{url}?q={unique_name}&sort=-subscriptions")) == [
        f"{unique_name}-busy",
        f"{unique_name}-quiet",
    ]
    assert names(page(carol, f"{url}?q={unique_name}&sort=subscriptions")) == [
        f"{unique_name}-quiet",
        f"{unique_name}-busy",
    ]
    assert names(page(carol, f"{url}?q={unique_name}&sort=-name")) == [
        f"{unique_name}-quiet",
        f"{unique_name}-busy",
    ]
    assert names(page(carol, f"{url}?q={unique_name}&sort=-in_rate"))[0] == f"{unique_name}-busy"
    # An unknown column falls back to the default order rather than failing.
    assert names(page(carol, f"{url}?q={unique_name}&sort=evil")) == [
        f"{unique_name}-busy",
        f"{unique_name}-quiet",
    ]
    # htmx asks for the table alone.
    fragment = carol.get(f"{url}?sort=-rtt", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('\n<div id="connections">') or fragment.lstrip().startswith(
        '<div id="connections">'
    )
    assert "<html" not in fragment

    api = carol.get(f"/api/v1/brokers/{nats_broker.name}/nats/connections?sort=-in_msgs").json()
    ours = [c for c in api["connections"] if c["name"].startswith(unique_name)]
    assert [c["name"] for c in ours] == [f"{unique_name}-busy", f"{unique_name}-quiet"]
    assert ours[0]["in_rate"] > 0 and ours[0]["lang"] == "python3"


def test_connections_page_permissions(
    nats_broker: Broker, client_for: Any, rabbit_broker_row: Broker
) -> None:
    url = f"/brokers/{nats_broker.name}/nats/connections/"
    anonymous = client_for(None).get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert client_for("dave").get(url).status_code == 403  # signed in, no role
    for persona in ("carol", "bob", "alice"):
        assert client_for(persona).get(url).status_code == 200
    api = f"/api/v1/brokers/{nats_broker.name}/nats/connections"
    assert client_for(None).get(api).status_code == 401
    assert client_for("carol").get(api).status_code == 200
    # Not a NATS broker: no such page.
    assert client_for("carol").get("/brokers/rabbit-row/nats/connections/").status_code == 404
    assert client_for("carol").get("/api/v1/brokers/rabbit-row/nats/connections").status_code == 404


@pytest.fixture
def rabbit_broker_row(db: Any) -> Broker:
    return Broker.objects.create(
        name="rabbit-row", kind="rabbitmq", options={"management_url": "http://127.0.0.1:1"}
    )


# -- stream and consumer pages --------------------------------------------------------


def test_stream_and_consumer_pages_show_subjects_right_and_hostile_text_inert(
    nats_broker: Broker, js: JetStream, unique_name: str, client_for: Any
) -> None:
    # Stream and consumer names may hold quotes and "<" (not ".", "*", ">", "/" or spaces).
    name = f'{stream_name(unique_name)}-"onmouseover="alert(1)<img_src=x'
    reader = "<i_onmouseover=alert(1)"
    subjects = [
        f"{unique_name}.orders.*.eu",
        f"{unique_name}.a.>",
        f"{unique_name}.tok-en_x.größe.日本",
    ]
    js.add_stream(name, subjects, description='<script>alert("stream")</script>')
    js.publish(f"{unique_name}.orders.7.eu", count=2)
    js.add_consumer(
        name,
        reader,
        filter_subject=f"{unique_name}.orders.*.eu",
        description="<script>alert('consumer')</script>",
    )
    collect_at(nats_broker, time.time())
    carol = client_for("carol")

    stream_html = dest_page(carol, dest(nats_broker, f"stream/{name}"))
    for s in subjects:
        assert f'<code class="subject">{s.replace(">", "&gt;")}</code>' in stream_html
    assert "<script>alert" not in stream_html
    assert "&lt;script&gt;alert(&quot;stream&quot;)&lt;/script&gt;" in stream_html
    assert '"onmouseover="' not in stream_html and "<img_src" not in stream_html
    assert "&quot;onmouseover=&quot;alert(1)&lt;img_src=x" in stream_html
    assert "&lt;i_onmouseover=alert(1)" in stream_html and "<i_onmouseover" not in stream_html
    assert 'class="stream-messages">2<' in stream_html

    consumer_html = dest_page(carol, dest(nats_broker, f"consumer/{name}/{reader}"))
    assert f'<code class="subject">{unique_name}.orders.*.eu</code>' in consumer_html
    assert "<script>alert" not in consumer_html and "<i_onmouseover" not in consumer_html
    assert "&lt;script&gt;alert(&#x27;consumer&#x27;)&lt;/script&gt;" in consumer_html
    assert 'class="consumer-pending">2<' in consumer_html
