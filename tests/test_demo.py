"""The demo's incident episodes on the real brokers: each opens the incident it is meant to,
over the demo's own steady traffic, and heals when it ends.

Each broker's demo traffic (dashboard/demo.py) runs in a thread, as `make run`
runs it, once per module. A test plays one episode by hand through `Trouble`,
as demo_episodes.play does, held only as long as the test needs it.
Collections are stamped STEP seconds apart and each is followed by triage, as
the worker does, so windows of history build up without waiting; what the
brokers say is real.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pika
import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from dashboard import demo, demo_episodes
from dashboard.demo_episodes import EPISODES, Episode, Trouble
from dashboard.kinds.nats import deadletters as natsdl
from dashboard.models import Broker, Destination, Incident
from tests.app_fixtures import STEP, wait_for
from tests.app_fixtures import collect_and_triage as step
from tests.nats.test_triage import advisory_counts
from tests.nats_fixtures import JetStream
from tests.rabbit_fixtures import management, plugin_count

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]


def episode(name: str) -> Episode:
    return next(e for e in EPISODES if e.name == name)


def live(broker: Broker, cause: str, key: str) -> Incident | None:
    return Incident.objects.filter(broker=broker, cause=cause, key=key, state="open").first()


def until_resolved(
    broker: Broker, incident: Incident, at: float, between: Callable[[], Any] | None = None
) -> float:
    """Stamped collections, a moment apart (or each after `between()` returned), until
    `incident` resolves (30 s at most); returns the last one's stamp."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        at += STEP
        step(broker, at)
        incident.refresh_from_db()
        if incident.state == "resolved":
            return at
        if between is None:
            time.sleep(0.5)
        else:
            between()
    raise AssertionError(f"still {incident.state}: {incident.summary}")


def demo_traffic(config: dict[str, Any]) -> Iterator[Trouble]:
    """One broker's demo traffic in a thread until the module ends; yields its Trouble."""
    stop, trouble = threading.Event(), Trouble()
    thread = threading.Thread(target=demo.keep_running, args=(config, stop, trouble), daemon=True)
    thread.start()
    try:
        yield trouble
    finally:
        stop.set()
        thread.join(timeout=20)


# -- RabbitMQ -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit_demo(rabbitmq: dict[str, str]) -> Iterator[Trouble]:
    yield from demo_traffic({"name": "rabbit-demo", "kind": "rabbitmq", **rabbitmq})
    # A shared broker: the demo's queues and exchanges go, and cleanup must not hide a result.
    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
        channel = connection.channel()
        for queue in (*demo.RABBIT_QUEUES, "payments.dlq"):
            channel.queue_delete(queue)
        for exchange in ("events", "dlx"):
            channel.exchange_delete(exchange)
        connection.close()


def queue_info(rabbitmq: dict[str, str], name: str) -> dict[str, Any]:
    """What the management API says of the queue; {} while the demo has not declared it."""
    try:
        response = management(rabbitmq, "GET", f"/api/queues/%2F/{quote(name, safe='')}")
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return {}
        raise
    info: dict[str, Any] = response.json()
    return info


def test_the_consumer_lost_episode_opens_consumers_lost_on_shipments_and_heals(
    rabbit_broker: Broker, rabbitmq: dict[str, str], rabbit_demo: Trouble
) -> None:
    played = episode("consumer lost")
    key = "//shipments"
    wait_for(lambda: queue_info(rabbitmq, "shipments").get("consumers") == 1)
    t0 = time.time()
    step(rabbit_broker, t0)
    assert live(rabbit_broker, played.incident, key) is None

    rabbit_demo.start(played.name)
    try:
        # The consumer is gone and orders keep arriving.
        wait_for(
            lambda: (
                (q := queue_info(rabbitmq, "shipments")).get("consumers") == 0
                and q.get("messages_ready", 0) > 0
            )
        )
        outcome = step(rabbit_broker, t0 + STEP)
    finally:
        rabbit_demo.end(played.name)

    incident = live(rabbit_broker, "consumers_lost", key)
    assert incident is not None and incident in outcome.opened
    assert incident.summary.startswith("lost its 1 consumer(s) 15 s ago; backlog ")
    assert incident.severity == "critical"  # messages still arrive
    # The episode is over: the consumer is back, and the incident resolves.
    wait_for(lambda: queue_info(rabbitmq, "shipments").get("consumers") == 1)
    until_resolved(rabbit_broker, incident, t0 + STEP)


