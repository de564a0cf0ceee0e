"""Secrets are never rendered in pages, JSON, logs or errors."""

from __future__ import annotations

import logging

import pytest

from brokers.redact import redact_url
from dashboard.collection import collector
from dashboard.models import Broker, Destination

pytestmark = pytest.mark.django_db

SECRET = "hunter2-Sup3rSecret"


def test_redact_url_hides_passwords():
    assert redact_url(f"amqp://ops:{SECRET}@host:5672/%2F") == "amqp://ops:•••@host:5672/%2F"
    assert redact_url("http://host:15672") == "http://host:15672"
    assert SECRET not in redact_url(f"http://:{SECRET}@h/")


def test_no_secret_in_any_response(rabbitmq, client_for, monkeypatch, caplog, amqp, unique_name):
    monkeypatch.setenv("SLUICE_TEST_SECRET", SECRET)
    # A queue of its own, so that destination pages are covered whatever else the broker holds.
    amqp.queue_declare(f"secrets-{unique_name}")
    host = rabbitmq["management_url"].split("://", 1)[1]
    # Wrong credentials, so that the broker's refusal travels through every error path too.
    wrong = Broker.objects.create(
        name="wrong",
        kind="rabbitmq",
        options={
            "management_url": f"http://guest:{SECRET}@{host}",
            "amqp_url": f"amqp://ops:{SECRET}@127.0.0.1:5672/%2F",
        },
    )
    via_env = Broker.objects.create(
        name="env",
        kind="rabbitmq",
        source="file",  # the file's brokers expand any variable; the admin's only some
        options={
            "management_url": rabbitmq["management_url"],
            "password": "${SLUICE_TEST_SECRET}",
            "username": "guest",
        },
    )
    good = Broker.objects.create(
        name="good",
        kind="rabbitmq",
        options={"management_url": rabbitmq["management_url"], "amqp_url": rabbitmq["amqp_url"]},
    )
    caplog.set_level(logging.DEBUG)
    for broker in (wrong, via_env, good):
        collector.collect(broker)
    wrong.refresh_from_db()
    assert wrong.status == "down"
    assert Destination.objects.filter(broker=good).exists()

    alice = client_for("alice")
    urls = [
        "/",
        "/brokers/wrong/",
        "/brokers/env/",
        "/brokers/good/",
        "/api/v1/brokers",
        "/api/v1/brokers/wrong/destinations",
        "/audit/",
        "/audit/export.csv",
        f"/admin/dashboard/broker/{wrong.pk}/change/",
    ]
    for dest in Destination.objects.filter(broker=good)[:3]:
        from urllib.parse import quote

        urls.append(f"/brokers/good/d/{quote(dest.key, safe='')}")
        urls.append(f"/api/v1/brokers/good/destinations/{quote(dest.key, safe='')}")
    for url in urls:
        response = alice.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, url
        assert SECRET.encode() not in body, url
    assert SECRET not in caplog.text
    assert SECRET not in wrong.error


# -- ${VAR} in brokers from the admin, and secrets kept for their address only ------------


