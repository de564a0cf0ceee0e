"""Alerts: incidents from the real RabbitMQ told to a real HTTP receiver and a real SMTP server.

Incidents are made for real: a broker pointed at a closed port is unreachable; pointed
back at the real RabbitMQ, it recovers. Delivery is driven by calling
`deliver.deliver_due(now)` directly, with `now` chosen to step over the retry waits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest
from django.core import serializers
from django.core.cache import cache

from dashboard import config
from dashboard.alerts import deliver
from dashboard.collection import collector
from dashboard.models import (
    AlertChannel,
    AlertRule,
    AuditEntry,
    DeliveryAttempt,
    Incident,
    Notification,
    Silence,
)
from dashboard.triage import evaluate as triage
from tests.app_fixtures import closed_port, wait_for
from tests.rabbit_fixtures import management

pytestmark = pytest.mark.django_db

SECRET = "whsec-Hunter2-n0t-for-anyone"
SLACK_TOKEN = "XoXb-slack-path-s3cret"


# -- a real HTTP receiver and a real SMTP server -------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer in turn; then 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, incident: Incident | None = None) -> list[str]:
        return [
            r.json["event"]
            for r in self.requests
            if incident is None or r.json.get("incident") == str(incident.public_id)
        ]


@pytest.fixture
def receiver() -> Any:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with got.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                got.requests.append(Received(self.path, headers, body))
                status = got.answers.pop(0) if got.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield got
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp(settings: Any) -> Any:
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
            if address.startswith("nobody@"):
                return "550 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            self.messages.append(envelope)
            return "250 OK"

    handler = Handler()
    port = closed_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS, settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = False, "", ""
    settings.DEFAULT_FROM_EMAIL = "sluice@example.com"
    yield handler
    controller.stop()


@pytest.fixture
def hook(receiver: Receiver, monkeypatch: Any) -> AlertChannel:
    """A signed webhook to the receiver, its secret in the environment."""
    monkeypatch.setenv("SLUICE_TEST_HOOK_SECRET", SECRET)
    return AlertChannel.objects.create(
        name="ops-hook",
        type="webhook",
        url=f"{receiver.url}/hook",
        secret="${SLUICE_TEST_HOOK_SECRET}",
        source="file",  # the file's channels may name any variable
    )


# -- incidents, made for real ----------------------------------------------------------


def go_down(broker: Any, at: float) -> triage.Outcome:
    """Collect and evaluate `broker` pointed at a port nothing listens on."""
    if "amqp_url" in broker.options:  # still the real one
        broker.options = {"management_url": f"http://127.0.0.1:{closed_port()}/"}
        broker.save()
    assert not collector.collect(broker, now=at)
    broker.refresh_from_db()
    return triage.evaluate(broker, now=at)


def come_back(broker: Any, rabbitmq: dict[str, str], at: float) -> triage.Outcome:
    broker.options = {
        "management_url": rabbitmq["management_url"],
        "amqp_url": rabbitmq["amqp_url"],
    }
    broker.save()
    assert collector.collect(broker, now=at), broker.error
    broker.refresh_from_db()
    return triage.evaluate(broker, now=at)


def when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def unreachable(broker: Any) -> Incident:
    return Incident.objects.filter(broker=broker, cause="unreachable").latest("id")


def restart_worker(broker: Any) -> None:
    """What a worker's death loses: its connections and the cached triage memory."""
    collector.forget_adapter(broker)
    cache.delete(triage.memo_key(broker))


# -- webhook, Slack, email ---------------------------------------------------------------