def test_the_slow_worker_episode_opens_backlog_growing_on_invoices_and_heals(
    rabbit_broker: Broker, rabbitmq: dict[str, str], rabbit_demo: Trouble
) -> None:
    played = episode("slow worker")
    key = "//invoices"

    def ready() -> int:
        return int(queue_info(rabbitmq, "invoices").get("messages_ready", -1))

    wait_for(lambda: 0 <= ready() < 50)  # the worker keeps up
    t0 = time.time()
    step(rabbit_broker, t0)
    rabbit_demo.start(played.name)
    try:
        # Three more collections, each once RabbitMQ's figures show the backlog risen.
        for i in range(1, 4):
            last = Destination.objects.get(broker=rabbit_broker, key=key).backlog
            wait_for(lambda: ready() >= last + 10, timeout=40)  # noqa: B023
            outcome = step(rabbit_broker, t0 + i * STEP)
            if live(rabbit_broker, played.incident, key):
                break
    finally:
        rabbit_demo.end(played.name)

    incident = live(rabbit_broker, "backlog_growing", key)
    assert incident is not None and incident in outcome.opened
    assert incident.summary.startswith("backlog ") and ", growing " in incident.summary
    # The worker is fast again: the backlog drains, and the incident resolves.
    wait_for(lambda: ready() == 0, timeout=60)
    until_resolved(rabbit_broker, incident, t0 + 4 * STEP)


def test_the_poison_payments_episode_opens_dead_letters_on_payments_dlq_and_heals(
    rabbit_broker: Broker, rabbitmq: dict[str, str], rabbit_demo: Trouble
) -> None:
    played = episode("poison payments")
    key = "//payments.dlq"
    wait_for(lambda: queue_info(rabbitmq, "payments").get("consumers") == 1)
    t0 = time.time()
    # A new adapter's first reading of the Prometheus plugin's counters gives no totals
    # (channels' counters are not comparable with what an earlier source stored): the
    # arrivals at a dead-letter queue are derived from the second reading on.
    step(rabbit_broker, t0 - STEP)
    step(rabbit_broker, t0)
    assert live(rabbit_broker, played.incident, key) is None  # none arrive by themselves
    before = Destination.objects.get(broker=rabbit_broker, key=key).backlog  # as Sluice saw it

    rabbit_demo.start(played.name)
    try:
        # Ten or more over the stamped 15 s: above the noise Sluice ignores in a derived
        # rate (RabbitMQ counts no publishes for dead-lettered arrivals). Counted by both
        # sources Sluice may read, each refreshed on its own timer.
        wait_for(
            lambda: (
                queue_info(rabbitmq, "payments.dlq").get("messages", 0) >= before + 10
                and (plugin_count(rabbitmq, "payments.dlq") or 0) >= before + 10
            )
        )
        outcome = step(rabbit_broker, t0 + STEP)
    finally:
        rabbit_demo.end(played.name)

    incident = live(rabbit_broker, "dead_letters", key)
    assert incident is not None and incident in outcome.opened
    assert "dead letter(s) over the last" in incident.summary
    # A dead letter says why its payment failed.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    try:
        channel = connection.channel()
        method, props, _body = channel.basic_get("payments.dlq")
        assert method is not None
        assert str(props.headers["x-exception"]).startswith("ValueError: amount must be positive")
        channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    # No more arrive once it is over: the incident resolves after a window without any.
    until_resolved(rabbit_broker, incident, t0 + STEP)


# -- Kafka --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_demo(kafka: dict[str, str]) -> Iterator[Trouble]:
    yield from demo_traffic({"name": "kafka-demo", "kind": "kafka", **kafka})
    admin = KafkaAdminClient(bootstrap_servers=kafka["bootstrap_servers"])
    with contextlib.suppress(Exception):  # a shared broker: cleanup must not hide a result
        admin.delete_topics(list(demo.KAFKA_TOPICS))
    with contextlib.suppress(Exception):
        admin.delete_groups(["billing", "analytics"])
    admin.close()


@pytest.fixture
def committed(kafka_admin: Any) -> Callable[[str], dict[Any, int]]:
    """A group's committed offsets, as the broker has them now."""

    def read(group: str) -> dict[Any, int]:
        found = kafka_admin.list_group_offsets(group).get(group) or {}
        return {tp: meta.offset for tp, meta in found.items()}

    return read


