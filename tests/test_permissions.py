"""Who may reach what: every URL and the websocket, for anonymous, viewer, operator and admin."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.asgi import application
from dashboard.models import AuditEntry, Broker, Destination

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://127.0.0.1:1"}
    )
    Destination.objects.create(
        broker=broker, kind="queue", key="//orders", name="orders", vhost="/"
    )
    return broker


# Every page and API route, with the least role that may read it.
READS = [
    ("/", "viewer"),
    ("/brokers/rabbit/", "viewer"),
    ("/brokers/rabbit/exchanges/", "viewer"),
    ("/brokers/rabbit/d/%2F%2Forders", "viewer"),
    ("/audit/", "viewer"),
    ("/audit/export.csv", "admin"),
    ("/api/v1/brokers", "viewer"),
    ("/api/v1/brokers/rabbit/destinations", "viewer"),
    ("/api/v1/brokers/rabbit/destinations/%2F%2Forders", "viewer"),
    ("/api/v1/brokers/rabbit/destinations/%2F%2Forders/history?window=1h", "viewer"),
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
        "api/v1/brokers",
        "api/v1/brokers/<str:name>/destinations",
        "api/v1/brokers/<str:name>/destinations/<path:key>/history",
        "api/v1/brokers/<str:name>/destinations/<path:key>",
        "login/",
        "logout/",
        "healthz",
    }
    ours = {r for r in _routes(get_resolver()) if not r.startswith("admin/")}
    assert ours == covered, "a new route needs a row in READS"


def test_login_page_and_health_are_public(client):
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_bearer_token_reads_the_api_and_a_bad_one_is_refused(world, token_for, client):
    token = token_for("carol")
    ok = client.get("/api/v1/brokers", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    assert [b["name"] for b in ok.json()["brokers"]] == ["rabbit"]
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