def test_a_webhook_is_told_of_firing_then_resolved_once_each_signed(
    rabbit_broker, rabbitmq, receiver, hook, settings
):
    settings.SLUICE_PUBLIC_URL = "https://sluice.example.com"
    t = time.time()
    outcome = go_down(rabbit_broker, t)
    assert outcome.notifications == 1
    incident = unreachable(rabbit_broker)
    assert incident.state == "open"
    assert deliver.deliver_due(when(t)) == 1
    assert deliver.deliver_due(when(t + 1)) == 0  # nothing more to send
    assert receiver.events(incident) == ["firing"]

    got = receiver.requests[0]
    assert got.path == "/hook"
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-sluice-signature"], expected)
    note = Notification.objects.get(incident=incident, event="firing")
    assert got.headers["x-sluice-delivery"] == str(note.public_id)
    body = got.json
    assert int(got.headers["x-sluice-timestamp"]) == body["timestamp"]
    assert abs(body["timestamp"] - time.time()) < 60
    assert body["broker"] == "rabbit" and body["cause"] == "unreachable"
    assert body["severity"] == "critical"
    assert body["summary"] == incident.summary and "unreachable" in body["summary"]
    assert body["evidence"]["error"] == incident.evidence["error"]
    assert body["since"] == incident.started_at.isoformat()
    assert body["link"] == f"https://sluice.example.com/incidents/{incident.public_id}/"

    # Still down: the same incident, nothing new to say (no repeat interval).
    go_down(rabbit_broker, t + 15)
    assert deliver.deliver_due(when(t + 15)) == 0

    outcome = come_back(rabbit_broker, rabbitmq, t + 30)
    assert incident in outcome.resolved and outcome.notifications == 1
    assert deliver.deliver_due(when(t + 30)) == 1
    assert deliver.deliver_due(when(t + 31)) == 0
    assert receiver.events(incident) == ["firing", "resolved"]
    resolved = receiver.requests[-1]
    assert resolved.json["at"] == when(t + 30).isoformat()
    assert resolved.headers["x-sluice-delivery"] != got.headers["x-sluice-delivery"]
    states = Notification.objects.filter(incident=incident).values_list("event", "state")
    assert sorted(states) == [("firing", "sent"), ("resolved", "sent")]


def test_a_channel_is_told_only_of_incidents_of_its_severity_or_above(
    rabbit_broker, receiver, hook
):
    pager = AlertChannel.objects.create(
        name="pager", type="webhook", url=f"{receiver.url}/pager", min_severity="critical"
    )
    # A rule turns this broker's unreachable incidents into warnings.
    AlertRule.objects.create(name="soft", detector="unreachable", broker="rab*", severity="warning")
    t = time.time()
    go_down(rabbit_broker, t)
    assert unreachable(rabbit_broker).severity == "warning"
    deliver.deliver_due(when(t))
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert not Notification.objects.filter(channel=pager).exists()


def test_a_worker_restart_sends_nothing_twice_and_a_late_resolution_still_goes_out(
    rabbit_broker, rabbitmq, receiver, hook
):
    t = time.time()
    go_down(rabbit_broker, t)
    incident = unreachable(rabbit_broker)
    # It resolves before any deliverer ran: both messages are stored, none sent.
    come_back(rabbit_broker, rabbitmq, t + 15)
    assert set(Notification.objects.values_list("event", "state")) == {
        ("firing", "pending"),
        ("resolved", "pending"),
    }
    restart_worker(rabbit_broker)
    assert deliver.deliver_due(when(t + 16)) == 2
    assert receiver.events(incident) == ["firing", "resolved"]  # in that order
    restart_worker(rabbit_broker)
    assert deliver.deliver_due(when(t + 17)) == 0
    # Evaluating again after the restart plans nothing more either.
    come_back(rabbit_broker, rabbitmq, t + 30)
    assert deliver.deliver_due(when(t + 31)) == 0
    assert receiver.events(incident) == ["firing", "resolved"]


def test_a_claimed_notification_is_sent_by_one_worker_and_a_dead_workers_claim_expires(
    rabbit_broker, receiver, hook
):
    t = time.time()
    go_down(rabbit_broker, t)
    note = Notification.objects.get(event="firing")
    # Worker A claims it, then dies before sending.
    assert deliver.claim(note.pk, "pending", when(t)) is not None
    # Worker B finds it taken: claimed once, by one worker.
    assert deliver.claim(note.pk, "pending", when(t)) is None
    assert deliver.deliver_due(when(t + 1)) == 0
    assert receiver.requests == []
    # A's lease runs out: B sends it, recording the attempt A lost.
    later = t + deliver.LEASE.total_seconds() + 1
    assert deliver.deliver_due(when(later)) == 1
    assert deliver.deliver_due(when(later + 1)) == 0
    assert len(receiver.requests) == 1
    note.refresh_from_db()
    assert note.state == "sent" and note.attempts == 2 and note.claim == ""
    tries = list(note.delivery_attempts.values_list("ok", "error"))
    assert tries[0][0] is False and "interrupted" in tries[0][1]
    assert tries[1] == (True, "")