def test_the_stalled_group_episode_opens_stalled_on_billing_and_heals(
    kafka_broker: Broker, kafka_demo: Trouble, committed: Callable[[str], dict[Any, int]]
) -> None:
    played = episode("stalled group")
    key = "group/billing"
    parts = sum(demo.KAFKA_TOPICS[t] for t in ("orders.events", "payments.events"))
    wait_for(lambda: len(committed("billing")) == parts, timeout=60)  # joined, and committing
    t0 = time.time()
    step(kafka_broker, t0)

    kafka_demo.start(played.name)
    try:
        # Its commits stand still while it stays joined: two reads half a second apart
        # agree, then the collections, until a window of them saw none move.
        def unmoved() -> dict[Any, int]:
            first = committed("billing")
            time.sleep(0.5)
            return first if committed("billing") == first else {}

        still = wait_for(unmoved)
        for i in range(1, 9):
            step(kafka_broker, t0 + i * STEP)
            if live(kafka_broker, played.incident, key):
                break
        group = Destination.objects.get(broker=kafka_broker, key=key)
        assert committed("billing") == still
    finally:
        kafka_demo.end(played.name)

    incident = live(kafka_broker, "stalled", key)
    assert incident is not None, group.details.get("status")
    assert group.details["status"]["status"] == "STALL" and group.consumers == 1
    assert incident.summary.startswith("1 member(s) joined, commits have not moved for ")
    # Resumed, it reads what waited and commits: the incident resolves.
    wait_for(lambda: committed("billing") != still)
    until_resolved(kafka_broker, incident, t0 + i * STEP)


def test_the_poison_records_episode_opens_dead_letters_on_the_dead_letter_topic(
    kafka: dict[str, str], kafka_broker: Broker, kafka_demo: Trouble
) -> None:
    played = episode("poison records")
    topic = "payments.events.DLT"
    key = f"topic/{topic}"
    reader = KafkaConsumer(bootstrap_servers=kafka["bootstrap_servers"])
    dlt = TopicPartition(topic, 0)

    def written() -> int:
        return int(reader.end_offsets([dlt]).get(dlt, 0))

    try:
        wait_for(lambda: topic in reader.topics())
        before = written()
        t0 = time.time()
        step(kafka_broker, t0)
        assert live(kafka_broker, played.incident, key) is None  # none arrive by themselves
        kafka_demo.start(played.name)
        try:
            # Several: one record over the stamped 15 s is a rate that, times 15 s again,
            # may come to a hair under one message (float rounding), and open nothing.
            wait_for(lambda: written() >= before + 5)
            outcome = step(kafka_broker, t0 + STEP)
        finally:
            kafka_demo.end(played.name)
    finally:
        reader.close()

    incident = live(kafka_broker, "dead_letters", key)
    shown = Destination.objects.filter(broker=kafka_broker, key=key).values_list(
        "backlog", "in_rate"
    )
    assert incident is not None and incident in outcome.opened, (before, list(shown))
    assert "dead letter(s) over the last" in incident.summary
    until_resolved(kafka_broker, incident, t0 + STEP)


# -- NATS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nats_demo(nats: dict[str, str]) -> Iterator[Trouble]:
    yield from demo_traffic({"name": "nats-demo", "kind": "nats", **nats})
    helper = JetStream(nats["url"])

    async def delete(ctx: Any) -> None:
        for stream in ("ORDERS", "JOBS", "PAYMENTS"):
            with contextlib.suppress(Exception):  # a shared server: cleanup must not hide a result
                await ctx.delete_stream(stream)

    helper(delete)
    helper.close()


