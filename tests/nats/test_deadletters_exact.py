"""NATS dead letters counted exactly over the whole capture stream, and found by subject.

The capture stream here holds 100,000 advisories of one stream besides a few real
dead letters of another. The bulk is published on the advisory subject as the
server words them (making 100,000 real max-delivery failures would take minutes);
the few are real. Whatever Sluice reads, the server counts as messages it sent
(`/varz` `out_msgs`), so a look that read the bulk would show.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from brokers.nats.deadletters import ADVISORY_PREFIX, MAX_DELIVERIES
from dashboard.models import Broker
from tests.nats.test_deadletters import advisories_of, api, make_dead_letters, page

BULK = 100_000


def sent_by_server(monitoring_url: str) -> int:
    return int(requests.get(f"{monitoring_url}/varz", timeout=5).json()["out_msgs"])


@pytest.fixture
def bulk(nats_broker, js, capture, unique_name) -> Iterator[dict[str, Any]]:
    """100,000 max-delivery advisories of stream BULK_<name> in the capture stream;
    purged from it afterwards, so that other tests' looks do not pass over them."""
    stream = f"BULK_{unique_name}"
    subject = f"{ADVISORY_PREFIX}MAX_DELIVERIES.{stream}.loader"

    async def fill(ctx: Any) -> None:
        nc = ctx._nc
        for n in range(BULK):
            advisory = {
                "type": MAX_DELIVERIES,
                "id": f"bulk-{n}",
                "timestamp": "2026-12-03T10:00:00Z",
                "stream": stream,
                "consumer": "loader",
                "stream_seq": n + 1,
                "deliveries": 5,
            }
            await nc.publish(subject, json.dumps(advisory).encode())
            if n % 5000 == 4999:
                await nc.flush()
        await nc.flush()
        info = await ctx.stream_info(capture, subjects_filter=subject)
        for _ in range(100):
            if sum((info.state.subjects or {}).values()) >= BULK:
                return
            await asyncio.sleep(0.1)
            info = await ctx.stream_info(capture, subjects_filter=subject)
        raise AssertionError("the bulk advisories were not all stored")

    js(fill)
    yield {"stream": stream, "subject": subject, "capture": capture}

    async def purge(ctx: Any) -> None:
        await ctx.purge_stream(capture, subject=subject)

    js(purge)


def test_five_new_dead_letters_are_found_among_100000_without_reading_the_rest(
    nats_broker: Broker, nats, js, bulk, client_for, unique_name
) -> None:
    stream = f"FEW_{unique_name}"
    make_dead_letters(js, stream, [b'{"n": %d}' % n for n in range(5)])
    carol = client_for("carol")
    advisories_of(carol, nats_broker, stream, 5)  # captured, and listed

    before = sent_by_server(nats["monitoring_url"])
    body = carol.get(api(nats_broker), {"s": stream}).json()
    sent = sent_by_server(nats["monitoring_url"]) - before
    assert {d["stream"] for d in body["dead_letters"]} == {stream}
    assert len(body["dead_letters"]) == 5
    assert body["matching"] == 5 and body["matching_exact"] is True
    groups = {(g["stream"], g["consumer"], g["reason"]): g["count"] for g in body["groups"]}
    # Exact over the whole capture stream: the server's counts per subject.
    assert groups[(bulk["stream"], "loader", "max deliveries")] == BULK
    assert groups[(stream, "worker", "max deliveries")] == 5
    assert body["total"] >= BULK + 5
    # The 5 advisories, their 5 messages, and the API's answers: not the 100,000.
    assert sent < 200, sent

    html = carol.get(page(nats_broker)).content.decode()
    assert "counted by the server per stream and consumer" in html
    assert f"{BULK:,}" in html


def test_a_dry_run_filtered_to_one_stream_counts_its_dead_letters_exactly(
    nats_broker: Broker, nats, js, bulk, client_for, token_for, client, unique_name
) -> None:
    stream = f"DRY_{unique_name}"
    make_dead_letters(js, stream, [b"a", b"b", b"c", b"d", b"e"])
    advisories_of(client_for("carol"), nats_broker, stream, 5)
    token = token_for("bob")

    def dry_run(selection: dict[str, Any]) -> dict[str, Any]:
        response = client.post(
            "/api/v1/jobs",
            data=json.dumps(
                {
                    "broker": nats_broker.name,
                    "action": "replay",
                    "source": f"advisories/{bulk['capture']}",
                    "selection": selection,
                    "dry_run": True,
                }
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 201, response.content
        preview: dict[str, Any] = response.json()["preview"]
        pages.append(f"/jobs/{response.json()['id']}/")
        return preview

    pages: list[str] = []

    before = sent_by_server(nats["monitoring_url"])
    few = dry_run({"filter": {"stream": stream}})
    sent = sent_by_server(nats["monitoring_url"]) - before
    # The 100,000 of the other stream were never read: the server filtered on the subject.
    assert few["complete"] and few["selected"] == 5 and few["estimate"] == 5, few
    assert few["looked_at"] == 5
    assert sent < 200, sent

    # More than one look holds: the first 1,000 are read, the count is the server's.
    many = dry_run({"filter": {"stream": bulk["stream"], "reason": "max deliveries"}})
    assert not many["complete"]
    assert many["counted"] == BULK and many["estimate"] == BULK, many
    assert many["looked_at"] == 1000
    assert many["gone"] == 1000  # their messages were never in a stream
    shown = client_for("bob").get(pages[-1]).content.decode()
    assert f"{BULK:,} would be taken: the server's count of the advisories on" in shown
    assert (
        f"Confirm: replay {BULK:,} messages" in shown and "about" not in shown.split("Dry run")[1]
    )

    # A stream name no stream can have matches nothing, and reads nothing.
    none = dry_run({"filter": {"stream": "no such.stream"}})
    assert none["complete"] and none["selected"] == 0 and none["looked_at"] == 0


def test_a_replay_of_one_stream_counts_its_dead_letters_as_its_progress(
    nats_broker: Broker, js, bulk, unique_name
) -> None:
    """The job's total is the 5 on the stream's subject, from the first moment, not the
    100,005 sequences of the capture stream."""
    from dashboard.jobs import engine as jobs
    from dashboard.jobs import service as jobservice
    from dashboard.models import Job

    stream = f"RUN_{unique_name}"
    make_dead_letters(js, stream, [b"%d" % n for n in range(5)])
    fields = {
        "action": "replay",
        "source": f"advisories/{bulk['capture']}",
        "selection": {"filter": {"stream": stream}},
    }
    job = Job.objects.create(
        broker=nats_broker, created_by="bob", **jobservice.check(nats_broker, fields)
    )
    seen: list[tuple[int, int]] = []
    done = jobs.run(
        job.pk,
        jobservice.transfer_for,
        jobservice.router,
        on_progress=lambda j: seen.append((j.done, j.total)),
    )
    assert (done.state, done.total, done.done, done.replayed) == ("done", 5, 5, 5)
    assert seen and all(total == 5 for _, total in seen), seen
