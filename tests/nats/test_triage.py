"""NATS triage on real nats-servers: healthz, stalled consumers, dead letters told by advisories,
redelivery storms, stream limits and what a stream's backlog is.

Collections are stamped STEP seconds apart (`collect_at(now=...)`) and each is
followed by `triage.evaluate(now=...)`, as the worker does, so that windows of
history build up without waiting; what the server says is always real.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from nats.js.api import AckPolicy

from dashboard.collection import collector
from dashboard.collection.statuswindow import window_since
from dashboard.kinds import kind_of
from dashboard.kinds.nats import deadletters as dl
from dashboard.kinds.nats import detectors as natsdetectors
from dashboard.kinds.nats import status as natsstatus
from dashboard.models import Broker, Destination, Incident
from dashboard.triage import evaluate as triage
from dashboard.triage.findings import Limit, duration
from tests.app_fixtures import STEP
from tests.app_fixtures import collect_and_triage as step
from tests.nats.test_deadletters import captured, fail
from tests.nats_fixtures import JetStream, NatsServer, free_port, nak_round

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]


def live(broker: Broker, cause: str, key: str = "") -> Incident | None:
    return Incident.objects.filter(broker=broker, cause=cause, key=key, state="open").first()


def dest(broker: Broker, key: str) -> Destination:
    return Destination.objects.get(broker=broker, key=key)


def status(d: Destination) -> str:
    return str(d.details["status"]["status"])


# -- healthz ----------------------------------------------------------------------------


def test_a_failing_healthz_opens_a_critical_incident_that_a_healthy_answer_resolves(
    private_nats: Callable[..., NatsServer], nats: dict[str, str]
) -> None:
    # A JetStream cluster member whose peers never come: no meta leader, and
    # /healthz says so while /varz and /jsz still answer.
    server = private_nats(
        "--server_name", "lonely", "--cluster_name", "c1",
        "--cluster", f"nats://127.0.0.1:{free_port()}",
        "--routes", f"nats://127.0.0.1:{free_port()}",
        jetstream=True,
    )  # fmt: skip
    broker = Broker.objects.create(
        name="lonely", kind="nats", options={"monitoring_url": server.monitoring_url}
    )
    t = time.time()
    outcome = step(broker, t)
    healthz = broker.health["healthz"]
    assert broker.status == "up" and healthz["status"] != "ok" and healthz["error"]

    incident = live(broker, "healthz")
    assert incident is not None and incident in outcome.opened
    assert incident.severity == "critical"
    assert incident.summary == f"healthz {healthz['status']}: {healthz['error']}"
    assert "/healthz" in incident.rule and incident.actions == ["broker"]

    # Down: what it last said holds (the broker's "unreachable" opens beside it).
    server.stop()
    assert not collector.collect(broker, now=t + STEP)
    broker.refresh_from_db()
    triage.evaluate(broker, now=t + STEP)
    assert live(broker, "unreachable") is not None
    held = live(broker, "healthz")
    assert held is not None and held.pk == incident.pk

    # The same broker answered by a healthy server: resolved.
    broker.options = {"monitoring_url": nats["monitoring_url"]}
    broker.save()
    outcome = step(broker, t + 2 * STEP)
    assert broker.health["healthz"]["status"] == "ok"
    incident.refresh_from_db()
    assert incident.state == "resolved" and incident in outcome.resolved


# -- stalled consumers --------------------------------------------------------------------


def test_a_consumer_whose_ack_floor_stops_is_stalled_until_it_acknowledges_again(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    stream = unique_name.upper()
    js.add_stream(stream, [f"{unique_name}.>"])
    js.publish(f"{unique_name}.job", count=6)
    js.add_consumer(stream, "stuck", ack_policy=AckPolicy.EXPLICIT, ack_wait=300)
    nc = js.connect()
    sub = js.run(nc.jetstream().pull_subscribe_bind(durable="stuck", stream=stream))
    taken = js.run(sub.fetch(2, timeout=5))  # taken, not acknowledged
    assert len(taken) == 2
    key = f"consumer/{stream}/stuck"

    t0 = time.time()
    step(nats_broker, t0)
    step(nats_broker, t0 + STEP)
    assert live(nats_broker, "stalled", key) is None  # too little history yet
    outcome = step(nats_broker, t0 + 2 * STEP)

    assert status(dest(nats_broker, key)) == natsstatus.STALLED
    incident = live(nats_broker, "stalled", key)
    assert incident is not None and incident in outcome.opened
    assert incident.summary == (
        f"ack floor has not moved for {2 * STEP} s; 4 pending, 2 awaiting acknowledgement"
    )
    assert incident.severity == "warning"  # the stream has no limits
    assert incident.actions == ["open", "browse"]
    assert incident.evidence["pending"] == 4 and incident.evidence["ack_pending"] == 2
    assert "ack floor did not move" in incident.rule

    # It holds, and counts from when it first saw the floor still, past the window's start.
    for i in (3, 4):
        step(nats_broker, t0 + i * STEP)
    held = live(nats_broker, "stalled", key)
    assert held is not None and held.pk == incident.pk
    assert held.summary.startswith(f"ack floor has not moved for {duration(4 * STEP)};")

    # The client acknowledges what it holds, and takes the rest: the floor moves, and the
    # incident resolves.
    for msg in taken:
        js.run(msg.ack_sync())
    assert js.fetch(stream, "stuck", 10, ack=True) == 4
    outcome = step(nats_broker, t0 + 5 * STEP)
    assert status(dest(nats_broker, key)) == natsstatus.OK
    incident.refresh_from_db()
    assert incident.state == "resolved" and incident in outcome.resolved


def test_a_consumer_falling_behind_on_a_bounded_stream_is_critical_with_time_to_full(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    stream = unique_name.upper()
    js.add_stream(stream, [f"{unique_name}.>"], max_msgs=200, max_bytes=1_000_000)
    js.add_consumer(stream, "reader", ack_policy=AckPolicy.EXPLICIT)
    consumer_key, stream_key = f"consumer/{stream}/reader", f"stream/{stream}"
    t0 = time.time()
    for i in range(3):
        js.publish(f"{unique_name}.job", b"x" * 100, count=20)  # 20 more every STEP, none read
        step(nats_broker, t0 + i * STEP)

    s, c = dest(nats_broker, stream_key), dest(nats_broker, consumer_key)
    assert c.backlog == 60 and s.backlog == 60  # the stream's: its slowest consumer's pending
    per = s.details["extra"]["bytes"] / s.details["extra"]["messages"]
    expected = [
        Limit("max_msgs", 200, 60, "messages"),
        Limit("max_bytes", 1_000_000, 60 * per, "bytes", per),
    ]
    kind = kind_of(nats_broker)
    assert kind.limits(s) == expected
    assert kind.limits(c) == expected  # a consumer runs into its stream's limits

    # 60 of 200, 20 arriving every 15 s: the limit is reached in 105 s.
    in_rate = 20 / STEP
    left = (200 - 60) / in_rate
    stalled = live(nats_broker, "stalled", consumer_key)
    assert stalled is not None and stalled.severity == "critical"
    assert stalled.summary == (
        f"ack floor has not moved for {2 * STEP} s; 60 pending, 0 awaiting acknowledgement; "
        f"its stream's max_msgs (200 messages) reached in {duration(left)}"
    )
    assert stalled.impact_seconds == pytest.approx(left)
    # Its growing backlog is told by "stalled"; the stream's by "backlog growing", with the limit.
    assert live(nats_broker, "backlog_growing", consumer_key) is None
    growing = live(nats_broker, "backlog_growing", stream_key)
    assert growing is not None and growing.severity == "critical"
    assert growing.summary == (
        f"backlog 60, growing {in_rate:.1f} msg/s over {2 * STEP} s; "
        f"full in {duration(left)} (max_msgs 200 messages)"
    )


# -- dead letters from advisories --------------------------------------------------------


def advisory_counts(js: JetStream, capture: str, stream: str, durable: str) -> dict[str, int]:
    """What the capture stream holds for the consumer, by kind, read by the test itself."""

    async def read(ctx: Any) -> dict[str, int]:
        info = await ctx.stream_info(
            capture, subjects_filter=f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.{durable}"
        )
        subjects = info.state.subjects or {}
        return {
            kind: int(subjects.get(f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{stream}.{durable}", 0))
            for kind in ("MAX_DELIVERIES", "MSG_TERMINATED")
        }

    result: dict[str, int] = js(read)
    return result


def test_a_consumer_whose_messages_all_reach_max_deliveries_shows_OK_but_opens_dead_letters(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    """The issue's case: nothing pending, little awaiting acknowledgement, too little history
    to judge; meanwhile its max-delivery advisories arrive. Counted since the last collection
    from the capture stream's per-subject counts, they open an incident in two collections."""
    capture = dl.check_capture(nats_broker)
    assert capture.capturing, capture
    stream, durable = f"DL_{unique_name}", "worker"
    key = f"consumer/{stream}/{durable}"
    js.add_stream(stream, [f"{stream}.>"])
    js.add_consumer(stream, durable, max_deliver=2, ack_wait=1, ack_policy=AckPolicy.EXPLICIT)

    def fail_some(numbers: range, terms: dict[int, str], total: int) -> None:
        async def work(ctx: Any) -> None:
            for n in numbers:
                await ctx.publish(f"{stream}.{n}", b"never processed")
            await fail(ctx, stream, durable, len(numbers), terms)
            await captured(ctx, stream, durable, total)

        js(work)

    fail_some(range(0, 4), {}, 4)
    before = advisory_counts(js, capture.stream, stream, durable)
    t0 = time.time()
    step(nats_broker, t0)  # where counting starts: nothing before it is "new"
    assert live(nats_broker, "dead_letters", key) is None

    fail_some(range(4, 9), {6: "bad payload"}, 9)  # 4 more reach max deliveries, 1 terminated
    after = advisory_counts(js, capture.stream, stream, durable)
    maxed = after["MAX_DELIVERIES"] - before["MAX_DELIVERIES"]
    terminated = after["MSG_TERMINATED"] - before["MSG_TERMINATED"]
    assert (maxed, terminated) == (4, 1)
    outcome = step(nats_broker, t0 + STEP)

    consumer = dest(nats_broker, key)
    assert status(consumer) == natsstatus.OK  # what the status rules alone would say
    assert consumer.backlog == 0 and consumer.in_flight == 0
    incident = live(nats_broker, "dead_letters", key)
    assert incident is not None and incident in outcome.opened
    assert incident.summary == (
        f"{maxed} messages reached max deliveries (2) in the last {STEP} s; {terminated} terminated"
    )
    assert incident.severity == "warning" and incident.actions == ["open", "deadletters"]
    assert incident.destination_id == consumer.pk and incident.name == consumer.name
    assert incident.evidence["capture_stream"] == capture.stream

    # No new advisories: it holds while the window still has some...
    step(nats_broker, t0 + 2 * STEP)
    held = live(nats_broker, "dead_letters", key)
    assert held is not None and held.pk == incident.pk
    assert held.summary == (
        f"none since the last collection; {maxed} reached max deliveries (2) and "
        f"{terminated} were terminated in the last {2 * STEP} s"
    )
    # ...and resolves once a whole window has none.
    at = t0 + 2 * STEP
    while window_since(at, nats_broker.effective_interval) <= t0 + STEP:
        at += STEP
        step(nats_broker, at)
    incident.refresh_from_db()
    assert incident.state == "resolved"


