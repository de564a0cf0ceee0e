"""Replaying NATS dead letters with the job engine, on the real nats-server.

Copies are checked by reading the target stream back with nats-py's own
message get, not with Sluice's code. What every kind does (lineage, bad
requests, cancel and resume, kill -9) is in the contract suite, tests/contract/,
on a dead-letter stream; here is what is NATS's own, mostly the advisories.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from dashboard.collection import collector
from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.models import AuditEntry, Job
from tests.nats.test_deadletters import make_dead_letters
from tests.test_permissions import csrf_post

pytestmark = pytest.mark.django_db


def stored(js: Any, stream: str) -> list[Any]:
    """Every message of `stream`, read with nats-py (STREAM.MSG.GET), in order."""

    async def work(ctx: Any) -> list[Any]:
        info = await ctx.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                out.append(await ctx.get_msg(stream, seq))
            except NotFoundError:  # a gap: deleted
                continue
        return out

    result: list[Any] = js(work)
    return result


@pytest.fixture
def dead(js, capture, unique_name) -> dict[str, Any]:
    """Stream ORD_<name> (subjects ORD_<name>.n) with 6 dead letters: 4 max deliveries, 2 terminated."""
    stream = f"ORD_{unique_name}"
    bodies = [json.dumps({"order": n}).encode() for n in range(6)]
    make_dead_letters(
        js,
        stream,
        bodies,
        terms={1: "bad payload", 4: "bad payload"},
        headers=lambda n: {"trace": "t-1", "Nats-Msg-Id": f"publisher-{n}"},
    )
    return {"stream": stream, "capture": capture}


def make_job(broker, **data: Any) -> Job:
    fields = {"action": "replay", "selection": {"all": True}, **data}
    return Job.objects.create(broker=broker, created_by="bob", **jobservice.check(broker, fields))


def run(job: Job) -> Job:
    return jobs.run(job.pk, jobservice.transfer_for, jobservice.router)


def ours(stream: str) -> dict[str, Any]:
    return {"filter": {"stream": stream}}


def test_replay_to_the_original_subject_keeps_headers_adds_msg_id_and_lineage(
    nats_broker, js, dead
) -> None:
    stream = dead["stream"]
    job = run(make_job(nats_broker, source=f"advisories/{dead['capture']}", selection=ours(stream)))
    assert (job.state, job.total, job.done, job.replayed, job.kept, job.failed) == (
        "done", 6, 6, 6, 0, 0,
    )  # fmt: skip
    copies = stored(js, stream)[6:]
    assert len(copies) == 6
    by_subject = {c.subject: c for c in copies}
    assert set(by_subject) == {f"{stream}.{n}" for n in range(6)}
    two = by_subject[f"{stream}.2"]
    assert json.loads(two.data) == {"order": 2}
    assert two.headers["trace"] == "t-1"
    assert two.headers["Nats-Msg-Id"] == f"sluice:{stream}:3:{stream}.2"
    assert two.headers["sluice-original-msg-id"] == "publisher-2"
    assert two.headers["sluice-replay-id"] == str(job.public_id)
    assert two.headers["sluice-replayed-from"] == f"nats:advisories/{dead['capture']}"
    assert two.headers["sluice-replay-count"] == "1"
    assert two.headers["sluice-replayed-by"] == "bob"
    # The originals and the advisories stay.
    assert [m.seq for m in stored(js, stream)[:6]] == [1, 2, 3, 4, 5, 6]
    assert {o[1] for o in jobs.outcomes(job)} == {"replayed"}
    assert job.cursor["next"] == job.cursor["end"]


def test_replay_to_another_subject_and_repeating_it_stores_nothing_twice(
    nats_broker, js, dead, unique_name
) -> None:
    retry = f"RETRY_{unique_name}"
    js.add_stream(retry, [f"{retry}.>"])
    source = f"advisories/{dead['capture']}"
    first = run(
        make_job(
            nats_broker, source=source, selection=ours(dead["stream"]), destination=f"{retry}.in"
        )
    )
    assert (first.state, first.replayed) == ("done", 6)
    copies = stored(js, retry)
    assert len(copies) == 6 and {c.subject for c in copies} == {f"{retry}.in"}
    assert sorted(json.loads(c.data)["order"] for c in copies) == list(range(6))
    assert len(stored(js, dead["stream"])) == 6  # nothing went to the origin

    again = run(
        make_job(
            nats_broker, source=source, selection=ours(dead["stream"]), destination=f"{retry}.in"
        )
    )
    assert (again.state, again.replayed, again.failed) == ("done", 6, 0)
    assert len(stored(js, retry)) == 6, "the repeated replay stored copies twice"
    notes = {o[3] for o in jobs.outcomes(again)}
    assert all(n.startswith(f"already in stream {retry}") for n in notes), notes


def test_delete_original_removes_each_message_after_its_pub_ack(nats_broker, js, dead) -> None:
    stream = dead["stream"]
    job = run(
        make_job(
            nats_broker,
            source=f"advisories/{dead['capture']}",
            selection={"filter": {"stream": stream, "reason": "terminated: bad payload"}},
            delete_original=True,
        )
    )
    # The server picks the terminations' advisories by subject: the 4 max-delivery ones
    # are never read, so none of them is an outcome row ("kept: not selected").
    assert (job.state, job.replayed, job.kept) == ("done", 2, 0)
    left = stored(js, stream)
    assert [m.seq for m in left] == [1, 3, 4, 6, 7, 8]  # 2 and 5 deleted, copies at 7 and 8
    assert sorted(json.loads(m.data)["order"] for m in left[-2:]) == [1, 4]
    assert job.cursor["delete"] == []
    # The advisories themselves stay in the capture stream.
    assert len([m for m in stored(js, dead["capture"]) if stream.encode() in m.data]) == 6


def test_filters_and_a_selection_by_id(nats_broker, js, dead, unique_name) -> None:
    stream, source = dead["stream"], f"advisories/{dead['capture']}"
    cases = [
        ({"stream": stream, "reason": "max deliveries"}, 4),
        ({"stream": stream, "consumer": "nobody"}, 0),
        ({"stream": stream, "subject": f"{stream}.3"}, 1),
        ({"stream": stream, "body_contains": '"order": 5'}, 1),
        ({"stream": stream, "header": {"name": "trace", "value": "t-1"}}, 6),
        ({"stream": stream, "header": {"name": "trace", "value": "other"}}, 0),
    ]
    retry = f"RETRY_{unique_name}"
    js.add_stream(retry, [f"{retry}.>"])
    for n, (rule, expected) in enumerate(cases):
        job = run(
            make_job(
                nats_broker, source=source, selection={"filter": rule}, destination=f"{retry}.{n}"
            )
        )
        assert (job.state, job.replayed) == ("done", expected), rule
    picked = run(
        make_job(
            nats_broker,
            source=source,
            selection={"ids": [f"{stream}:2", f"{stream}:6"]},
            destination=f"{retry}.ids",
        )
    )
    assert picked.replayed == 2
    assert sorted(
        json.loads(m.data)["order"] for m in stored(js, retry) if m.subject.endswith(".ids")
    ) == [1, 5]


def test_a_message_gone_from_its_stream_is_reported_not_lost_in_silence(
    nats_broker, js, dead
) -> None:
    stream = dead["stream"]
    js(lambda ctx: ctx.delete_msg(stream, 3))
    job = run(make_job(nats_broker, source=f"advisories/{dead['capture']}", selection=ours(stream)))
    assert (job.state, job.replayed, job.failed) == ("done", 5, 1)
    kept = jobs.outcomes(job, "kept")
    assert [(k[0], k[1], k[3]) for k in kept] == [
        (f"{stream}:3", "kept: failed", f"no longer in stream {stream}")
    ]


def test_replay_from_a_dead_letter_stream_to_the_subject_its_header_names(
    nats_broker, js, capture, unique_name
) -> None:
    dead, origin = f"PAY_{unique_name}_DLQ", f"PAY_{unique_name}"
    js.add_stream(dead, [f"dlq.{unique_name}"])
    js.add_stream(origin, [f"pay.{unique_name}.>"])

    async def fill(ctx: Any) -> None:
        for n in range(8):
            headers = {"x-original-subject": f"pay.{unique_name}.{n % 2}"} if n != 7 else {}
            await ctx.publish(f"dlq.{unique_name}", str(n).encode(), headers=headers)

    js(fill)
    collector.collect(nats_broker)
    job = run(make_job(nats_broker, source=f"stream/{dead}", delete_original=True))
    assert (job.state, job.total, job.replayed, job.kept) == ("done", 8, 7, 1)
    copies = stored(js, origin)
    assert sorted((c.subject, c.data) for c in copies) == sorted(
        (f"pay.{unique_name}.{n % 2}", str(n).encode()) for n in range(7)
    )
    assert copies[0].headers["Nats-Msg-Id"].startswith(f"sluice:{dead}:")
    # Replayed ones were deleted from the dead-letter stream; the one without an origin stays.
    assert [m.data for m in stored(js, dead)] == [b"7"]
    assert jobs.outcomes(job, "kept")[0][1] == "kept: origin unknown"


def test_a_stored_rollup_header_travels_aside_so_a_replay_purges_nothing(
    nats_broker, js, capture, unique_name
) -> None:
    """Replayed with Nats-Rollup, a copy would make its stream purge the subject."""
    dead, origin = f"KV_{unique_name}_DLQ", f"KV_{unique_name}"
    js.add_stream(dead, [f"dlq.{unique_name}"], allow_rollup_hdrs=True)
    js.add_stream(origin, [f"kv.{unique_name}.>"], allow_rollup_hdrs=True)
    subject = f"kv.{unique_name}.a"

    async def fill(ctx: Any) -> None:
        await ctx.publish(subject, b"newer value, already there")
        await ctx.publish(
            f"dlq.{unique_name}",
            b"dead value",
            headers={"x-original-subject": subject, "Nats-Rollup": "sub"},
        )

    js(fill)
    job = run(make_job(nats_broker, source=f"stream/{dead}"))
    assert (job.state, job.replayed) == ("done", 1)
    there = stored(js, origin)
    assert [m.data for m in there] == [b"newer value, already there", b"dead value"]
    assert "Nats-Rollup" not in there[1].headers
    assert there[1].headers["sluice-original-rollup"] == "sub"


def test_dry_run_then_start_through_the_api(
    nats_broker, js, dead, token_for, client, unique_name
) -> None:
    token = token_for("bob")
    body = {
        "broker": "nats",
        "action": "replay",
        "source": f"advisories/{dead['capture']}",
        "selection": {"filter": {"stream": dead["stream"], "reason": "max deliveries"}},
        "dry_run": True,
    }
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201, response.content
    preview = response.json()["preview"]
    assert preview["selected"] == 4 and preview["complete"]
    assert len(preview["targets"]) == 4  # one per original subject
    assert all("duplicate" in t or "is dropped" in t for t, _ in preview["targets"])
    assert AuditEntry.objects.filter(action="job.replay.preview").exists()
    job = Job.objects.get(public_id=response.json()["id"])
    assert job.state == Job.PREVIEW and job.cursor["next"] == job.cursor["first"]


def test_an_operator_edits_one_dead_letter_then_replays_only_it(
    nats_broker, js, dead, client_for, personas
) -> None:
    stream, source = dead["stream"], f"advisories/{dead['capture']}"
    operator = client_for("bob")
    # {"order": 2} was stored third: seq 3.
    form = csrf_post(
        operator, "/brokers/nats/nats/dead-letters/edit", {"source": source, "id": f"{stream}:3"}
    )
    assert form.status_code == 200
    page = form.content.decode()
    assert "{&quot;order&quot;: 2}" in page  # the body, in the textarea
    assert "&quot;trace&quot;: &quot;t-1&quot;" in page  # the headers, as JSON
    assert f'name="source" value="{source}"' in page
    # A browser sends a textarea's line breaks as CRLF; the body had none, so LF it is.
    response = csrf_post(
        operator,
        "/brokers/nats/nats/dead-letters/act",
        {
            "source": source,
            "action": "replay",
            "select": "ids",
            "edit_id": f"{stream}:3",
            "edit_body": '{\r\n  "order": 2,\r\n  "fixed": true\r\n}',
            "edit_headers": json.dumps({"trace": "t-2 <b>", "Nats-Msg-Id": "publisher-2"}),
        },
    )
    assert response.status_code == 302 and "/jobs/" in response["Location"], [
        m.message for m in operator.get(response["Location"]).context["messages"]
    ]
    job = Job.objects.get()
    assert job.state == Job.PREVIEW and job.selection == {"ids": [f"{stream}:3"]}
    jobservice.start(personas["bob"], job)  # the "Start" button; the test runs it here
    job = run(job)
    assert (job.state, job.replayed) == ("done", 1)

    (copy,) = stored(js, stream)[6:]
    edited = b'{\n  "order": 2,\n  "fixed": true\n}'
    assert copy.subject == f"{stream}.2" and copy.data == edited
    assert copy.headers["trace"] == "t-2 <b>"
    assert copy.headers["sluice-original-msg-id"] == "publisher-2"
    # An edited copy's Nats-Msg-Id names its body too: a later unedited replay is not dropped.
    assert copy.headers["Nats-Msg-Id"].startswith(f"sluice:{stream}:3:{stream}.2:")
    assert copy.headers["sluice-replay-id"] == str(job.public_id)
    assert json.loads(stored(js, stream)[2].data) == {"order": 2}  # the original stays
    entry = AuditEntry.objects.get(action="job.replay.start")
    assert entry.user == "bob" and entry.detail["edit"]["id"] == f"{stream}:3"


def test_the_edit_form_refuses_a_purging_edit_and_a_message_gone_from_its_stream(
    nats_broker, js, dead, client_for
) -> None:
    """The API's refusals of such edits are in the contract suite's NATS registration."""
    stream, source = dead["stream"], f"advisories/{dead['capture']}"
    operator = client_for("bob")
    response = csrf_post(
        operator,
        "/brokers/nats/nats/dead-letters/act",
        {
            "source": source,
            "select": "ids",
            "edit_id": f"{stream}:3",
            "edit_headers": json.dumps({"Nats-Rollup": "all"}),
        },
    )
    assert response.status_code == 302
    assert "would purge messages" in operator.get(response["Location"]).content.decode()
    gone = csrf_post(
        operator, "/brokers/nats/nats/dead-letters/edit", {"source": source, "id": f"{stream}:99"}
    )
    assert gone.status_code == 302
    assert "is no longer in the stream" in operator.get(gone["Location"]).content.decode()
    # From a dead-letter stream's table: the form leads back to that stream.
    form = csrf_post(
        operator,
        "/brokers/nats/nats/dead-letters/edit",
        {"source": f"stream/{stream}", "id": f"{stream}:3"},
    )
    assert form.status_code == 200
    assert f'href="/brokers/nats/nats/dead-letters/?dlq={stream}"' in form.content.decode()
    assert Job.objects.count() == 0
    assert len(stored(js, stream)) == 6
