"""The audit log: how each job ended, every failed publish, and a CSV export a spreadsheet cannot run."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.models import AuditEntry, Broker, Job
from tests import test_jobs
from tests.app_fixtures import closed_port
from tests.test_jobs import kill, make_job, run

pytestmark = pytest.mark.django_db

# Fixtures shared with the engine tests: dead letters in RabbitMQ, and in NATS.
dl = test_jobs.dl


def finish_records(job: Job) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(action=f"job.{job.action}.finish", detail__job=str(job.public_id))
    )


# -- how each job ended ------------------------------------------------------------


def test_a_replay_whose_messages_all_failed_is_recorded_as_failed(rabbit_broker, dl, personas):
    """The probe's reproduction: 7 messages, none delivered, and the log said "ok"."""
    kill(dl, 7)
    dl.channel.exchange_delete(dl.exchange)  # where they came from is gone: each copy is refused
    job = run(make_job(rabbit_broker, dl, personas))
    assert (job.state, job.failed, job.replayed) == ("done", 7, 0)
    (record,) = finish_records(job)
    assert (record.result, record.count, record.user) == ("failed", 0, "bob")
    assert record.detail["failed"] == 7 and record.detail["not_delivered"] == 7
    assert record.detail["state"] == "done"
    assert dl.depth(dl.dlq) == 7


def test_a_replay_that_delivered_some_is_recorded_as_partial(rabbit_broker, dl, personas):
    kill(dl, 10)
    dl.channel.queue_unbind(dl.originals[1], dl.exchange, "order.1.*")  # half lose their route
    job = run(make_job(rabbit_broker, dl, personas))
    (record,) = finish_records(job)
    assert (record.result, record.count, record.detail["not_delivered"]) == ("partial", 5, 5)


def test_a_filtered_replay_that_delivered_every_selected_message_is_ok(rabbit_broker, dl, personas):
    ids = kill(dl, 6)
    job = run(make_job(rabbit_broker, dl, personas, selection={"ids": ids[:2]}))
    (record,) = finish_records(job)
    # The four left alone were not chosen: they are kept, and that is no failure.
    assert (record.result, record.count, record.detail["kept"]) == ("ok", 2, 4)


def test_a_discard_records_how_many_it_deleted(rabbit_broker, dl, personas):
    kill(dl, 9)
    job = run(make_job(rabbit_broker, dl, personas, action="discard"))
    (record,) = finish_records(job)
    assert (record.action, record.result, record.count) == ("job.discard.finish", "ok", 9)
    assert record.detail["discarded"] == 9 and record.destination == f"//{dl.dlq}"


def test_a_cancelled_job_is_recorded_as_cancelled_with_its_counts(rabbit_broker, dl, personas):
    kill(dl, 20)
    job = make_job(rabbit_broker, dl, personas, batch_size=5)

    def cancel(j: Job) -> None:
        Job.objects.filter(pk=j.pk).update(state=Job.CANCELLING)

    job = jobs.run(job.pk, jobservice.transfer_for, jobservice.router, on_progress=cancel)
    (record,) = finish_records(job)
    assert (record.result, record.count, record.detail["done"]) == ("cancelled", 5, 5)


def test_a_job_that_cannot_open_its_source_is_recorded_as_failed(rabbit_broker, dl, personas):
    kill(dl, 2)
    job = make_job(rabbit_broker, dl, personas)
    dl.channel.queue_delete(dl.dlq)
    job = run(job)
    (record,) = finish_records(job)
    assert record.result == "failed" and "could not open the source" in record.detail["error"]


class Killed(BaseException):
    """The worker dying mid-job: nothing in the engine catches it, as nothing outlives a kill."""


def test_the_completion_record_is_written_once_when_a_killed_job_is_resumed(
    rabbit_broker, dl, personas
):
    kill(dl, 30)
    job = make_job(rabbit_broker, dl, personas, action="discard", batch_size=10)

    def die(j: Job) -> None:
        raise Killed

    with pytest.raises(Killed):
        jobs.run(job.pk, jobservice.transfer_for, jobservice.router, on_progress=die)
    job.refresh_from_db()
    assert job.state == Job.RUNNING and finish_records(job) == []
    Job.objects.filter(pk=job.pk).update(heartbeat=timezone.now() - timedelta(hours=1))
    job.refresh_from_db()
    assert job.stalled
    jobservice.resume(personas["bob"], job)
    job = run(job)
    assert job.state == "done" and dl.depth(dl.dlq) == 0
    # The task delivered again, as a broker may redeliver it: the job is over, nothing more.
    run(job)
    (record,) = finish_records(job)
    assert (record.result, record.count) == ("ok", 30)