def test_slack_gets_its_incoming_webhook_form(rabbit_broker, rabbitmq, receiver):
    AlertChannel.objects.create(name="chat", type="slack", url=f"{receiver.url}/services/x")
    t = time.time()
    go_down(rabbit_broker, t)
    incident = unreachable(rabbit_broker)
    deliver.deliver_due(when(t))
    come_back(rabbit_broker, rabbitmq, t + 15)
    deliver.deliver_due(when(t + 15))
    assert [r.path for r in receiver.requests] == ["/services/x", "/services/x"]
    firing, resolved = (r.json for r in receiver.requests)
    assert firing["text"].startswith("Firing [critical]: unreachable on rabbit: unreachable for")
    assert resolved["text"].startswith("Resolved [critical]: unreachable on rabbit")
    assert firing["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Firing [critical]: unreachable on rabbit"},
    }
    texts = json.dumps(firing["blocks"])
    assert f"/incidents/{incident.public_id}/|Open in Sluice>" in texts
    assert "*error*:" in texts
    assert "x-sluice-signature" not in receiver.requests[0].headers


def test_email_goes_through_the_smtp_server(rabbit_broker, rabbitmq, smtp, settings):
    settings.SLUICE_PUBLIC_URL = "https://sluice.example.com"
    AlertChannel.objects.create(
        name="mail", type="email", recipients="ops@example.com, oncall@example.com"
    )
    t = time.time()
    go_down(rabbit_broker, t)
    incident = unreachable(rabbit_broker)
    assert deliver.deliver_due(when(t)) == 1
    come_back(rabbit_broker, rabbitmq, t + 15)
    assert deliver.deliver_due(when(t + 15)) == 1
    assert len(smtp.messages) == 2
    firing, resolved = smtp.messages
    assert sorted(firing.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    assert firing.mail_from == "sluice@example.com"
    text = firing.content.decode()
    assert "Subject: [Sluice] Firing [critical]: unreachable on rabbit" in text
    assert f"https://sluice.example.com/incidents/{incident.public_id}/" in text
    assert incident.summary.split(":")[0] in text
    note = Notification.objects.get(event="firing")
    assert f"X-Sluice-Delivery: {note.public_id}" in text
    assert (
        "Subject: [Sluice] Resolved [critical]: unreachable on rabbit" in resolved.content.decode()
    )


def test_an_smtp_refusal_is_recorded_and_retried(rabbit_broker, smtp):
    AlertChannel.objects.create(name="mail", type="email", recipients="nobody@example.com")
    t = time.time()
    go_down(rabbit_broker, t)
    assert deliver.deliver_due(when(t)) == 0
    note = Notification.objects.get()
    assert note.state == "retry" and note.due_at == when(t + 10)
    attempt = note.delivery_attempts.get()
    assert attempt.ok is False and attempt.status is None
    assert attempt.error == "SMTP refused the recipients: nobody@example.com (550)"
    assert smtp.messages == []


# -- silences ----------------------------------------------------------------------------


def admin_post(client: Any, url: str, data: dict[str, Any]) -> Any:
    client.get(url)
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def test_a_silence_holds_back_an_incidents_messages_and_is_recorded(
    rabbit_broker, rabbitmq, receiver, hook, client_for
):
    alice = client_for("alice")
    now = datetime.now(UTC)
    ends = now + timedelta(hours=1)
    answer = admin_post(
        alice,
        "/admin/dashboard/silence/add/",
        {
            "broker": "rab*",
            "destination": "*",
            "cause": "unreachable",
            "starts_at_0": f"{now - timedelta(minutes=1):%Y-%m-%d}",
            "starts_at_1": f"{now - timedelta(minutes=1):%H:%M:%S}",
            "ends_at_0": f"{ends:%Y-%m-%d}",
            "ends_at_1": f"{ends:%H:%M:%S}",
            "comment": "upgrading RabbitMQ",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    silence = Silence.objects.get()
    assert silence.created_by == "alice"
    created = AuditEntry.objects.get(action="silence.create")
    assert created.user == "alice" and created.detail["comment"] == "upgrading RabbitMQ"
    # Another broker's silence holds back nothing here.
    Silence.objects.create(broker="other-*", ends_at=ends)

    t = time.time()
    outcome = go_down(rabbit_broker, t)
    assert outcome.notifications == 0
    incident = unreachable(rabbit_broker)
    note = Notification.objects.get(incident=incident)
    assert note.state == "silenced" and "upgrading" not in note.last_error
    assert note.last_error.startswith("silenced: unreachable on rab*:*")
    assert deliver.deliver_due(when(t + 1)) == 0
    # Resolved: nothing was sent about it, so there is nothing to close.
    come_back(rabbit_broker, rabbitmq, t + 15)
    assert deliver.deliver_due(when(t + 16)) == 0
    assert receiver.requests == []
    assert not Notification.objects.filter(event="resolved").exists()

    # Ended early (audited), it no longer holds anything back.
    answer = admin_post(
        alice,
        "/admin/dashboard/silence/",
        {"action": "end_now", "_selected_action": [silence.pk]},
    )
    assert answer.status_code == 302
    silence.refresh_from_db()
    assert not silence.active(datetime.now(UTC))
    assert AuditEntry.objects.get(action="silence.expire").user == "alice"
    t2 = time.time() + 1
    go_down(rabbit_broker, t2)
    second = unreachable(rabbit_broker)
    assert second.pk != incident.pk
    assert deliver.deliver_due(when(t2)) == 1
    assert receiver.events(second) == ["firing"]


# -- failing channels ------------------------------------------------------------------


def test_a_channel_answering_500_is_retried_after_a_wait_and_every_attempt_recorded(
    rabbit_broker, rabbitmq, receiver, hook
):
    receiver.answers = [500]
    t = time.time()
    go_down(rabbit_broker, t)
    assert deliver.deliver_due(when(t)) == 0
    note = Notification.objects.get()
    assert note.state == "retry" and note.attempts == 1
    assert note.due_at == when(t + deliver.backoff(1)) == when(t + 10)
    assert note.last_error.startswith("HTTP 500")
    # It resolves meanwhile: the resolved message waits for the firing one to go first.
    come_back(rabbit_broker, rabbitmq, t + 3)
    assert deliver.deliver_due(when(t + 5)) == 0  # neither is due yet
    assert len(receiver.requests) == 1
    resolved = Notification.objects.get(event="resolved")
    assert resolved.state == "pending" and resolved.attempts == 0
    assert deliver.deliver_due(when(t + 10)) == 2
    assert [r.json["event"] for r in receiver.requests] == ["firing", "firing", "resolved"]
    note.refresh_from_db()
    assert note.state == "sent" and note.attempts == 2
    tries = list(note.delivery_attempts.values_list("ok", "status"))
    assert tries == [(False, 500), (True, 200)]
    assert all(a.duration_ms >= 0 for a in note.delivery_attempts.all())
    # The retry is the same delivery: receivers can drop a duplicate.
    first, second, _ = receiver.requests
    assert first.headers["x-sluice-delivery"] == second.headers["x-sluice-delivery"]


def test_an_unreachable_channel_backs_off_then_fails_and_gets_no_resolved_message(
    rabbit_broker, rabbitmq, caplog
):
    AlertChannel.objects.create(
        name="gone", type="webhook", url=f"http://127.0.0.1:{closed_port()}/hook"
    )
    t = time.time()
    go_down(rabbit_broker, t)
    note = Notification.objects.get()
    at = t
    waits = []
    for _ in range(deliver.MAX_ATTEMPTS):
        assert deliver.deliver_due(when(at)) == 0
        note.refresh_from_db()
        if note.state == "retry":
            waits.append((note.due_at - when(at)).total_seconds())
            at = note.due_at.timestamp()
    assert waits == [10, 30, 90, 270, 810, 2430, 3600]
    assert note.state == "failed" and note.attempts == deliver.MAX_ATTEMPTS
    tries = list(note.delivery_attempts.all())
    assert len(tries) == deliver.MAX_ATTEMPTS
    assert {(a.ok, a.status) for a in tries} == {(False, None)}
    assert {a.error for a in tries} == {"cannot connect: Connection refused"}
    assert "failed (attempt 8 of 8): cannot connect" in caplog.text
    assert deliver.deliver_due(when(at + 7200)) == 0
    # The firing message never arrived, so no resolved one follows it.
    come_back(rabbit_broker, rabbitmq, at + 7200)
    assert not Notification.objects.filter(event="resolved").exists()


# -- repeats -------------------------------------------------------------------------


def test_an_open_incident_is_repeated_each_interval_until_acknowledged(
    rabbit_broker, receiver, hook
):
    hook.repeat_seconds = 60
    hook.save()
    t = time.time()
    go_down(rabbit_broker, t)
    incident = unreachable(rabbit_broker)
    deliver.deliver_due(when(t))
    for step in (15, 30, 45):
        go_down(rabbit_broker, t + step)
        deliver.deliver_due(when(t + step))
    assert receiver.events(incident) == ["firing"]
    go_down(rabbit_broker, t + 60)
    assert deliver.deliver_due(when(t + 60)) == 1
    assert receiver.events(incident) == ["firing", "repeat"]
    assert receiver.requests[-1].json["seq"] == 1
    for step in (75, 90, 105):
        go_down(rabbit_broker, t + step)
        deliver.deliver_due(when(t + step))
    assert receiver.events(incident) == ["firing", "repeat"]
    go_down(rabbit_broker, t + 120)
    deliver.deliver_due(when(t + 120))
    assert [r.json["seq"] for r in receiver.requests] == [0, 1, 2]

    # A repeat planned, then the incident acknowledged before it went: not sent.
    go_down(rabbit_broker, t + 180)
    assert Notification.objects.get(event="repeat", seq=3).state == "pending"
    Incident.objects.filter(pk=incident.pk).update(
        acknowledged_at=when(t + 181), acknowledged_by="bob"
    )
    assert deliver.deliver_due(when(t + 181)) == 0
    skipped = Notification.objects.get(event="repeat", seq=3)
    assert skipped.state == "skipped" and skipped.last_error == "acknowledged by bob"
    # Acknowledged: no more repeats, however long it stays open.
    for step in (240, 300, 600):
        go_down(rabbit_broker, t + step)
        deliver.deliver_due(when(t + step))
    assert receiver.events(incident) == ["firing", "repeat", "repeat"]
    assert Notification.objects.filter(event="repeat").count() == 3


# -- what was configured, and what must never show ------------------------------------


def test_secrets_never_appear_in_rows_logs_or_admin_pages(
    rabbit_broker, rabbitmq, receiver, hook, monkeypatch, caplog, client_for
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SLUICE_TEST_SLACK_URL", f"{receiver.url}/services/{SLACK_TOKEN}")
    monkeypatch.setenv("SLUICE_TEST_DEAD_URL", f"http://127.0.0.1:{closed_port()}/{SLACK_TOKEN}")
    slack = AlertChannel.objects.create(
        name="chat", type="slack", url="${SLUICE_TEST_SLACK_URL}", source="file"
    )
    dead = AlertChannel.objects.create(
        name="dead",
        type="webhook",
        url="${SLUICE_TEST_DEAD_URL}",
        secret=hook.secret,
        source="file",
    )
    receiver.answers = [500]
    t = time.time()
    go_down(rabbit_broker, t)
    deliver.deliver_due(when(t))
    deliver.deliver_due(when(t + 10))
    come_back(rabbit_broker, rabbitmq, t + 15)
    deliver.deliver_due(when(t + 40))
    assert {r.path for r in receiver.requests} == {"/hook", f"/services/{SLACK_TOKEN}"}
    assert DeliveryAttempt.objects.filter(notification__channel=dead, ok=False).count() >= 2

    alice = client_for("alice")
    answer = admin_post(
        alice,
        "/admin/dashboard/alertchannel/",
        {"action": "send_test", "_selected_action": [hook.pk, slack.pk, dead.pk]},
    )
    assert answer.status_code == 302
    tests = AuditEntry.objects.filter(action="alert.channel.test")
    assert {(a.destination, a.result) for a in tests} == {
        ("ops-hook", "ok"),
        ("chat", "ok"),
        ("dead", "failed"),
    }

    pages = [
        "/admin/dashboard/alertchannel/",
        f"/admin/dashboard/alertchannel/{hook.pk}/change/",
        f"/admin/dashboard/alertchannel/{slack.pk}/change/",
        f"/admin/dashboard/alertchannel/{dead.pk}/change/",
        "/admin/dashboard/notification/",
        "/admin/dashboard/deliveryattempt/",
        "/admin/dashboard/auditentry/",
    ]
    pages += [f"/admin/dashboard/notification/{n.pk}/change/" for n in Notification.objects.all()]
    for url in pages:
        page = alice.get(url, follow=True)
        assert page.status_code == 200, url
        text = page.content.decode()
        assert SECRET not in text and SLACK_TOKEN not in text, url
    assert "${SLUICE_TEST_HOOK_SECRET}" in alice.get(pages[1]).content.decode()
    rows = [
        *AlertChannel.objects.all(),
        *Notification.objects.all(),
        *DeliveryAttempt.objects.all(),
        *AuditEntry.objects.all(),
    ]
    stored = serializers.serialize("json", rows)
    assert SECRET not in stored and SLACK_TOKEN not in stored
    assert "cannot connect: Connection refused" in stored
    assert SECRET not in caplog.text and SLACK_TOKEN not in caplog.text
    assert "channel dead failed" in caplog.text or "to channel dead failed" in caplog.text


def test_channels_from_the_admin_may_read_only_allowed_variables(client_for, settings):
    alice = client_for("alice")
    form = {
        "name": "mine",
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "secret": "${SECRET_KEY}",
        "min_severity": "warning",
        "repeat_seconds": "0",
        "enabled": "on",
    }
    answer = admin_post(alice, "/admin/dashboard/alertchannel/add/", form)
    assert answer.status_code == 200
    assert "${SECRET_KEY} would not be expanded" in answer.content.decode()
    literal = admin_post(alice, "/admin/dashboard/alertchannel/add/", {**form, "secret": "hunter2"})
    assert "Write the secret as ${VAR}" in literal.content.decode()
    assert not AlertChannel.objects.exists()

    settings.SLUICE_ADMIN_ENV_ALLOWLIST = ["SLUICE_TEST_HOOK_SECRET"]
    answer = admin_post(
        alice,
        "/admin/dashboard/alertchannel/add/",
        {**form, "secret": "${SLUICE_TEST_HOOK_SECRET}"},
    )
    assert answer.status_code == 302
    channel = AlertChannel.objects.get()
    assert channel.source == "admin" and channel.secret == "${SLUICE_TEST_HOOK_SECRET}"
    assert AuditEntry.objects.filter(action="admin.add.alertchannel", user="alice").exists()
    # Only admins edit channels.
    assert client_for("bob").get("/admin/dashboard/alertchannel/").status_code == 302


def test_the_rule_editor_checks_rules_and_audits_them(client_for):
    alice = client_for("alice")
    form = {
        "name": "orders-backlog",
        "detector": "threshold",
        "metric": "backlog",
        "threshold": "",
        "broker": "*",
        "destination": "orders.*",
        "severity": "critical",
        "enabled": "on",
    }
    answer = admin_post(alice, "/admin/dashboard/alertrule/add/", form)
    assert "needs a metric and a threshold" in answer.content.decode()
    answer = admin_post(alice, "/admin/dashboard/alertrule/add/", {**form, "threshold": "1000"})
    assert answer.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.metric, rule.threshold, rule.source) == ("backlog", 1000.0, "admin")
    assert AuditEntry.objects.filter(action="admin.add.alertrule", user="alice").exists()


ALERTS_FILE = """
[[broker]]
name = "rabbit-prod"
kind = "rabbitmq"
management_url = "http://127.0.0.1:15672"

[[alert_rule]]
name = "orders-backlog"
metric = "backlog"
threshold = 10000
destination = "orders.*"
severity = "critical"

[[alert_rule]]
name = "quiet-stalls"
detector = "stalled"
broker = "rabbit-*"
enabled = false

[[alert_channel]]
name = "ops-hook"
type = "webhook"
url = "https://hooks.example.com/sluice"
secret = "${SLUICE_TEST_HOOK_SECRET}"
min_severity = "critical"
repeat_seconds = 1800

[[alert_channel]]
name = "ops-mail"
type = "email"
recipients = ["ops@example.com", "oncall@example.com"]
"""


def test_the_file_declares_rules_and_channels_kept_in_step(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_HOOK_SECRET", SECRET)
    path = tmp_path / "sluice.toml"
    path.write_text(ALERTS_FILE)
    AlertRule.objects.create(name="by-hand", metric="lag", threshold=5)
    AlertChannel.objects.create(name="by-hand", type="slack", url="https://hooks.slack.com/x")
    assert config.sync(path, force=True)
    rules = {r.name: r for r in AlertRule.objects.all()}
    assert set(rules) == {"orders-backlog", "quiet-stalls", "by-hand"}
    assert (rules["orders-backlog"].metric, rules["orders-backlog"].threshold) == ("backlog", 1e4)
    assert rules["quiet-stalls"].detector == "stalled" and not rules["quiet-stalls"].enabled
    assert rules["by-hand"].source == "admin"
    hook = AlertChannel.objects.get(name="ops-hook")
    assert (hook.source, hook.min_severity, hook.repeat_seconds) == ("file", "critical", 1800)
    assert hook.secret == "${SLUICE_TEST_HOOK_SECRET}"  # stored as written, never expanded
    assert AlertChannel.objects.get(name="ops-mail").recipients == (
        "ops@example.com, oncall@example.com"
    )

    # Taken out of the file: the rule goes, the channel is turned off; the admin's stay.
    path.write_text(ALERTS_FILE.split('[[alert_rule]]\nname = "quiet-stalls"')[0])
    config.sync(path, force=True)
    assert set(AlertRule.objects.values_list("name", flat=True)) == {"orders-backlog", "by-hand"}
    assert set(AlertChannel.objects.filter(enabled=True).values_list("name", flat=True)) == {
        "by-hand"
    }


@pytest.mark.parametrize(
    "text,entry,message",
    [
        (
            "[[alert_rule]]\nname = 'r'\nmetric = 'depth'\nthreshold = 1\n",
            "#1 ('r')",
            "metric must",
        ),
        ("[[alert_rule]]\nname = 'r'\nmetric = 'backlog'\n", "#1 ('r')", "threshold is required"),
        ("[[alert_rule]]\nname = 'r'\nmetric = 'lag'\nthreshold = 1\nlimit = 2\n", "#1", "limit"),
        ("[[alert_rule]]\nname = 'r'\ndetector = 'Bad Name'\n", "#1 ('r')", "detector must"),
        ("[[alert_rule]]\nname = 'r'\ndetector = 'stalled'\nseverity = 'high'\n", "#1", "severity"),
        ("[[alert_channel]]\nname = 'c'\ntype = 'sms'\n", "#1 ('c')", "type must be one of"),
        ("[[alert_channel]]\nname = 'c'\ntype = 'webhook'\n", "#1 ('c')", "url is required"),
        (
            "[[alert_channel]]\nname = 'c'\ntype = 'webhook'\nurl = 'https://h/'\nsecret = 'hunter2'\n",
            "#1 ('c')",
            "secret must be written as ${VAR}",
        ),
        (
            "[[alert_channel]]\nname = 'c'\ntype = 'webhook'\nurl = 'https://h/'\n"
            "secret = '${SLUICE_NOT_SET_ANYWHERE}'\n",
            "#1 ('c')",
            "SLUICE_NOT_SET_ANYWHERE",
        ),
        ("[[alert_channel]]\nname = 'c'\ntype = 'email'\n", "#1 ('c')", "recipients is required"),
        (
            "[[alert_channel]]\nname = 'c'\ntype = 'email'\nrecipients = ['a@b']\n"
            "repeat_seconds = -5\n",
            "#1 ('c')",
            "repeat_seconds must",
        ),
        (
            "[[alert_channel]]\nname='c'\ntype='email'\nrecipients=['a@b']\n"
            "[[alert_channel]]\nname='c'\ntype='email'\nrecipients=['a@b']\n",
            "#2 ('c')",
            "already has this name",
        ),
        ("[alerts]\nx = 1\n", "file", "unknown table"),
    ],
)
def test_mistakes_in_alert_entries_name_the_file_the_entry_and_the_problem(
    tmp_path, text, entry, message
):
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert entry in err.value.entry
    assert message in err.value.message


def test_the_readme_example_is_a_valid_file(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Alerts", 1)[1]
    example = section.split("```toml", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("SLUICE_HOOK_SECRET", "x")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/x")
    path = tmp_path / "sluice.toml"
    path.write_text(example)
    found = config.read(path)
    assert found.rules and found.channels


# -- end to end: the worker's task, and a real queue losing its consumer ---------------


@pytest.fixture
def eager_tasks() -> Any:
    """`.delay()` runs the task at once, in this process, as a worker would."""
    from dashboard import celery_app

    was = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = was


def test_the_collection_task_sends_what_triage_planned(rabbit_broker, receiver, hook, eager_tasks):
    from dashboard import tasks

    rabbit_broker.options = {"management_url": f"http://127.0.0.1:{closed_port()}/"}
    rabbit_broker.save()
    tasks.collect_broker.run(rabbit_broker.pk)
    incident = unreachable(rabbit_broker)
    assert receiver.events(incident) == ["firing"]
    assert Notification.objects.get().state == "sent"


def shows(rabbitmq: dict[str, str], queue: str, **want: int) -> bool:
    info = management(rabbitmq, "GET", f"/api/queues/%2F/{quote(queue, safe='')}").json()
    return all(info.get(k) == v for k, v in want.items())


def test_a_queue_losing_its_consumer_is_told_and_so_is_its_recovery(
    rabbit_broker, rabbitmq, amqp, unique_name, receiver, hook
):
    from tests.app_fixtures import collect_at

    queue = unique_name
    amqp.queue_declare(queue)
    reader = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    reader.channel().basic_consume(queue, lambda *a: None, auto_ack=True)
    wait_for(lambda: shows(rabbitmq, queue, consumers=1))

    def step(at: float) -> triage.Outcome:
        collect_at(rabbit_broker, at)
        rabbit_broker.refresh_from_db()
        outcome = triage.evaluate(rabbit_broker, now=at)
        deliver.deliver_due(when(at))
        return outcome

    t = time.time()
    step(t)
    step(t + 15)
    reader.close()
    for _ in range(30):
        amqp.basic_publish("", queue, b"order")
    wait_for(lambda: shows(rabbitmq, queue, consumers=0, messages_ready=30))
    step(t + 30)
    incident = Incident.objects.get(broker=rabbit_broker, cause="consumers_lost", key=f"//{queue}")
    assert receiver.events(incident) == ["firing"]
    told = [r.json for r in receiver.requests if r.json["incident"] == str(incident.public_id)]
    assert told[0]["destination"] == queue and told[0]["key"] == f"//{queue}"
    assert told[0]["summary"].startswith("lost its 1 consumer(s)")

    reader = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    reader.channel().basic_consume(queue, lambda *a: None, auto_ack=True)
    try:
        wait_for(lambda: shows(rabbitmq, queue, consumers=1, messages_ready=0))
        step(t + 45)
    finally:
        reader.close()
    assert receiver.events(incident) == ["firing", "resolved"]


def test_a_growing_backlog_taken_over_by_a_stall_closes_as_superseded_not_resolved(
    rabbit_broker, rabbitmq, amqp, unique_name, receiver, hook, client_for
):
    from tests.app_fixtures import collect_at

    queue = unique_name
    amqp.queue_declare(queue)
    worker = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = worker.channel()
    channel.basic_qos(prefetch_count=5)
    held: list[int] = []
    channel.basic_consume(queue, lambda ch, method, props, body: held.append(method.delivery_tag))
    counts = {"published": 0, "acked": 0}

    def holds(messages: int) -> bool:
        info = management(rabbitmq, "GET", f"/api/queues/%2F/{quote(queue, safe='')}").json()
        return info.get("messages") == messages and info.get("messages_unacknowledged") == 5

    def step(at: float, ack: int) -> None:
        """A slow worker acknowledges `ack` of the five it holds; 40 more arrive; collect."""
        worker.process_data_events(time_limit=0.3)
        done, held[:] = held[:ack], held[ack:]
        for tag in done:
            channel.basic_ack(tag)
        counts["acked"] += len(done)
        for _ in range(40):
            amqp.basic_publish("", queue, b"job")
        counts["published"] += 40
        worker.process_data_events(time_limit=0.3)  # the next ones, up to its prefetch
        wait_for(lambda: holds(counts["published"] - counts["acked"]))
        collect_at(rabbit_broker, at)
        rabbit_broker.refresh_from_db()
        triage.evaluate(rabbit_broker, now=at)
        deliver.deliver_due(when(at))

    def live(cause: str) -> Incident | None:
        return Incident.objects.filter(broker=rabbit_broker, cause=cause, key=f"//{queue}").first()

    try:
        t = at = time.time()
        while (growing := live("backlog_growing")) is None or growing.state != "open":
            step(at, ack=5)
            at += 10
            assert at - t < 150, "the growing backlog never opened"
        assert receiver.events(growing) == ["firing"]

        # The worker hangs on the five it holds; the backlog goes on growing.
        def still() -> bool:
            info = management(rabbitmq, "GET", f"/api/queues/%2F/{quote(queue, safe='')}").json()
            rates = info.get("message_stats") or {}
            return not any(
                (rates.get(f"{r}_details") or {}).get("rate", 0) for r in ("ack", "deliver_get")
            )

        wait_for(still, timeout=40)
        while live("stalled") is None:
            step(at, ack=0)
            at += 10
            assert at - t < 400, "the stall never opened"
    finally:
        worker.close()

    growing.refresh_from_db()
    assert growing.state == "resolved"
    assert growing.evidence["superseded_by"] == "stalled"
    assert receiver.events(growing) == ["firing", "resolved"]
    told = [r.json for r in receiver.requests if r.json["incident"] == str(growing.public_id)]
    assert told[0]["superseded_by"] is None and told[-1]["superseded_by"] == "stalled"
    message = deliver.message_for(Notification.objects.get(incident=growing, event="resolved"))
    assert message.headline.startswith("Superseded by stalled [")
    assert "the stalled incident on the same place goes on from here" in message.text()
    page = client_for("carol").get(f"/incidents/{growing.public_id}/").content.decode()
    assert "Superseded" in page and "by the stalled incident" in page
