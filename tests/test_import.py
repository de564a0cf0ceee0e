"""The import page on a real RabbitMQ: upload a file with the form, read its dry run, confirm it,
and find every message in the queue byte for byte, with its properties and binary headers."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from dashboard.models import Job
from dashboard.tasks import run_job

pytestmark = pytest.mark.django_db

BINARY = bytes(range(256))


def lines(queue: str) -> bytes:
    rows = [
        {
            "body": "plain ünïcode text",
            "routing_key": "ignored",
            "properties": {"content_type": "text/plain"},
        },
        {
            "body_base64": base64.b64encode(BINARY).decode(),
            "headers": {"trace": {"base64": "/wA="}},
        },
        {
            "body": "<script>alert(1)</script>",
            "headers": {"x-note": "<b>bold</b>"},
            "properties": {"priority": 3},
        },
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_an_uploaded_file_is_dry_run_then_published_whole(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name} imported/%#é")
    bob = client_for("bob")
    form = bob.get("/brokers/rabbit/import/")
    assert form.status_code == 200 and b'name="file"' in form.content
    token = bob.cookies["csrftoken"].value
    upload = SimpleUploadedFile("fixed.ndjson", lines(queue), content_type="application/x-ndjson")
    response = bob.post(
        "/brokers/rabbit/import/",
        {"file": upload, "vhost": "/", "queue": queue, "rate": "", "batch_size": "2"},
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 302, response.content[:500]
    job = Job.objects.get(action="import")
    assert (job.state, job.total, job.target["routing_key"]) == ("preview", 3, queue)
    page = bob.get(response["Location"]).content.decode()
    assert "fixed.ndjson: 3 messages" in page
    assert "<script>alert" not in page
    assert t.count(queue) == 0  # a dry run publishes nothing

    started = bob.post(f"/jobs/{job.public_id}/start", HTTP_X_CSRFTOKEN=token)
    assert started.status_code == 302
    run_job(job.pk)
    job.refresh_from_db()
    assert (job.state, job.done, job.replayed, job.failed) == ("done", 3, 3, 0)
    got = t.drain(queue)
    assert [body for _, _, body in got] == [
        "plain ünïcode text".encode(),
        BINARY,
        b"<script>alert(1)</script>",
    ]
    assert got[0][1].content_type == "text/plain" and got[2][1].priority == 3
    assert got[1][1].headers["trace"] == b"\xff\x00"
    assert got[2][1].headers["x-note"] == "<b>bold</b>"
    assert got[0][1].headers["sluice-replay-id"] == str(job.public_id)
    done = bob.get(f"/jobs/{job.public_id}/").content.decode()
    assert "Published 3" in done


def test_a_viewer_cannot_import_and_a_bad_upload_changes_nothing(
    rabbit_broker: Any, declare: Callable[..., Any], unique_name: str, client_for: Any
) -> None:
    t = declare()
    queue = t.queue(f"{unique_name}-target")
    assert client_for("carol").get("/brokers/rabbit/import/").status_code == 403
    bob = client_for("bob")
    bob.get("/brokers/rabbit/import/")
    token = bob.cookies["csrftoken"].value
    bad = SimpleUploadedFile("bad.ndjson", b'{"body": "ok"}\n{"body": 1}\n')
    response = bob.post(
        "/brokers/rabbit/import/", {"file": bad, "queue": queue}, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 400
    assert "line 2: &quot;body&quot; must be text" in response.content.decode()
    missing = bob.post("/brokers/rabbit/import/", {"queue": queue}, HTTP_X_CSRFTOKEN=token)
    assert missing.status_code == 400 and b"choose an NDJSON file" in missing.content
    assert not Job.objects.exists() and t.count(queue) == 0


def test_a_file_is_checked_as_it_arrives_in_bounded_memory(monkeypatch: Any) -> None:
    from dashboard.jobs import imports

    good = b'{"body": "x"}\n'
    # Lines split across chunks anywhere, and a last line with no newline.
    chunks = [good[:5], good[5:] + good[:3], good[3:] + b'{"body": "y"}']
    checked = imports.check_file(chunks)
    assert (checked.lines, checked.errors) == (3, [])
    assert [b for _, b in checked.blocks()] == [good * 2 + b'{"body": "y"}\n']
    monkeypatch.setattr(imports, "MAX_LINE", 1000)
    endless = imports.check_file([good] + [b"a" * 600] * 3)
    assert endless.errors == ["line 2 is longer than 1,000 bytes"]
    many = imports.check_file([good * 5], max_lines=3)
    assert many.errors == ["more than 3 messages: split the file"]


def test_lines_an_export_could_not_fill_are_refused() -> None:
    from dashboard.jobs.imports import check_line

    gone = b'{"body": "", "properties": {"present": false}}'
    assert "left its stream" in check_line(gone)[1]
    assert "cut short" in check_line(b'{"body": "ab", "truncated": true}')[1]
    assert "masking rules" in check_line(b'{"body": "x", "masked": true}')[1]
    assert check_line(b'{"body": "x", "properties": {"present": true}}')[1] == ""
