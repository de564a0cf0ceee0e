"""Incidents as people meet them: the On fire section, the history, acknowledge and snooze, the API.

Incidents here come from real failures: a broker on a port nothing listens on
is unreachable; pointed back at the real RabbitMQ it recovers.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.collection import collector
from dashboard.models import AuditEntry, Broker, Incident
from dashboard.triage import evaluate as triage
from tests.app_fixtures import closed_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def failing(rabbitmq: dict[str, str]) -> Broker:
    return Broker.objects.create(
        name="rabbit-gone",
        kind="rabbitmq",
        options={
            "management_url": f"http://127.0.0.1:{closed_port()}/",
            "amqp_url": rabbitmq["amqp_url"],
        },
    )


def fail(broker: Broker, at: float | None = None) -> Incident:
    at = time.time() if at is None else at
    assert not collector.collect(broker, now=at)
    broker.refresh_from_db()
    triage.evaluate(broker, now=at)
    return Incident.objects.get(broker=broker, cause="unreachable", state="open")


def recover(broker: Broker, rabbitmq: dict[str, str], at: float | None = None) -> None:
    at = time.time() if at is None else at
    broker.options = {**broker.options, "management_url": rabbitmq["management_url"]}
    broker.save()
    assert collector.collect(broker, now=at), broker.error
    broker.refresh_from_db()
    triage.evaluate(broker, now=at)


def on_fire(html: str) -> str:
    found = re.search(r'<section class="card on-fire.*?</section>', html, re.S)
    assert found, "no On fire section"
    return found.group(0)


def test_all_is_well_says_what_is_watched(client_for, rabbit_broker):
    assert collector.collect(rabbit_broker), rabbit_broker.error
    section = on_fire(client_for("carol").get("/").content.decode())
    assert "All is well" in section
    assert "Nothing is on fire. Watching 1 broker and" in section


def test_an_unreachable_broker_is_on_fire_with_its_cause_since_and_actions(client_for, failing):
    incident = fail(failing)
    section = on_fire(client_for("carol").get("/").content.decode())
    assert "On fire" in section and 'data-cause="unreachable"' in section
    assert "unreachable for 0 s" in section
    assert f'href="/brokers/{failing.name}/"' in section
    assert incident.severity == "critical"
    assert f"/incidents/{incident.public_id}/" in section

    page = client_for("carol").get(f"/incidents/{incident.public_id}/")
    assert page.status_code == 200
    assert "A broker is unreachable when" in page.content.decode()


def test_the_same_failure_keeps_one_incident_and_recovery_resolves_it(failing, rabbitmq):
    t = time.time()
    first = fail(failing, t)
    again = fail(failing, t + 5)
    assert first.pk == again.pk and again.seen == 2
    recover(failing, rabbitmq, t + 10)
    first.refresh_from_db()
    assert first.state == "resolved" and first.resolved_at is not None
    # A second outage is a second incident, and the page counts them.
    failing.options = {**failing.options, "management_url": f"http://127.0.0.1:{closed_port()}/"}
    failing.save()
    second = fail(failing, t + 20)
    assert second.pk != first.pk
    assert second.recurrences() == 2


def test_a_standing_incident_is_rewritten_when_what_it_shows_changes_or_once_a_minute(
    failing,
):
    t = time.time()
    fail(failing, t)
    written = fail(failing, t + 185)  # "unreachable for 3 min": its text changed
    assert "unreachable for 3 min" in written.summary
    for later in (t + 195, t + 205):  # still "3 min": the row is left as it is
        same = fail(failing, later)
        assert (same.seen_at, same.summary) == (written.seen_at, written.summary)
    changed = fail(failing, t + 215)  # "4 min": written at once
    assert "unreachable for 4 min" in changed.summary
    assert changed.seen_at.timestamp() == pytest.approx(t + 215)
    # Unchanged, but its last write a minute old: written again, so seen_at stays true.
    Incident.objects.filter(pk=changed.pk).update(seen_at=changed.seen_at - timedelta(seconds=55))
    beat = fail(failing, t + 220)
    assert beat.summary == changed.summary
    assert beat.seen_at.timestamp() == pytest.approx(t + 220)


def test_an_operator_acknowledges_and_it_leaves_on_fire_audited(client_for, failing):
    incident = fail(failing)
    bob = client_for("bob")
    page = bob.get("/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token
    answer = bob.post(
        f"/incidents/{incident.public_id}/ack",
        {"csrfmiddlewaretoken": token.group(1), "next": "/"},
    )
    assert answer.status_code == 302 and answer["Location"] == "/"
    incident.refresh_from_db()
    assert incident.acknowledged_by == "bob"
    section = on_fire(bob.get("/").content.decode())
    assert 'data-cause="unreachable"' not in section
    assert "1 more acknowledged or snoozed" in section
    entry = AuditEntry.objects.get(action="incident.acknowledge")
    assert entry.user == "bob" and entry.broker == failing.name


def test_acknowledging_needs_the_operator_role_and_a_csrf_token(client_for, failing, token_for):
    incident = fail(failing)
    assert client_for("carol").post(f"/incidents/{incident.public_id}/ack").status_code == 403
    # Signed in as an operator, but no CSRF token: refused.
    assert client_for("bob").post(f"/incidents/{incident.public_id}/ack").status_code == 403
    viewer = token_for("carol")
    answer = client_for(None).post(
        f"/api/v1/incidents/{incident.public_id}/ack", HTTP_AUTHORIZATION=f"Bearer {viewer}"
    )
    assert answer.status_code == 403
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    assert not AuditEntry.objects.filter(action="incident.acknowledge").exists()


def test_the_api_lists_acknowledges_and_snoozes(client_for, failing, token_for):
    incident = fail(failing)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token_for('bob')}"}
    api = client_for(None)
    listed = api.get("/api/v1/incidents?state=open", **bearer).json()["incidents"]
    assert [i["id"] for i in listed] == [str(incident.public_id)]
    assert listed[0]["cause"] == "unreachable" and listed[0]["severity"] == "critical"
    assert listed[0]["actions"] == [{"label": "Broker", "url": f"/brokers/{failing.name}/"}]
    assert api.get("/api/v1/incidents?state=nonsense", **bearer).status_code == 400

    bad = api.post(
        f"/api/v1/incidents/{incident.public_id}/snooze",
        json.dumps({"minutes": 0}),
        content_type="application/json",
        **bearer,
    )
    assert bad.status_code == 400 and "minutes" in bad.json()["error"]
    incident.refresh_from_db()
    assert incident.snoozed_until is None

    snoozed = api.post(
        f"/api/v1/incidents/{incident.public_id}/snooze",
        json.dumps({"minutes": 30}),
        content_type="application/json",
        **bearer,
    ).json()
    assert snoozed["snoozed_until"] is not None
    assert AuditEntry.objects.get(action="incident.snooze").detail["minutes"] == 30
    acked = api.post(f"/api/v1/incidents/{incident.public_id}/ack", **bearer).json()
    assert acked["acknowledged_by"] == "bob"
    assert api.get("/api/v1/incidents/not-a-uuid", **bearer).status_code == 404


def test_open_incidents_are_counted_in_metrics(client_for, failing, token_for):
    fail(failing)
    text = (
        client_for(None)
        .get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}")
        .content.decode()
    )
    found: dict[tuple[Any, ...], float] = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (
        "sluice_incidents_open",
        (("broker", failing.name), ("cause", "unreachable"), ("severity", "critical")),
    )
    assert found[key] == 1.0


def test_the_history_lists_open_and_resolved(client_for, failing, rabbitmq):
    t = time.time()
    fail(failing, t)
    recover(failing, rabbitmq, t + 10)
    page = client_for("carol").get("/incidents/?state=resolved").content.decode()
    assert "resolved" in page and failing.name in page
    assert "No incidents open" in client_for("carol").get("/incidents/?state=open").content.decode()