def test_cancelling_a_job_nobody_runs_records_its_end(rabbit_broker, dl, personas):
    kill(dl, 3)
    job = make_job(rabbit_broker, dl, personas)
    jobservice.cancel(personas["bob"], job)
    (record,) = finish_records(job)
    assert (record.result, record.count, record.detail["done"]) == ("cancelled", 0, 0)
    assert dl.depth(dl.dlq) == 3


# -- failed publishes --------------------------------------------------------------


def api_publish(
    client: Any, token: str, broker: str, body: dict[str, Any], path: str = "publish"
) -> Any:
    return client.post(
        f"/api/v1/brokers/{broker}/{path}",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def only_publish_record(action: str = "message.publish") -> AuditEntry:
    (record,) = AuditEntry.objects.filter(action=action)
    return record


def test_a_publish_to_an_unreachable_rabbitmq_is_audited(db, personas, token_for, client):
    port = closed_port()
    Broker.objects.create(
        name="down",
        kind="rabbitmq",
        options={
            "management_url": f"http://127.0.0.1:{port}",
            "amqp_url": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        },
    )
    body = {"exchange": "", "routing_key": "orders", "body": "hi"}
    response = api_publish(client, token_for("bob"), "down", body)
    assert response.status_code == 502
    record = only_publish_record()
    assert (record.result, record.user, record.broker) == ("failed", "bob", "down")
    assert record.detail["error"] and "guest:guest" not in record.detail["error"]


def test_a_publish_rabbitmq_refuses_is_audited(rabbit_broker, token_for, client, unique_name):
    body = {"exchange": f"missing-{unique_name}", "routing_key": "x", "body": "hi"}
    response = api_publish(client, token_for("bob"), "rabbit", body)
    assert response.status_code in (400, 502) and "no exchange" in response.json()["error"]
    record = only_publish_record()
    assert record.result == "failed" and "no exchange" in record.detail["error"]


def test_a_publish_refused_before_it_is_sent_is_audited(rabbit_broker, token_for, client):
    """An exchange name over 255 bytes: AMQP cannot carry it (this was a 500, unaudited)."""
    body = {"exchange": "x" * 300, "routing_key": "a", "body": "hi"}
    response = api_publish(client, token_for("bob"), "rabbit", body)
    assert response.status_code == 400
    assert "at most 255 bytes" in response.json()["error"]
    assert only_publish_record().result == "refused"


def test_a_publish_to_an_unreachable_kafka_is_audited(db, personas, token_for, client):
    Broker.objects.create(
        name="kdown", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
    )
    response = api_publish(client, token_for("bob"), "kdown", {"topic": "orders", "body": "hi"})
    assert response.status_code == 502
    record = only_publish_record()
    assert (record.result, record.destination) == ("failed", "topic/orders")


def test_a_publish_and_a_request_to_an_unreachable_nats_are_audited(
    db, personas, token_for, client
):
    port = closed_port()
    Broker.objects.create(
        name="ndown",
        kind="nats",
        options={"url": f"nats://127.0.0.1:{port}", "monitoring_url": f"http://127.0.0.1:{port}"},
    )
    token = token_for("bob")
    body = {"subject": "orders.new", "body": "hi"}
    assert api_publish(client, token, "ndown", body, "nats/publish").status_code == 502
    assert only_publish_record().result == "failed"
    assert api_publish(client, token, "ndown", body, "nats/request").status_code == 502
    record = only_publish_record("message.request")
    assert (record.result, record.destination) == ("failed", "subject/orders.new")


# -- the CSV export ---------------------------------------------------------------


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_the_csv_export_neutralises_formulas(db, client_for, lead):
    payload = f'{lead}HYPERLINK("http://evil","x")'
    AuditEntry.objects.create(user=payload, action="message.publish", destination=payload)
    response = client_for("alice").get("/audit/export.csv")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    assert row[header.index("user")] == "'" + payload
    assert row[header.index("destination")] == "'" + payload
    assert row[header.index("action")] == "message.publish"  # plain text is left as it is
