"""Resetting a Kafka consumer group's offsets: dry run, apply, undo, refusals, pages and API.

Against the real Tansu: offsets are committed by real consumers and every
outcome is checked by reading the group's committed offsets back with an admin
client of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from brokers.kafka import offsets as ko
from tests.app_fixtures import closed_port, wait_for
from tests.kafka_fixtures import FAST_GROUP

# -- helpers ----------------------------------------------------------------------


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets as `group` with a real consumer (manually assigned), then leave."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **FAST_GROUP
    )
    try:
        tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        consumer.assign(list(tps))
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in tps.items()})
    finally:
        consumer.close()


@contextmanager
def member(bootstrap: str, topic: str, group: str, client_id: str) -> Iterator[None]:
    """A real consumer in `group`, joined and polling in a thread until the block ends."""
    joined, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=client_id,
            enable_auto_commit=False,
            **FAST_GROUP,
        )
        try:
            # Poll without pauses: kafka-python makes progress on joining only inside poll().
            while not stop.is_set():
                consumer.poll(100)
                if consumer.assignment():
                    joined.set()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
        finally:
            consumer.close()  # leaves the group: it is Empty again

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert joined.wait(20), f"the consumer did not join within 20 s: {failure}"
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not failure, failure


def committed(admin: Any, group: str) -> dict[tuple[str, int], int]:
    got = admin.list_group_offsets(group).get(group) or {}
    return {(tp.topic, tp.partition): oam.offset for tp, oam in got.items() if oam.offset >= 0}


@pytest.fixture
def committed_group(
    kafka: dict[str, str],
    kafka_broker: Any,
    make_topic: Callable[..., str],
    produce: Callable[..., list[Any]],
    unique_name: str,
) -> Iterator[dict[str, Any]]:
    """A topic with 10 messages in partition 0 and 6 in partition 1; group committed at 7 and 3.

    A second group committed on the same topic shows that a reset touches one group only.
    """
    from dashboard.collection.collector import forget_adapter

    topic = make_topic(f"orders-{unique_name}", partitions=2)
    produce(topic, 10, partition=0)
    produce(topic, 6, partition=1)
    group, other = f"billing-{unique_name}", f"audit-{unique_name}"
    commit(kafka["bootstrap_servers"], group, {(topic, 0): 7, (topic, 1): 3})
    commit(kafka["bootstrap_servers"], other, {(topic, 0): 2, (topic, 1): 2})
    yield {"topic": topic, "group": group, "other": other, "bs": kafka["bootstrap_servers"]}
    forget_adapter(kafka_broker)


def api_post(client: Any, token: str, url: str, body: Any) -> Any:
    return client.post(
        url,
        data=json.dumps(body) if not isinstance(body, bytes | str) else body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def form_post(client: Any, url: str, data: dict[str, Any], page: str | None = None) -> Any:
    """POST a form the way a browser does: GET a page for the CSRF cookie, send the token back."""
    client.get(page or url)
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def reset_url(group: str) -> str:
    from django.urls import reverse

    return reverse("dashboard:kafka-reset", args=["kafka", group])


def api_url(group: str) -> str:
    return f"/api/v1/brokers/kafka/groups/{group}/reset"


def control_url(reset_id: str, verb: str) -> str:
    from django.urls import reverse

    return reverse("dashboard:reset-control", args=["kafka", reset_id, verb])


# -- dry run ----------------------------------------------------------------------


def test_dry_run_shows_each_partition_and_changes_nothing(
    committed_group: dict[str, Any], client_for: Callable, kafka_admin: Any
) -> None:
    from dashboard.models import AuditEntry, OffsetReset

    group, topic = committed_group["group"], committed_group["topic"]
    bob = client_for("bob")
    response = form_post(bob, reset_url(group), {"to": "earliest", "topic": "", "partitions": ""})
    assert response.status_code == 302
    reset = OffsetReset.objects.get(group=group)
    assert reset.state == OffsetReset.PREVIEW and reset.created_by == "bob"
    rows = {(c["topic"], c["partition"]): c for c in reset.changes}
    assert rows[topic, 0]["before"] == 7 and rows[topic, 0]["after"] == 0
    assert rows[topic, 0]["lag_before"] == 3 and rows[topic, 0]["lag_after"] == 10
    assert rows[topic, 1]["before"] == 3 and rows[topic, 1]["lag_after"] == 6
    assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}
    assert not AuditEntry.objects.filter(action__startswith="offsets.").exists()

    page = bob.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "Dry run" in html and "Apply: change 2 offsets" in html
    assert topic in html and "Lag after" in html


def test_dry_run_flags_a_clamped_shift(
    committed_group: dict[str, Any], token_for: Callable
) -> None:
    from django.test import Client

    group, topic = committed_group["group"], committed_group["topic"]
    body = {"to": "shift", "value": 5, "topic": topic, "dry_run": True}
    got = api_post(Client(), token_for("bob"), api_url(group), body).json()
    rows = {c["partition"]: c for c in got["changes"]}
    assert rows[0]["after"] == 10 and "12 is beyond the end (10); clamped to 10" in rows[0]["note"]
    assert rows[1]["after"] == 6 and "clamped to 6" in rows[1]["note"]  # 3 + 5 = 8 > 6
    assert got["state"] == "preview" and got["group_state"]["active"] is False


# -- each kind of reset, applied ----------------------------------------------------


def test_each_reset_kind_sets_the_committed_offsets_of_that_group_only(
    committed_group: dict[str, Any], token_for: Callable, kafka_admin: Any
) -> None:
    from django.test import Client

    from dashboard.models import AuditEntry

    group, other, topic = (
        committed_group["group"],
        committed_group["other"],
        committed_group["topic"],
    )
    client, token = Client(), token_for("bob")

    def apply(**body: Any) -> dict[tuple[str, int], int]:
        response = api_post(client, token, api_url(group), {**body, "dry_run": False})
        assert response.status_code == 200, response.content
        assert response.json()["state"] == "applied"
        return committed(kafka_admin, group)

    assert apply(to="earliest") == {(topic, 0): 0, (topic, 1): 0}
    assert apply(to="latest", topic=topic) == {(topic, 0): 10, (topic, 1): 6}
    assert apply(to="offset", value=4, topic=topic, partitions=[0]) == {
        (topic, 0): 4,
        (topic, 1): 6,
    }
    assert apply(to="shift", value=-2, topic=topic) == {(topic, 0): 2, (topic, 1): 4}
    assert apply(to="shift", value="-100") == {(topic, 0): 0, (topic, 1): 0}  # clamped
    assert apply(to="shift", value="+3", topic=topic, partitions="1") == {
        (topic, 0): 0,
        (topic, 1): 3,
    }
    # The other group on the same topic never moved.
    assert committed(kafka_admin, other) == {(topic, 0): 2, (topic, 1): 2}

    entries = list(AuditEntry.objects.filter(action="offsets.reset").order_by("id"))
    assert len(entries) == 6 and all(e.result == "ok" and e.user == "bob" for e in entries)
    first = entries[0]
    assert first.broker == "kafka" and first.destination == f"group/{group}"
    assert first.detail["group"] == group and first.detail["spec"]["to"] == "earliest"
    assert {(c["partition"], c["before"], c["after"]) for c in first.detail["changes"]} == {
        (0, 7, 0),
        (1, 3, 0),
    }


def test_reset_to_a_time_goes_to_the_first_message_at_or_after_it(
    committed_group: dict[str, Any],
    produce: Callable[..., list[Any]],
    token_for: Callable,
    kafka_admin: Any,
) -> None:
    """Partition 1 has nothing after the time: it goes to its end, with a note."""
    from django.test import Client

    group, topic = committed_group["group"], committed_group["topic"]
    time.sleep(0.05)
    later = produce(topic, 4, partition=0)  # offsets 10..13, after every other message
    ts = later[0].timestamp
    iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
    client, token = Client(), token_for("bob")

    by_ms = api_post(client, token, api_url(group), {"to": "timestamp", "value": ts}).json()
    by_iso = api_post(client, token, api_url(group), {"to": "timestamp", "value": iso}).json()
    assert by_ms["spec"]["value"] == by_iso["spec"]["value"] == ts
    rows = {c["partition"]: c for c in by_iso["changes"]}
    assert rows[0]["after"] == 10 and rows[0]["note"] == ""
    assert rows[1]["after"] == 6 and "no message at or after" in rows[1]["note"]
    assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}  # dry runs

    done = api_post(
        client, token, api_url(group), {"to": "timestamp", "value": str(ts), "dry_run": False}
    )
    assert done.status_code == 200
    assert committed(kafka_admin, group) == {(topic, 0): 10, (topic, 1): 6}


# -- refusals -----------------------------------------------------------------------


def test_apply_is_refused_while_a_consumer_is_in_the_group_and_works_once_it_left(
    committed_group: dict[str, Any], token_for: Callable, client_for: Callable, kafka_admin: Any
) -> None:
    """Membership is checked again at apply time: the dry run was made while the group was empty."""
    from django.test import Client

    from dashboard.models import AuditEntry, OffsetReset

    group, topic = committed_group["group"], committed_group["topic"]
    client, token = Client(), token_for("bob")
    dry = api_post(client, token, api_url(group), {"to": "earliest"}).json()
    assert dry["group_state"]["state"] == "Empty"

    with member(committed_group["bs"], topic, group, "billing-worker"):
        refused = client.post(
            f"/api/v1/brokers/kafka/resets/{dry['id']}/apply",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert refused.status_code == 409
        message = refused.json()["error"]
        assert "1 active member" in message and "billing-worker" in message
        assert "Stop the group's consumers first" in message
        assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}
        assert OffsetReset.objects.get(public_id=dry["id"]).state == OffsetReset.REFUSED

        # The page says the same, and an immediate apply through the API is refused too.
        bob = client_for("bob")
        url = control_url(dry["id"], "apply")
        detail = f"/brokers/kafka/resets/{dry['id']}/"
        page = bob.get(form_post(bob, url, {}, page=detail)["Location"]).content.decode()
        assert "billing-worker" in page and "Stop the group" in page
        direct = api_post(client, token, api_url(group), {"to": "latest", "dry_run": False})
        assert direct.status_code == 409 and direct.json()["group_state"]["members"]
        assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}

    wait_for(lambda: not ko.group_state(_adapter(committed_group), group).active, timeout=15)
    applied = client.post(
        f"/api/v1/brokers/kafka/resets/{dry['id']}/apply", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert applied.status_code == 200 and applied.json()["state"] == "applied"
    assert committed(kafka_admin, group) == {(topic, 0): 0, (topic, 1): 0}
    results = list(
        AuditEntry.objects.filter(action="offsets.reset").values_list("result", flat=True)
    )
    assert results.count("refused") == 3 and results.count("ok") == 1


def _adapter(committed_group: dict[str, Any]) -> Any:
    from dashboard.collection.collector import adapter_for
    from dashboard.models import Broker

    return adapter_for(Broker.objects.get(name="kafka"))


def test_apply_refuses_a_dry_run_whose_offsets_moved_since(
    committed_group: dict[str, Any], token_for: Callable, kafka_admin: Any
) -> None:
    from django.test import Client

    group, topic = committed_group["group"], committed_group["topic"]
    client, token = Client(), token_for("bob")
    dry = api_post(client, token, api_url(group), {"to": "shift", "value": -1}).json()
    commit(committed_group["bs"], group, {(topic, 0): 9})  # a consumer ran in between

    stale = client.post(
        f"/api/v1/brokers/kafka/resets/{dry['id']}/apply", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert stale.status_code == 409 and f"{topic}/0 was 7, is 9" in stale.json()["error"]
    assert committed(kafka_admin, group) == {(topic, 0): 9, (topic, 1): 3}
    again = client.post(
        f"/api/v1/brokers/kafka/resets/{dry['id']}/apply", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert again.status_code == 200  # the row now holds the new plan
    assert committed(kafka_admin, group) == {(topic, 0): 8, (topic, 1): 2}


# -- undo ---------------------------------------------------------------------------------


def test_undo_restores_exactly_the_previous_offsets(
    committed_group: dict[str, Any], token_for: Callable, client_for: Callable, kafka_admin: Any
) -> None:
    from django.test import Client

    from dashboard.models import AuditEntry, OffsetReset

    group, topic = committed_group["group"], committed_group["topic"]
    client, token = Client(), token_for("bob")
    first = api_post(client, token, api_url(group), {"to": "earliest", "dry_run": False}).json()
    second = api_post(
        client, token, api_url(group), {"to": "offset", "value": 5, "dry_run": False}
    ).json()
    assert committed(kafka_admin, group) == {(topic, 0): 5, (topic, 1): 5}

    # Only the latest applied reset can be undone, and the page offers only that one.
    older = client.post(control_url_api(first["id"], "undo"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert older.status_code == 409 and "undo that one first" in older.json()["error"]
    bob = client_for("bob")
    page = bob.get(reset_url(group)).content.decode()
    assert page.count(">Undo</button>") == 1 and control_url(second["id"], "undo") in page

    response = form_post(bob, control_url(second["id"], "undo"), {}, page=reset_url(group))
    assert response.status_code == 302
    assert committed(kafka_admin, group) == {(topic, 0): 0, (topic, 1): 0}
    undo_row = OffsetReset.objects.get(undoes__public_id=second["id"])
    assert undo_row.state == OffsetReset.APPLIED and undo_row.created_by == "bob"
    assert response["Location"].endswith(f"/resets/{undo_row.public_id}/")
    assert OffsetReset.objects.get(public_id=second["id"]).state == OffsetReset.UNDONE

    # Then the first: back to exactly what the group had committed before any reset.
    undone = client.post(control_url_api(first["id"], "undo"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert undone.status_code == 200 and undone.json()["undoes"] == first["id"]
    assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}
    again = client.post(control_url_api(first["id"], "undo"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert again.status_code == 409 and "undone" in again.json()["error"]

    undos = AuditEntry.objects.filter(action="offsets.undo", result="ok")
    assert undos.count() == 2
    entry = undos.get(detail__undoes=first["id"])
    assert {(c["partition"], c["after"]) for c in entry.detail["changes"]} == {(0, 7), (1, 3)}


def control_url_api(reset_id: str, verb: str) -> str:
    return f"/api/v1/brokers/kafka/resets/{reset_id}/{verb}"


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"to": "offset", "value": 500}, 400, "offset 500 is out of range"),
        ({"to": "offset", "value": 500, "topic": "T", "partitions": [1]}, 400, "ends at 6"),
        ({"to": "offset", "value": "12x"}, 400, "must be a whole number"),
        ({"to": "offset", "value": 1.5}, 400, "must be a whole number"),
        ({"to": "offset", "value": -1}, 400, "0 or more"),
        ({"to": "timestamp", "value": "yesterday"}, 400, "bad timestamp"),
        ({"to": "timestamp", "value": 1714564800}, 400, "looks like seconds"),
        ({"to": "shift", "value": True}, 400, "whole number"),
        # Values that were once stored and then broke the group's page for good.
        ({"to": "timestamp", "value": 10**30}, 400, "after the year 9999"),
        ({"to": "shift", "value": 10**30}, 400, "the shift must be from"),
        ({"to": "shift", "value": "1" + "0" * 5000}, 400, "out of range (got 5001 digits)"),
        ({"to": "timestamp", "value": "²"}, 400, "bad timestamp"),
        ({"to": "timestamp", "value": "1969-12-31T23:59:59.999Z"}, 400, "not from 1970 to 9999"),
        ({"to": "earliest", "topic": "T", "partitions": [2**40]}, 400, "partition 1099511627776"),
        ({"to": "rewind"}, 400, "'to' must be one of"),
        ({"to": "earliest", "topic": "no-such-topic"}, 400, "no topic named"),
        ({"to": "earliest", "topic": "OTHER"}, 400, "no committed offsets on topic"),
        ({"to": "earliest", "topic": "T", "partitions": [2]}, 400, "partition 2 does not exist"),
        ({"to": "earliest", "partitions": [0]}, 400, "choose a topic"),
        ({"to": "earliest", "dry_run": "no"}, 400, "dry_run must be true or false"),
        ("[1, 2]", 400, "must be a JSON object"),
        ("{not json", 400, "must be a JSON object"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(
    committed_group: dict[str, Any],
    token_for: Callable,
    kafka_admin: Any,
    make_topic: Callable[..., str],
    unique_name: str,
    body: Any,
    status: int,
    says: str,
) -> None:
    from django.test import Client

    from dashboard.models import OffsetReset

    group, topic = committed_group["group"], committed_group["topic"]
    if isinstance(body, dict):
        body = dict(body)
        if body.get("topic") == "T":
            body["topic"] = topic
        elif body.get("topic") == "OTHER":
            body["topic"] = make_topic(f"other-{unique_name}")
        body.setdefault("dry_run", False)
    response = api_post(Client(), token_for("bob"), api_url(group), body)
    assert response.status_code == status
    assert says in response.json()["error"]
    assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}
    assert not OffsetReset.objects.exists()


def test_a_stored_reset_that_cannot_be_described_shows_as_unreadable(
    committed_group: dict[str, Any], client_for: Callable, token_for: Callable, kafka_admin: Any
) -> None:
    """Rows as an older version stored them, before their input was checked."""
    from django.test import Client

    from dashboard.models import Broker, OffsetReset

    group, topic = committed_group["group"], committed_group["topic"]
    broker = Broker.objects.get(name="kafka")
    rows = [
        OffsetReset.objects.create(broker=broker, group=group, spec=spec, changes=changes)
        for spec, changes in [
            ({"to": "shift", "value": 10**30, "skipped": []}, []),
            ({"to": "timestamp", "value": 10**30}, [{"topic": topic}]),
            ([1, 2], "not a table"),
        ]
    ]
    bob, token = client_for("bob"), token_for("bob")
    page = bob.get(reset_url(group))
    assert page.status_code == 200 and page.content.decode().count("unreadable: ") == 3
    listed = Client().get(api_url(group), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert listed.status_code == 200
    assert [r["description"][:12] for r in listed.json()["resets"]] == ["unreadable: "] * 3
    for row in rows:
        detail = bob.get(f"/brokers/kafka/resets/{row.public_id}/")
        assert detail.status_code == 200 and "unreadable: " in detail.content.decode()
        one = Client().get(
            f"/api/v1/brokers/kafka/resets/{row.public_id}", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert one.status_code == 200 and one.json()["description"].startswith("unreadable: ")
        applied = api_post(Client(), token, control_url_api(str(row.public_id), "apply"), {})
        assert applied.status_code in (400, 409) and applied.json()["error"]
    assert committed(kafka_admin, group) == {(topic, 0): 7, (topic, 1): 3}
    assert set(OffsetReset.objects.values_list("state", flat=True)) == {OffsetReset.PREVIEW}


def test_unknown_group_is_a_404_on_the_api_and_the_page(
    committed_group: dict[str, Any], token_for: Callable, client_for: Callable
) -> None:
    from django.test import Client

    missing = f"<b>nobody</b>-{committed_group['group']}"
    response = api_post(Client(), token_for("bob"), api_url(missing), {"to": "earliest"})
    assert response.status_code == 404 and "no consumer group named" in response.json()["error"]
    page = client_for("carol").get(reset_url(missing))
    html = page.content.decode()
    assert page.status_code == 404 and "no consumer group named" in html
    assert "<b>nobody</b>" not in html and "&lt;b&gt;nobody&lt;/b&gt;" in html  # inert


def test_the_form_shows_input_errors_next_to_what_was_typed(
    committed_group: dict[str, Any], client_for: Callable
) -> None:
    bob = client_for("bob")
    response = form_post(
        bob,
        reset_url(committed_group["group"]),
        {"to": "offset", "value": "99", "topic": committed_group["topic"], "partitions": "0"},
    )
    html = response.content.decode()
    assert response.status_code == 400 and "offset 99 is out of range" in html
    assert 'value="99"' in html


# -- who may do what ----------------------------------------------------------------------


def test_roles_for_reset_pages_and_api(
    committed_group: dict[str, Any], client_for: Callable, token_for: Callable, kafka_admin: Any
) -> None:
    from django.test import Client

    from dashboard.models import OffsetReset

    group = committed_group["group"]
    page, api = reset_url(group), api_url(group)
    anonymous = client_for(None)
    assert anonymous.get(page).status_code == 302
    assert anonymous.get(page)["Location"].startswith("/login/")
    assert anonymous.get(api).status_code == 401

    carol = client_for("carol")
    html = carol.get(page).content.decode()
    assert "needs the operator role" in html and "Dry run</button>" not in html
    assert carol.get(api).status_code == 200
    assert form_post(carol, page, {"to": "earliest"}).status_code == 403
    assert api_post(Client(), token_for("carol"), api, {"to": "earliest"}).status_code == 403

    # An applied reset: a viewer sees it, but may not undo it; nor may anyone without CSRF.
    done = api_post(Client(), token_for("bob"), api, {"to": "earliest", "dry_run": False}).json()
    assert carol.get(f"/brokers/kafka/resets/{done['id']}/").status_code == 200
    assert ">Undo" not in carol.get(page).content.decode()
    assert form_post(carol, control_url(done["id"], "undo"), {}, page=page).status_code == 403
    bob = client_for("bob")
    bob.get(page)
    assert bob.post(control_url(done["id"], "undo")).status_code == 403  # no CSRF token
    assert bob.post(page, {"to": "earliest"}).status_code == 403
    assert OffsetReset.objects.get(public_id=done["id"]).state == OffsetReset.APPLIED

    listed = carol.get(api).json()["resets"]
    assert [r["id"] for r in listed] == [done["id"]] and listed[0]["created_by"] == "bob"
    assert form_post(client_for("alice"), page, {"to": "latest"}).status_code == 302
    assert client_for("dave").get(page).status_code == 403


# -- an unreachable broker ------------------------------------------------------------------


def test_unreachable_broker_shows_why_and_changes_nothing(
    db: Any, client_for: Callable, token_for: Callable, settings: Any
) -> None:
    from django.test import Client

    from dashboard.collection.collector import forget_adapter
    from dashboard.models import Broker, OffsetReset

    settings.SLUICE_BROKER_TIMEOUT = 1
    broker = Broker.objects.create(
        name="kafka", kind="kafka", options={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
    )
    try:
        page = client_for("bob").get(reset_url("billing"))
        assert page.status_code == 200 and "connection refused" in page.content.decode()
        response = api_post(Client(), token_for("bob"), api_url("billing"), {"to": "earliest"})
        assert response.status_code == 502 and "connection refused" in response.json()["error"]
        assert not OffsetReset.objects.exists()
    finally:
        forget_adapter(broker)
