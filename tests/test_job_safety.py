"""Destructive RabbitMQ jobs start only from a confirmed preview, on the real broker.

A RabbitMQ job takes messages off its queue; a discard deletes them. Through the
API none runs in one call, a discard outside the dead-letter queues is for
admins, and a preview that went stale is said to be so at start. That every
kind's replay which removes its originals needs a confirmed preview is in the
contract suite (tests/contract/test_bad_input.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.models import AuditEntry, Destination, Job
from tests import test_jobs
from tests.test_jobs import kill, source

pytestmark = pytest.mark.django_db

# The engine tests' fixture: dead letters in RabbitMQ.
dl = test_jobs.dl


def api(client: Any, token: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        f"/api/v1{path}",
        data=json.dumps(body or {}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def discard(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "broker": "rabbit",
        "action": "discard",
        "source": key,
        "selection": {"all": True},
        **extra,
    }


def run(job_id: str) -> Job:
    job = Job.objects.get(public_id=job_id)
    return jobs.run(job.pk, jobservice.transfer_for, jobservice.router)


def test_an_operator_cannot_empty_a_queue_in_one_call(rabbit_broker, dl, token_for, client):
    """The probe's reproduction: discard {"all": true} through the API ran at once."""
    kill(dl, 6)
    key = source(rabbit_broker, dl).key
    response = api(client, token_for("bob"), "/jobs", discard(key))
    assert response.status_code == 409
    assert '"dry_run": true' in response.json()["error"]
    assert "/start" in response.json()["error"]
    assert Job.objects.count() == 0
    assert dl.depth(dl.dlq) == 6


def test_preview_then_confirm_discards_what_the_preview_counted(
    rabbit_broker, dl, token_for, client
):
    kill(dl, 5)
    key = source(rabbit_broker, dl).key
    token = token_for("bob")
    response = api(client, token, "/jobs", discard(key, dry_run=True))
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["state"] == "preview" and job["preview"]["estimate"] == 5
    assert job["preview"]["confirm"] == f"discard 5 from {key}"
    assert dl.depth(dl.dlq) == 5

    refused = api(client, token, f"/jobs/{job['id']}/start")
    assert refused.status_code == 409
    assert f'{{"confirm": "discard 5 from {key}"}}' in refused.json()["error"]
    wrong = api(client, token, f"/jobs/{job['id']}/start", {"confirm": "discard 1 from x"})
    assert wrong.status_code == 409 and "got 'discard 1 from x'" in wrong.json()["error"]
    assert Job.objects.get(public_id=job["id"]).state == Job.PREVIEW

    started = api(client, token, f"/jobs/{job['id']}/start", {"confirm": job["preview"]["confirm"]})
    assert started.status_code == 200 and started.json()["state"] == "queued"
    done = run(job["id"])
    assert (done.state, done.discarded) == ("done", 5)
    assert dl.depth(dl.dlq) == 0
    finish = AuditEntry.objects.get(action="job.discard.finish")
    assert (finish.count, finish.result, finish.user) == (5, "ok", "bob")