@pytest.fixture
def listener():
    """A local HTTP server that records the Authorization header of every request it gets."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _post_broker(client, options: dict, pk: int | None = None, name: str = "picked"):
    import json

    url = f"/admin/dashboard/broker/{pk}/change/" if pk else "/admin/dashboard/broker/add/"
    return client.post(
        url,
        {"name": name, "kind": "rabbitmq", "options": json.dumps(options), "enabled": "on"},
    )


def test_a_broker_from_the_admin_expands_only_allow_listed_variables(
    client_for, listener, monkeypatch, settings
):
    monkeypatch.setenv("SLUICE_TEST_SECRET", SECRET)
    url, seen = listener
    alice = client_for("alice")
    alice.get("/admin/")  # the CSRF cookie
    alice.defaults["HTTP_X_CSRFTOKEN"] = alice.cookies["csrftoken"].value
    options = {"management_url": url, "username": "guest", "password": "${SLUICE_TEST_SECRET}"}

    refused = _post_broker(alice, options)
    html = refused.content.decode()
    assert refused.status_code == 200
    assert "${SLUICE_TEST_SECRET} would not be expanded" in html
    assert "SLUICE_ADMIN_ENV_ALLOWLIST" in html and SECRET not in html
    assert not Broker.objects.filter(name="picked").exists()

    settings.SLUICE_ADMIN_ENV_ALLOWLIST = ["SLUICE_TEST_SECRET"]
    assert _post_broker(alice, options).status_code == 302
    broker = Broker.objects.get(name="picked")
    assert broker.source == "admin" and broker.options["password"] == "${SLUICE_TEST_SECRET}"
    collector.collect(broker)
    assert seen and set(seen) == {_basic("guest", SECRET)}


def test_a_stored_admin_broker_never_sends_a_variable_off_the_allow_list(listener, monkeypatch):
    """A row from before the allow-list: the worker refuses to expand it, and says why."""
    monkeypatch.setenv("SLUICE_TEST_SECRET", SECRET)
    url, seen = listener
    options = {"management_url": url, "username": "guest", "password": "${SLUICE_TEST_SECRET}"}
    from_admin = Broker.objects.create(name="admin-made", kind="rabbitmq", options=options)
    assert not collector.collect(from_admin)
    from_admin.refresh_from_db()
    assert from_admin.status == "down" and "SLUICE_ADMIN_ENV_ALLOWLIST" in from_admin.error
    assert seen == [] and SECRET not in from_admin.error

    # The broker file, written by someone with the shell, may name any variable.
    from_file = Broker.objects.create(name="filed", kind="rabbitmq", options=options, source="file")
    collector.collect(from_file)
    assert seen and set(seen) == {_basic("guest", SECRET)}


def test_a_file_broker_changed_in_the_admin_becomes_the_admins(client_for):
    options = {"management_url": "http://127.0.0.1:1", "password": "${SLUICE_TEST_SECRET}"}
    broker = Broker.objects.create(name="picked", kind="rabbitmq", options=options, source="file")
    alice = client_for("alice")
    alice.get("/admin/")
    alice.defaults["HTTP_X_CSRFTOKEN"] = alice.cookies["csrftoken"].value
    # Switching it off and on again leaves the file's options, and their trust, as they were.
    assert _post_broker(alice, options, pk=broker.pk).status_code == 302
    broker.refresh_from_db()
    assert broker.source == "file"
    moved = _post_broker(alice, {**options, "management_url": "http://h:2"}, pk=broker.pk)
    assert moved.status_code == 200 and "would not be expanded" in moved.content.decode()
    assert _post_broker(alice, {"management_url": "http://h:2"}, pk=broker.pk).status_code == 302
    broker.refresh_from_db()
    assert broker.source == "admin" and broker.options == {"management_url": "http://h:2"}


def test_a_new_address_does_not_get_the_stored_secrets(client_for, listener):
    url, seen = listener
    old = {
        "management_url": "http://127.0.0.1:1",
        "username": "guest",
        "password": SECRET,
        "amqp_url": f"amqp://ops:{SECRET}@127.0.0.1:1/%2F",
    }
    broker = Broker.objects.create(name="picked", kind="rabbitmq", options=old)
    alice = client_for("alice")
    page = alice.get(f"/admin/dashboard/broker/{broker.pk}/change/").content.decode()
    assert SECRET not in page and "•••" in page
    alice.defaults["HTTP_X_CSRFTOKEN"] = alice.cookies["csrftoken"].value
    shown = {**old, "password": "•••", "amqp_url": "amqp://ops:•••@127.0.0.1:1/%2F"}

    for moved in ({"management_url": url}, {"amqp_url": "amqp://ops:•••@evil.example:5672/%2F"}):
        response = _post_broker(alice, {**shown, **moved}, pk=broker.pk)
        html = response.content.decode()
        assert response.status_code == 200, moved
        assert f"{next(iter(moved))} changed, so the stored secrets are not sent" in html
        assert "again (or remove them)" in html and SECRET not in html
        broker.refresh_from_db()
        assert broker.options == old

    # The same address keeps them; a new one takes only what is typed again.
    assert _post_broker(alice, {**shown, "username": "ops"}, pk=broker.pk).status_code == 302
    broker.refresh_from_db()
    assert broker.options == {**old, "username": "ops"}
    typed = {"management_url": url, "username": "guest", "password": "typed-again"}
    assert _post_broker(alice, typed, pk=broker.pk).status_code == 302
    collector.collect(Broker.objects.get(pk=broker.pk))
    assert seen and set(seen) == {_basic("guest", "typed-again")}