def test_without_a_capture_stream_advisories_open_nothing(
    private_nats: Callable[..., NatsServer], settings: Any
) -> None:
    settings.SLUICE_NATS_CAPTURE_ADVISORIES = False  # Sluice may not create it
    server = private_nats(jetstream=True)
    broker = Broker.objects.create(
        name="uncaptured",
        kind="nats",
        options={"monitoring_url": server.monitoring_url, "url": server.url},
    )
    helper = JetStream(server.url)
    try:
        helper.add_stream("WORK", ["work.>"])
        helper.add_consumer("WORK", "worker", max_deliver=2, ack_wait=1)
        t0 = time.time()
        step(broker, t0)
        check = dl.last_check(broker)
        assert check is not None and check["state"] == "missing"

        async def work(ctx: Any) -> None:
            for n in range(3):
                await ctx.publish(f"work.{n}", b"x")
            await fail(ctx, "WORK", "worker", 3, {})

        helper(work)
        step(broker, t0 + STEP)
    finally:
        helper.close()
    # All three were given up on after two deliveries; no stream kept the advisories.
    consumer = dest(broker, "consumer/WORK/worker")
    assert consumer.details["extra"]["num_redelivered"] == 3
    assert consumer.backlog == 0 and consumer.in_flight == 0
    assert not Incident.objects.filter(broker=broker, cause="dead_letters").exists()
    assert natsdetectors.ADVISORIES not in cache.get(triage.memo_key(broker))