def test_a_preview_that_went_stale_is_not_started_and_shows_the_new_count(
    rabbit_broker, dl, token_for, client
):
    kill(dl, 5)
    key = source(rabbit_broker, dl).key
    token = token_for("bob")
    job = api(client, token, "/jobs", discard(key, dry_run=True)).json()
    for _ in range(3):  # three more dead letters arrive before the confirmation
        dl.channel.basic_publish("", dl.dlq, b"late")
    response = api(
        client, token, f"/jobs/{job['id']}/start", {"confirm": job["preview"]["confirm"]}
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert "counted 5" in error and "counts 8" in error and f"discard 8 from {key}" in error
    again = Job.objects.get(public_id=job["id"])
    assert again.state == Job.PREVIEW and again.preview["estimate"] == 8
    assert dl.depth(dl.dlq) == 8

    response = api(client, token, f"/jobs/{job['id']}/start", {"confirm": f"discard 8 from {key}"})
    assert response.status_code == 200
    assert run(job["id"]).discarded == 8


def test_an_estimated_preview_that_grows_starts_and_records_the_change(
    rabbit_broker, dl, token_for, client, settings
):
    """Beyond the peek limit the count is an estimate from the last collection's queue
    length, which moves between collections: a change is recorded, not refused, so a
    confirmation cannot race the collector (nor a queue that keeps filling)."""
    settings.SLUICE_PEEK_LIMIT = 3
    kill(dl, 6)
    src = source(rabbit_broker, dl)
    Destination.objects.filter(pk=src.pk).update(backlog=5)  # a collection mid-fill
    token = token_for("bob")
    job = api(client, token, "/jobs", discard(src.key, dry_run=True)).json()
    assert job["preview"]["estimate"] == 5 and not job["preview"]["complete"]
    Destination.objects.filter(pk=src.pk).update(backlog=6)  # the next collection
    response = api(
        client, token, f"/jobs/{job['id']}/start", {"confirm": job["preview"]["confirm"]}
    )
    assert response.status_code == 200, response.content
    assert "counted 5" in response.json()["preview"]["at_start"]
    start = AuditEntry.objects.get(action="job.discard.start")
    assert "counts 6" in start.detail["preview_changed"]
    assert run(job["id"]).discarded == 6


def test_a_preview_with_fewer_messages_at_start_starts_and_says_so(
    rabbit_broker, dl, token_for, client
):
    kill(dl, 4)
    key = source(rabbit_broker, dl).key
    token = token_for("bob")
    job = api(client, token, "/jobs", discard(key, dry_run=True)).json()
    dl.channel.basic_get(dl.dlq, auto_ack=True)  # a consumer took one meanwhile
    response = api(
        client, token, f"/jobs/{job['id']}/start", {"confirm": job["preview"]["confirm"]}
    )
    assert response.status_code == 200
    assert "counted 4" in response.json()["preview"]["at_start"]
    assert "counts 3" in response.json()["preview"]["at_start"]
    start = AuditEntry.objects.get(action="job.discard.start")
    assert "counts 3" in start.detail["preview_changed"]
    assert run(job["id"]).discarded == 3


def test_discarding_from_a_queue_that_is_no_dead_letter_queue_needs_the_admin_role(
    rabbit_broker, dl, token_for, client
):
    kill(dl, 3)
    Destination.objects.create(
        broker=rabbit_broker,
        kind="queue",
        key=f"//{dl.originals[0]}",
        name=dl.originals[0],
        vhost="/",
        type="classic",
    )
    dl.channel.basic_publish("", dl.originals[0], b"live work")
    body = discard(f"//{dl.originals[0]}", dry_run=True)
    response = api(client, token_for("bob"), "/jobs", body)
    assert response.status_code == 403
    assert "not a known dead-letter queue" in response.json()["error"]
    assert "admin" in response.json()["error"]
    assert Job.objects.count() == 0
    # The dead-letter queue itself (its name matches *.dlq) is the operator's to empty.
    source(rabbit_broker, dl)
    assert (
        api(client, token_for("bob"), "/jobs", discard(f"//{dl.dlq}", dry_run=True)).status_code
        == 201
    )
    # An admin may preview and start a discard anywhere; an operator may not start hers.
    response = api(client, token_for("alice"), "/jobs", body)
    assert response.status_code == 201
    job = response.json()
    confirm = {"confirm": job["preview"]["confirm"]}
    assert api(client, token_for("bob"), f"/jobs/{job['id']}/start", confirm).status_code == 403
    assert api(client, token_for("alice"), f"/jobs/{job['id']}/start", confirm).status_code == 200
    assert dl.depth(dl.originals[0]) == 1  # queued, not yet run


def test_the_preview_page_shows_what_will_be_removed_and_confirms_it(
    rabbit_broker, dl, client_for, personas
):
    kill(dl, 3)
    key = source(rabbit_broker, dl).key
    bob = client_for("bob")
    job = jobservice.create(personas["bob"], rabbit_broker, discard(key, dry_run=True))
    page = bob.get(f"/jobs/{job.public_id}/").content.decode()
    assert "they are deleted and cannot be brought back" in page
    assert f'name="confirm" value="discard 3 from {key}"' in page
    response = bob.post(
        f"/jobs/{job.public_id}/start",
        {"confirm": f"discard 3 from {key}", "csrfmiddlewaretoken": bob.cookies["csrftoken"].value},
    )
    assert response.status_code == 302
    assert Job.objects.get(pk=job.pk).state == Job.QUEUED