def test_the_max_deliveries_episode_opens_dead_letters_and_a_redelivery_storm_that_heal(
    nats_broker: Broker, nats_demo: Trouble, js: JetStream
) -> None:
    played = episode("max deliveries")
    key = "consumer/PAYMENTS/charger"
    capture = natsdl.check_capture(nats_broker)
    assert capture.capturing, capture

    async def charger(ctx: Any) -> Any:
        with contextlib.suppress(Exception):  # not there yet
            return await ctx.consumer_info("PAYMENTS", "charger")
        return None

    wait_for(lambda: (info := js(charger)) is not None and info.delivered.stream_seq > 0)

    def redelivered() -> int:
        return int(js(charger).num_redelivered)

    def refused() -> int:
        return sum(advisory_counts(js, capture.stream, "PAYMENTS", "charger").values())

    before = refused()
    t0 = time.time()
    step(nats_broker, t0)  # where counting advisories and redeliveries starts
    at = t0
    opened: list[Incident] = []
    nats_demo.start(played.name)
    try:
        # Each collection once the charger has refused more: payments reach max deliveries
        # (advisories), and the refused ones' redeliveries rise collection after collection.
        for _ in range(8):
            last = redelivered()
            wait_for(lambda: redelivered() > last)  # noqa: B023
            at += STEP
            opened += step(nats_broker, at).opened
            if live(nats_broker, "dead_letters", key) and live(nats_broker, "redelivery", key):
                break
        assert refused() > before
    finally:
        nats_demo.end(played.name)

    dead = live(nats_broker, "dead_letters", key)
    storm = live(nats_broker, "redelivery", key)
    assert dead is not None and dead in opened
    assert storm is not None and storm in opened
    assert "reached max deliveries (3)" in dead.summary or "terminated" in dead.summary
    assert dead.evidence["stream"] == "PAYMENTS" and dead.evidence["consumer"] == "charger"
    assert "delivered more than once" in storm.summary
    # Over: what it refused is acknowledged when redelivered, and no more advisories come.
    at = until_resolved(nats_broker, dead, at)

    # Payments go on being delivered, while the server's count of redelivered messages
    # stays at those it gave up on: nothing awaits acknowledgement, the storm is over.
    def delivered() -> int:
        return int(js(charger).delivered.consumer_seq)

    def more_delivered() -> None:
        last = delivered()
        wait_for(lambda: delivered() > last)

    more_delivered()
    until_resolved(nats_broker, storm, at, between=more_delivered)
    assert redelivered() > 0


# -- the turns ----------------------------------------------------------------------------


class Recorded(Trouble):
    """Trouble that notes each start and end, with what else was playing, and stops the
    turns after `ends` episodes."""

    def __init__(self, stop: threading.Event, ends: int) -> None:
        super().__init__()
        self.stop, self.ends = stop, ends
        self.calls: list[tuple[str, str, bool]] = []

    def start(self, name: str) -> None:
        others = any(e.name in self for e in EPISODES)
        self.calls.append(("start", name, others))
        super().start(name)

    def end(self, name: str) -> None:
        super().end(name)
        self.calls.append(("end", name, False))
        if sum(1 for call in self.calls if call[0] == "end") == self.ends:
            self.stop.set()


def test_episodes_take_turns_one_at_a_time_for_the_kinds_present_and_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    brokers = [{"name": "rabbit-demo", "kind": "rabbitmq"}, {"name": "nats-demo", "kind": "nats"}]
    short = [replace(e, seconds=0.02) for e in EPISODES]
    stop = threading.Event()
    trouble = Recorded(stop, ends=5)
    with caplog.at_level(logging.INFO, logger="sluice.demo"):
        player = threading.Thread(
            target=demo_episodes.play, args=(brokers, 0.01, trouble, stop, short)
        )
        player.start()
        player.join(timeout=10)
    assert not player.is_alive()

    # No Kafka here: its episodes are skipped; the turn comes round again after the last.
    order = ["consumer lost", "max deliveries", "poison payments", "slow worker", "consumer lost"]
    assert trouble.calls == [
        call for name in order for call in (("start", name, False), ("end", name, False))
    ]
    assert not any(e.name in trouble for e in EPISODES)  # nothing left playing
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo: ")]
    assert said[:2] == [
        "demo: incident episode 'consumer lost' on rabbit-demo shipments for 0.02 s: "
        "its consumer goes away while orders keep arriving",
        "demo: incident episode 'consumer lost' on rabbit-demo shipments is over",
    ]
    assert said[2].startswith("demo: incident episode 'max deliveries' on nats-demo PAYMENTS")


def test_no_episodes_when_incidents_every_is_zero_and_a_bad_cadence_is_refused(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    trouble = Recorded(stop, ends=1)
    demo_episodes.play([{"name": "rabbit-demo", "kind": "rabbitmq"}], 0, trouble, stop)
    assert trouble.calls == []  # returned at once, having played nothing

    config = tmp_path / "brokers.toml"
    config.write_text('[[broker]]\nname = "r"\nkind = "rabbitmq"\n')
    with pytest.raises(SystemExit) as refused:
        demo.main(["--config", str(config), "--incidents-every", "-5"])
    assert refused.value.code == 2
    monkeypatch.setenv("SLUICE_DEMO_INCIDENTS_EVERY", "soon")  # the default under `make run`
    with pytest.raises(SystemExit) as refused:
        demo.main(["--config", str(config)])
    assert refused.value.code == 2
