"""Who may reach what: every URL and the websocket, for anonymous, viewer, operator and admin."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.asgi import application
from dashboard.models import AuditEntry, Broker, Destination, Incident, Job, OffsetReset, Search
from tests.app_fixtures import closed_port

pytestmark = pytest.mark.django_db

JOB_ID = "0c4f6a8e-1d2b-4c3a-9e8f-7a6b5c4d3e2f"
SEARCH_ID = "5b1d2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
RESET_ID = "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928"
INCIDENT_ID = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"


@pytest.fixture
def world(db):
    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://127.0.0.1:1"}
    )
    Destination.objects.create(
        broker=broker, kind="queue", key="//orders", name="orders", vhost="/", type="classic"
    )
    Job.objects.create(
        public_id=JOB_ID,
        broker=broker,
        action="replay",
        source="//orders",
        selection={"all": True},
        created_by="bob",
        state=Job.PREVIEW,
    )
    # A Kafka cluster nobody answers for: allowed calls fail at the broker, not at the door.
    kafka = Broker.objects.create(
        name="kfk", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
    )
    Destination.objects.create(broker=kafka, kind="topic", key="topic/orders", name="orders")
    Destination.objects.create(broker=kafka, kind="group", key="group/billing", name="billing")
    Search.objects.create(
        public_id=SEARCH_ID, broker=kafka, topic="orders", created_by="bob", state=Search.RUNNING
    )
    Incident.objects.create(
        public_id=INCIDENT_ID,
        broker=broker,
        cause="unreachable",
        severity="critical",
        state="open",
        summary="unreachable for 5 s: connection refused",
        rule="A broker is unreachable when a collection fails to reach it.",
        actions=["broker"],
    )
    OffsetReset.objects.create(
        public_id=RESET_ID,
        broker=kafka,
        group="billing",
        spec={"to": "earliest"},
        changes=[],
        created_by="bob",
    )
    return broker


# Every page and API route, with the least role that may read it.
READS = [
    ("/", "viewer"),
    ("/brokers/rabbit/", "viewer"),
    ("/brokers/rabbit/exchanges/", "viewer"),
    ("/brokers/rabbit/d/%2F%2Forders", "viewer"),
    ("/audit/", "viewer"),
    ("/masking/", "admin"),
    ("/audit/export.csv", "admin"),
    ("/api/v1/brokers", "viewer"),
    ("/api/v1/brokers/rabbit/destinations", "viewer"),
    ("/api/v1/brokers/rabbit/destinations/%2F%2Forders", "viewer"),
    ("/api/v1/brokers/rabbit/destinations/%2F%2Forders/history?window=1h", "viewer"),
    ("/jobs/", "viewer"),
    (f"/jobs/{JOB_ID}/", "viewer"),
    ("/incidents/", "viewer"),
    (f"/incidents/{INCIDENT_ID}/", "viewer"),
    ("/api/v1/incidents?state=all", "viewer"),
    (f"/api/v1/incidents/{INCIDENT_ID}", "viewer"),
    ("/brokers/rabbit/dead-letters/", "viewer"),
    ("/brokers/rabbit/publish/", "viewer"),
    ("/brokers/rabbit/import/", "operator"),
    ("/brokers/rabbit/messages/%2F%2Forders", "viewer"),
    ("/api/v1/jobs", "viewer"),
    (f"/api/v1/jobs/{JOB_ID}", "viewer"),
    ("/api/v1/brokers/rabbit/routes?exchange=&routing_key=orders", "viewer"),
    ("/admin/", "admin"),
    ("/admin/dashboard/broker/", "admin"),
    ("/admin/auth/user/", "admin"),
]
RANK = {None: 0, "dave": 0, "carol": 1, "bob": 2, "alice": 3}
NEEDED = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.mark.parametrize("url,needed", READS)
@pytest.mark.parametrize("persona", [None, "dave", "carol", "bob", "alice"])
def test_permission_matrix(world, client_for, persona, url, needed):
    response = client_for(persona).get(url)
    allowed = RANK[persona] >= NEEDED[needed]
    if allowed:
        assert response.status_code == 200, response.content[:300]
    elif persona is None:
        if url.startswith("/api/"):
            assert response.status_code == 401
        else:
            assert response.status_code == 302
            assert response["Location"].startswith("/login/") or "/login/" in response["Location"]
    else:
        assert response.status_code in (302, 403)
        if response.status_code == 302:  # the admin site sends non-admins to its own login
            assert "login" in response["Location"]


# Kafka reads: the cluster is down, so an allowed read may answer with the
# broker's error (a page saying so, or 502 from the API), never 401 or 403.
KAFKA_READS = [
    ("/brokers/kfk/topics/orders/messages", "viewer"),
    ("/brokers/kfk/topics/orders/body?partition=0&offset=0", "viewer"),
    ("/brokers/kfk/topics/orders/search", "viewer"),
    ("/brokers/kfk/topics/orders/tail", "viewer"),
    (f"/searches/{SEARCH_ID}/", "viewer"),
    ("/brokers/kfk/groups/billing/reset", "viewer"),
    (f"/brokers/kfk/resets/{RESET_ID}/", "viewer"),
    ("/brokers/kfk/dead-letters/", "viewer"),
    ("/brokers/kfk/publish/?topic=orders", "viewer"),
    ("/api/v1/brokers/kfk/topics/orders/messages", "viewer"),
    (f"/api/v1/brokers/kfk/searches/{SEARCH_ID}", "viewer"),
    ("/api/v1/brokers/kfk/groups/billing/reset", "viewer"),
    (f"/api/v1/brokers/kfk/resets/{RESET_ID}", "viewer"),
]


@pytest.mark.parametrize("url,needed", KAFKA_READS)
@pytest.mark.parametrize("persona", [None, "dave", "carol", "bob", "alice"])
def test_permission_matrix_for_kafka_reads(world, client_for, persona, url, needed):
    response = client_for(persona).get(url)
    allowed = RANK[persona] >= NEEDED[needed]
    if allowed:
        assert response.status_code not in (301, 302, 401, 403), (url, response.status_code)
        assert response.status_code < 500 or response.status_code == 502, response.content[:300]
    elif persona is None:
        assert response.status_code in (302, 401)
    else:
        assert response.status_code == 403


# Every change, with the least role that may make it. The brokers here are
# unreachable, so an allowed change fails at the broker, not at the door.
WRITES = [
    ("/brokers/rabbit/messages/%2F%2Forders", {"count": "1"}, "operator"),
    ("/brokers/rabbit/body/%2F%2Forders?id=x", {}, "operator"),
    (
        "/brokers/rabbit/publish/",
        {"vhost": "/", "exchange": "", "routing_key": "orders", "body": "hi"},
        "operator",
    ),
    ("/brokers/rabbit/dead-letters/scan", {"queue": "//orders"}, "operator"),
    (
        "/brokers/rabbit/dead-letters/act",
        {"queue": "//orders", "action": "replay", "select": "all"},
        "operator",
    ),
    ("/brokers/rabbit/dead-letters/edit", {"queue": "//orders", "id": "x"}, "operator"),
    # Reading all of a classic queue takes and requeues it: as a look, for operators.
    ("/brokers/rabbit/dead-letters/export", {"queue": "//orders", "select": "all"}, "operator"),
    (
        "/api/v1/brokers/rabbit/dead-letters/export",
        {"json": {"source": "//orders"}},
        "operator",
    ),
    (f"/jobs/{JOB_ID}/cancel", {}, "operator"),
    (f"/jobs/{JOB_ID}/start", {}, "operator"),
    (f"/incidents/{INCIDENT_ID}/ack", {}, "operator"),
    (f"/incidents/{INCIDENT_ID}/snooze", {"minutes": "15"}, "operator"),
    ("/masking/raw", {"on": "1"}, "admin"),
    (f"/api/v1/incidents/{INCIDENT_ID}/ack", {}, "operator"),
    (f"/api/v1/incidents/{INCIDENT_ID}/snooze", {"json": {"minutes": 15}}, "operator"),
    (f"/jobs/{JOB_ID}/resume", {}, "operator"),
    (
        "/api/v1/jobs",
        # //orders is no dead-letter queue: discarding from it is for admins.
        {"json": {"broker": "rabbit", "action": "discard", "source": "//orders", "dry_run": True}},
        "admin",
    ),
    (f"/api/v1/jobs/{JOB_ID}/cancel", {}, "operator"),
    (
        "/api/v1/brokers/rabbit/publish",
        {"json": {"exchange": "", "routing_key": "orders", "body": "hi"}},
        "operator",
    ),
    ("/brokers/kfk/dead-letters/headers", {}, "viewer"),
    ("/brokers/kfk/dead-letters/scan", {"queue": "topic/orders"}, "viewer"),
    ("/brokers/kfk/dead-letters/act", {"queue": "topic/orders", "action": "replay"}, "operator"),
    ("/brokers/kfk/dead-letters/edit", {"queue": "topic/orders", "id": "0:0"}, "operator"),
    ("/brokers/kfk/dead-letters/export", {"queue": "topic/orders", "select": "all"}, "viewer"),
    # An upload with no file, and a body that is no message: refused, past the door.
    ("/brokers/kfk/import/", {"topic": "orders"}, "operator"),
    ("/api/v1/brokers/kfk/import?topic=orders", {"json": {"not": "a message"}}, "operator"),
    ("/api/v1/brokers/kfk/dead-letters/export", {"json": {"source": "topic/orders"}}, "viewer"),
    ("/brokers/kfk/publish/", {"topic": "orders", "body": "hi"}, "operator"),
    ("/brokers/kfk/topics/orders/search", {"body": "x"}, "viewer"),
    ("/api/v1/brokers/kfk/topics/orders/searches", {"json": {"body": "x"}}, "viewer"),
    (f"/searches/{SEARCH_ID}/cancel", {}, "operator"),  # or whoever started it
    (f"/searches/{SEARCH_ID}/export", {}, "viewer"),
    (f"/api/v1/brokers/kfk/searches/{SEARCH_ID}/export", {}, "viewer"),
    ("/brokers/kfk/groups/billing/reset", {"to": "earliest"}, "operator"),
    (f"/brokers/kfk/resets/{RESET_ID}/apply", {}, "operator"),
    ("/api/v1/brokers/kfk/groups/billing/reset", {"json": {"to": "earliest"}}, "operator"),
    (f"/api/v1/brokers/kfk/resets/{RESET_ID}/undo", {}, "operator"),
    (
        "/api/v1/jobs",
        {"json": {"broker": "kfk", "action": "replay", "source": "topic/orders"}},
        "operator",
    ),
]


def csrf_post(client, url: str, data: dict):
    # Any page with a form sets the CSRF cookie: the login page, or for a
    # signed-in user (whom it redirects) the overview or the refusal page.
    client.get("/login/")
    if "csrftoken" not in client.cookies:
        client.get("/")
    token = client.cookies["csrftoken"].value
    if "json" in data:
        return client.post(
            url,
            data=json.dumps(data["json"]),
            content_type="application/json",
            HTTP_X_CSRFTOKEN=token,
        )
    return client.post(url, data, HTTP_X_CSRFTOKEN=token)


@pytest.mark.parametrize("url,data,needed", WRITES)
@pytest.mark.parametrize("persona", [None, "dave", "carol", "bob", "alice"])
def test_permission_matrix_for_changes(world, client_for, persona, url, data, needed):
    response = csrf_post(client_for(persona), url, data)
    allowed = RANK[persona] >= NEEDED[needed]
    if allowed:
        assert response.status_code not in (401, 403), response.content[:300]
    elif persona is None:
        assert response.status_code in (302, 401)
    else:
        assert response.status_code == 403, (url, response.status_code)


@pytest.mark.parametrize("url,data,needed", WRITES)
def test_changes_need_a_csrf_token(world, client_for, url, data, needed):
    client = client_for("alice")
    if "json" in data:
        response = client.post(url, data=json.dumps(data["json"]), content_type="application/json")
    else:
        response = client.post(url, data)
    assert response.status_code == 403


def test_viewer_cannot_replay_dead_letters_through_the_api(world, token_for, client):
    token = token_for("carol")
    body = {
        "broker": "rabbit",
        "action": "replay",
        "source": "//orders",
        "selection": {"all": True},
    }
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 403
    assert Job.objects.count() == 1


def _routes(resolver: URLResolver, prefix: str = "") -> list[str]:
    out = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            out += _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            out.append(prefix + str(entry.pattern))
    return out


def test_every_dashboard_route_is_in_the_matrix():
    covered = {
        "",
        "brokers/<str:name>/",
        "brokers/<str:name>/exchanges/",
        "brokers/<str:name>/d/<path:key>",
        "audit/",
        "audit/export.csv",
        "masking/",
        "masking/raw",
        "api/v1/brokers",
        "api/v1/brokers/<str:name>/destinations",
        "api/v1/brokers/<str:name>/destinations/<path:key>/history",
        "api/v1/brokers/<str:name>/destinations/<path:key>",
        "login/",
        "logout/",
        "healthz",
        "readyz",  # open, as /healthz: probes send no credentials
        "metrics",  # a token or an allowed address: tests/test_metrics.py
        "brokers/<str:name>/messages/<path:key>",
        "brokers/<str:name>/body/<path:key>",
        "brokers/<str:name>/publish/",
        "brokers/<str:name>/dead-letters/",
        "brokers/<str:name>/dead-letters/scan",
        "brokers/<str:name>/dead-letters/act",
        "brokers/<str:name>/dead-letters/edit",
        "brokers/<str:name>/dead-letters/export",
        "api/v1/brokers/<str:name>/dead-letters/export",
        "brokers/<str:name>/import/",
        "api/v1/brokers/<str:name>/import",
        "jobs/",
        "jobs/<str:job_id>/",
        "jobs/<str:job_id>/<str:verb>",
        "incidents/",
        "incidents/<str:incident_id>/",
        "incidents/<str:incident_id>/ack",
        "incidents/<str:incident_id>/snooze",
        "api/v1/incidents",
        "api/v1/incidents/<str:incident_id>",
        "api/v1/incidents/<str:incident_id>/ack",
        "api/v1/incidents/<str:incident_id>/snooze",
        "api/v1/brokers/<str:name>/publish",
        "api/v1/brokers/<str:name>/routes",
        "api/v1/jobs",
        "api/v1/jobs/<str:job_id>",
        "api/v1/jobs/<str:job_id>/<str:verb>",
        "brokers/<str:name>/dead-letters/headers",
        "brokers/<str:name>/topics/<str:topic>/messages",
        "brokers/<str:name>/topics/<str:topic>/search",
        "brokers/<str:name>/topics/<str:topic>/body",
        "brokers/<str:name>/topics/<str:topic>/tail",
        "brokers/<str:name>/groups/<path:group>/reset",
        "brokers/<str:name>/resets/<str:reset_id>/",
        "brokers/<str:name>/resets/<str:reset_id>/<str:verb>",
        "searches/<str:search_id>/",
        "searches/<str:search_id>/cancel",
        "searches/<str:search_id>/export",
        "api/v1/brokers/<str:name>/topics/<str:topic>/messages",
        "api/v1/brokers/<str:name>/topics/<str:topic>/searches",
        "api/v1/brokers/<str:name>/searches/<str:search_id>",
        "api/v1/brokers/<str:name>/searches/<str:search_id>/export",
        "api/v1/brokers/<str:name>/groups/<path:group>/reset",
        "api/v1/brokers/<str:name>/resets/<str:reset_id>",
        "api/v1/brokers/<str:name>/resets/<str:reset_id>/<str:verb>",
        "brokers/<str:name>/nats/connections/",
        "api/v1/brokers/<str:name>/nats/connections",
        "brokers/<str:name>/streams/<str:stream>/messages",
        "brokers/<str:name>/nats/publish/",
        "brokers/<str:name>/nats/request/",
        "brokers/<str:name>/nats/tail/",
        "brokers/<str:name>/nats/dead-letters/",
        "brokers/<str:name>/nats/dead-letters/act",
        "brokers/<str:name>/nats/dead-letters/edit",
        "brokers/<str:name>/nats/dead-letters/capture",
        "api/v1/brokers/<str:name>/nats/dead-letters",
        # NATS messages: NATS_READS and NATS_WRITES below.
        "brokers/<str:name>/streams/<str:stream>/body",
        "api/v1/brokers/<str:name>/streams/<str:stream>/messages",
        "api/v1/brokers/<str:name>/streams/<str:stream>/messages/<int:seq>",
        "api/v1/brokers/<str:name>/nats/publish",
        "api/v1/brokers/<str:name>/nats/request",
    }
    ours = {r for r in _routes(get_resolver()) if not r.startswith("admin/")}
    assert ours == covered, "a new route needs a row in READS or WRITES"


def test_login_page_and_health_are_public(client):
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz")["Content-Type"] == "application/json"  # 200 or 503, no login
    assert client.get("/metrics").status_code == 401  # never a login page: a scraper reads it


def test_bearer_token_reads_the_api_and_a_bad_one_is_refused(world, token_for, client):
    token = token_for("carol")
    ok = client.get("/api/v1/brokers", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    assert [b["name"] for b in ok.json()["brokers"]] == ["kfk", "rabbit"]
    bad = client.get("/api/v1/brokers", HTTP_AUTHORIZATION="Bearer slc_not-a-token")
    assert bad.status_code == 401
    # A token does not open admin-only exports for a viewer.
    assert client.get("/audit/export.csv", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403


def test_logout_needs_a_post_with_csrf(client_for):
    carol = client_for("carol")
    assert carol.post("/logout/").status_code == 403  # no CSRF token


def test_admin_changes_are_audited(world, personas):
    from django.test import Client

    alice = Client()
    alice.force_login(personas["alice"])
    response = alice.post(
        f"/admin/dashboard/broker/{world.pk}/change/",
        {
            "name": "rabbit",
            "kind": "rabbitmq",
            "options": '{"management_url": "http://127.0.0.1:2"}',
            "interval": "7",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:500]
    entry = AuditEntry.objects.get(action="admin.change.broker")
    assert entry.user == "alice"
    assert entry.destination == "rabbit"


def test_admin_rejects_unknown_broker_options(world, personas):
    from django.test import Client

    alice = Client()
    alice.force_login(personas["alice"])
    response = alice.post(
        f"/admin/dashboard/broker/{world.pk}/change/",
        {
            "name": "rabbit",
            "kind": "rabbitmq",
            "options": '{"bootstrap_servers": "x"}',
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "Unknown option" in response.content.decode()
    world.refresh_from_db()
    assert world.options == {"management_url": "http://127.0.0.1:1"}


def _ws_connect(user, view: str = "overview") -> tuple[bool, int | None]:
    async def run() -> tuple[bool, int | None]:
        communicator = WebsocketCommunicator(
            application, f"/ws/live/?view={view}", headers=[(b"origin", b"http://127.0.0.1")]
        )
        communicator.scope["user"] = user
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    return async_to_sync(run)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "persona,allowed",
    [(None, False), ("dave", False), ("carol", True), ("bob", True), ("alice", True)],
)
def test_websocket_needs_a_user_with_a_role(world, personas, persona, allowed):
    from django.contrib.auth.models import AnonymousUser

    user = personas[persona] if persona else AnonymousUser()
    connected, _ = _ws_connect(user)
    assert connected is allowed


@pytest.mark.django_db(transaction=True)
def test_websocket_refuses_an_unknown_view(world, personas):
    connected, code = _ws_connect(personas["carol"], view="nonsense")
    assert connected is False


# NATS messages. The server is down: an allowed call fails at the broker
# (a page saying so, or 502 from the API), never at the door.
@pytest.fixture
def nats_world(world):
    return Broker.objects.create(
        name="nts",
        kind="nats",
        options={
            "url": f"nats://127.0.0.1:{closed_port()}",
            "monitoring_url": "http://127.0.0.1:1",
        },
    )


NATS_READS = [
    ("/brokers/nts/streams/orders/messages", "viewer"),
    ("/brokers/nts/streams/orders/body?seq=1", "viewer"),
    ("/brokers/nts/nats/tail/?subject=orders.%3E", "viewer"),
    ("/brokers/nts/nats/publish/", "viewer"),  # the form; sending is a write
    ("/brokers/nts/nats/request/", "viewer"),
    ("/api/v1/brokers/nts/streams/orders/messages", "viewer"),
    ("/api/v1/brokers/nts/streams/orders/messages/1", "viewer"),
    ("/brokers/nts/nats/dead-letters/", "viewer"),
    ("/api/v1/brokers/nts/nats/dead-letters", "viewer"),
    ("/brokers/nts/nats/connections/", "viewer"),
    ("/api/v1/brokers/nts/nats/connections", "viewer"),
]
NATS_WRITES = [
    ("/brokers/nts/nats/publish/", {"subject": "orders.x", "body": "hi"}, "operator"),
    ("/brokers/nts/nats/request/", {"subject": "svc.x", "body": "hi"}, "operator"),
    ("/api/v1/brokers/nts/nats/publish", {"json": {"subject": "orders.x"}}, "operator"),
    ("/api/v1/brokers/nts/nats/request", {"json": {"subject": "svc.x"}}, "operator"),
    ("/brokers/nts/nats/dead-letters/act", {"source": "advisories/X", "select": "all"}, "operator"),
    ("/brokers/nts/nats/dead-letters/edit", {"source": "advisories/X", "id": "S:1"}, "operator"),
    ("/brokers/nts/nats/dead-letters/capture", {}, "admin"),
]


@pytest.mark.parametrize("url,needed", NATS_READS)
@pytest.mark.parametrize("persona", [None, "dave", "carol", "bob", "alice"])
def test_permission_matrix_for_nats_reads(nats_world, client_for, persona, url, needed, settings):
    settings.SLUICE_BROKER_TIMEOUT = 1
    response = client_for(persona).get(url)
    if RANK[persona] >= NEEDED[needed]:
        assert response.status_code not in (301, 302, 401, 403), (url, response.status_code)
        assert response.status_code < 500 or response.status_code == 502, response.content[:300]
    elif persona is None:
        assert response.status_code in (302, 401)
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("url,data,needed", NATS_WRITES)
@pytest.mark.parametrize("persona", [None, "dave", "carol", "bob", "alice"])
def test_permission_matrix_for_nats_changes(
    nats_world, client_for, persona, url, data, needed, settings
):
    settings.SLUICE_BROKER_TIMEOUT = 1
    response = csrf_post(client_for(persona), url, data)
    if RANK[persona] >= NEEDED[needed]:
        assert response.status_code not in (401, 403), response.content[:300]
    elif persona is None:
        assert response.status_code in (302, 401)
    else:
        assert response.status_code == 403, (url, response.status_code)


@pytest.mark.parametrize("url,data,needed", NATS_WRITES)
def test_nats_changes_need_a_csrf_token(nats_world, client_for, url, data, needed):
    client = client_for("alice")
    if "json" in data:
        response = client.post(url, data=json.dumps(data["json"]), content_type="application/json")
    else:
        response = client.post(url, data)
    assert response.status_code == 403