# -- redelivery storms ------------------------------------------------------------------


def test_redeliveries_rising_two_collections_in_a_row_open_a_redelivery_storm(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    stream = unique_name.upper()
    js.add_stream(stream, [f"{unique_name}.>"])
    js.add_consumer(stream, "naks", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    key = f"consumer/{stream}/naks"
    nc = js.connect()

    async def round_of(publish: int, expect: int, ack: bool = False) -> None:
        """Publish, then take every one of the `expect` messages due and nak (or ack) it."""
        await nak_round(nc.jetstream(), f"{unique_name}.job", stream, "naks", publish, expect, ack)

    def redelivered() -> int:
        return int(dest(nats_broker, key).details["extra"]["num_redelivered"])

    t0 = time.time()
    js.run(round_of(5, 5))  # five delivered once, nak'd
    step(nats_broker, t0)
    js.run(round_of(5, 10))  # those five again, five new: nak'd
    step(nats_broker, t0 + STEP)
    assert redelivered() == 5
    pending = Incident.objects.get(broker=nats_broker, cause="redelivery", key=key)
    assert pending.state == "pending"  # one rise is not yet a storm

    js.run(round_of(5, 15))
    outcome = step(nats_broker, t0 + 2 * STEP)
    assert redelivered() == 10
    incident = live(nats_broker, "redelivery", key)
    assert incident is not None and incident in outcome.opened and incident.pk == pending.pk
    assert incident.summary.startswith(
        f"10 unacknowledged messages delivered more than once, up 5 in {STEP} s ({5 / STEP:,.1f}/s)"
    )
    assert incident.evidence["num_redelivered"] == 10 and incident.evidence["before"] == 5
    assert incident.severity == "warning"

    js.run(round_of(0, 15, ack=True))  # the client acknowledges them all
    outcome = step(nats_broker, t0 + 3 * STEP)
    assert redelivered() == 0
    incident.refresh_from_db()
    assert incident.state == "resolved" and incident in outcome.resolved


# -- what a stream's backlog is ---------------------------------------------------------


def test_a_streams_backlog_is_its_slowest_consumers_pending_or_a_dead_letter_streams_messages(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    name = unique_name.upper()
    read, plain, dlq, work = f"{name}_READ", f"{name}_PLAIN", f"{name}_DLQ", f"{name}_WORK"
    for stream in (read, plain, dlq):
        js.add_stream(stream, [f"{stream}.>"])
    js.add_stream(work, [f"{work}.>"], retention="workqueue")
    for stream, count in ((read, 10), (plain, 3), (dlq, 4), (work, 5)):
        js.publish(f"{stream}.x", count=count)
    js.add_consumer(read, "fast", ack_policy=AckPolicy.EXPLICIT)
    js.add_consumer(read, "slow", ack_policy=AckPolicy.EXPLICIT)
    js.add_consumer(work, "worker", ack_policy=AckPolicy.EXPLICIT)
    assert js.fetch(read, "fast", 4) == 4
    assert js.fetch(work, "worker", 2) == 2

    t0 = time.time()
    step(nats_broker, t0)
    backlog = {s: dest(nats_broker, f"stream/{s}").backlog for s in (read, plain, dlq, work)}
    assert backlog == {read: 10, plain: 0, dlq: 4, work: 3}
    # The figures the monitor reads are kept as they are.
    assert dest(nats_broker, f"stream/{read}").details["extra"]["messages"] == 10
    keys = kind_of(nats_broker).dead_letter_keys(nats_broker)
    assert f"stream/{dlq}" in keys
    # The capture stream's advisories are told per consumer, not again on the stream.
    assert f"stream/{dl.capture_stream(nats_broker)}" not in keys
    assert f"stream/{read}" not in keys

    # The slow consumer takes everything: the backlog is now the fast one's 6, and the
    # out-rate is what left it, so that in minus out is the backlog's growth.
    assert js.fetch(read, "slow", 10) == 10
    js.publish(f"{read}.x", count=3)
    step(nats_broker, t0 + STEP)
    stream = dest(nats_broker, f"stream/{read}")
    assert stream.backlog == 9  # fast: 6 + 3 new; slow: 3 new
    assert stream.in_rate == pytest.approx(3 / STEP)
    assert stream.out_rate == pytest.approx((3 - (9 - 10)) / STEP)
    assert stream.trouble == 0  # shrinking, not growing
    assert dest(nats_broker, f"stream/{plain}").out_rate is None  # no backlog to leave


def test_a_dead_letter_stream_filling_opens_dead_letters_not_backlog_growing(
    nats_broker: Broker, js: JetStream, unique_name: str
) -> None:
    dlq = f"{unique_name.upper()}_DLQ"
    js.add_stream(dlq, [f"{dlq}.>"])
    t0 = time.time()
    for i in range(3):
        js.publish(f"{dlq}.failed", count=10)
        step(nats_broker, t0 + i * STEP)
    key = f"stream/{dlq}"
    assert dest(nats_broker, key).backlog == 30
    incident = live(nats_broker, "dead_letters", key)
    assert incident is not None and incident.summary.startswith("20 dead letter(s)")
    assert incident.evidence["arrived"] == 20 and incident.evidence["backlog"] == 30
    assert live(nats_broker, "backlog_growing", key) is None
