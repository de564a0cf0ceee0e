"""Plain incidents amid noise, on the real Kafka-protocol broker (Tansu), in real time, as On fire
ranks them.

Noise that is not urgent runs throughout: a topic nobody reads with a static
backlog, a dead-letter topic holding old dead letters and getting no new ones,
a group catching up steadily on a big backlog (during the warm-up: a group
longer at it than SLUICE_LAG_SECONDS is too far behind, rightly), a bursty
producer with a group that keeps up between bursts, steady traffic with a group
keeping up, and a record once a minute that its group takes 8 s to handle. After
a warm-up, four incidents start at once: a group's consumer goes away while its
producer goes on, dead letters pour into a dead-letter topic, a group's consumer
hangs on the records it got while staying joined, and a group pauses one of its
two partitions and forgets it, so that its commits move on the other and its
lag holds while the records it has not read grow old. Each must be open with
its cause within two collections of becoming detectable (at once for the first
two; once the whole window shows no commit moving, or once the unread records
are older than SLUICE_LAG_SECONDS, for the others), and the noise never.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaProducer, OffsetAndMetadata

from dashboard.models import Broker, Destination, Incident
from tests.kafka_fixtures import joined_consumer
from tests.scene import AT_ONCE, STANDSTILL, Scene, on_fire

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]

LAG_SECONDS = 45  # SLUICE_LAG_SECONDS for this test: reached in real time


class Traffic:
    """Producers and consumer-group members on the real Kafka, each in a thread, until stopped."""

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.joined: dict[str, threading.Event] = {}
        self.errors: list[Exception] = []
        # One record per batch: Tansu's end offsets undercount batched records (kafka_fixtures).
        self.producer = KafkaProducer(bootstrap_servers=servers, acks="all", batch_size=1)

    def run(self, body: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                body()
            except Exception as error:  # reported by close(), not lost in the thread
                self.errors.append(error)
                raise

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        self.threads.append(thread)

    def send(self, topic: str, count: int, partition: int | None = None) -> None:
        """`count` records, written before this returns."""
        for _ in range(count):
            self.producer.send(topic, b"m" * 64, partition=partition)
        self.producer.flush(timeout=30)

    def produce(
        self, topic: str, per_second: float, burst: int = 1, every: float = 0.0,
        partition: int | None = None,
    ) -> None:  # fmt: skip
        def body() -> None:
            gap = every or 1 / per_second
            while not self.stop.is_set():
                self.send(topic, burst, partition)
                self.stop.wait(gap)

        self.run(body)

    def consume(
        self, topic: str, group: str, per_record: float = 0.0, hang: bool = False,
        pause: tuple[int, ...] = (), **config: Any,
    ) -> threading.Event:  # fmt: skip
        """A member of `group` committing what it read, each record taking `per_record` s;
        `hang`: stuck in its handler from the first records on, still joined; `pause`:
        partitions it pauses and never resumes. Returns the event that makes it leave."""
        joined = self.joined[group] = threading.Event()
        leave = threading.Event()

        def body() -> None:
            consumer = joined_consumer(self.servers, topic, group, **config)
            try:
                parts = sorted(consumer.assignment())
                assert parts, f"{group} got no partitions"
                start = consumer.beginning_offsets(parts)
                for tp in parts:
                    consumer.seek(tp, start[tp])
                # Tansu lists a group only once it stored offsets: it commits where it starts.
                consumer.commit({tp: OffsetAndMetadata(start[tp], None, -1) for tp in parts})
                consumer.pause(*[tp for tp in parts if tp.partition in pause])
                joined.set()
                while not (self.stop.is_set() or leave.is_set()):
                    got = consumer.poll(100)
                    if got and hang:
                        self.stop.wait()  # its heartbeats go on in the client's own thread
                        break
                    for records in got.values():
                        for _ in records:
                            if per_record:
                                self.stop.wait(per_record)
                    if got:
                        consumer.commit(
                            {
                                tp: OffsetAndMetadata(records[-1].offset + 1, None, -1)
                                for tp, records in got.items()
                            }
                        )
            finally:
                consumer.close()  # leaves the group at once

        self.run(body)
        return leave

    def wait_joined(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        for group, joined in self.joined.items():
            assert joined.wait(max(0.0, deadline - time.monotonic())), f"{group} did not join"

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        self.producer.close(timeout=10)
        assert not [t for t in self.threads if t.is_alive()], "a producer or consumer hung"
        assert not self.errors, self.errors


def test_incidents_reach_on_fire_within_two_collections_and_the_noise_never_does(
    kafka: dict[str, str], kafka_broker: Broker, make_topic: Callable[..., str],
    settings: Any, unique_name: str, client_for: Callable[..., Any],
) -> None:  # fmt: skip
    settings.SLUICE_LAG_SECONDS = LAG_SECONDS

    def group(part: str) -> str:
        return f"{unique_name}-{part}-readers"

    topics = {
        part: make_topic(f"{unique_name}-{part}", partitions=2 if part == "lagging" else 1)
        for part in ("parked", "draining", "bursty", "steady", "rare", "orders", "stuck", "lagging")
    }
    archive = make_topic(f"{unique_name}.archive.DLT")
    dlt = make_topic(f"{unique_name}.payments.DLT")
    noise = {
        f"topic/{topics['parked']}",
        f"topic/{archive}",
        *(f"group/{group(p)}" for p in ("draining", "bursty", "steady", "rare")),
        *(f"topic/{topics[p]}" for p in ("draining", "bursty", "steady", "rare")),
    }
    # Their unread records grow old too: these two are far behind in seconds as well.
    also = {("lag_seconds", f"group/{group('orders')}"), ("lag_seconds", f"group/{group('stuck')}")}
    scene = Scene(
        kafka_broker,
        in_scene=lambda incident: unique_name in incident.key,
        noise=noise,
        trouble={
            ("consumers_lost", f"group/{group('orders')}"): AT_ONCE,
            ("dead_letters", f"topic/{dlt}"): AT_ONCE,
            ("stalled", f"group/{group('stuck')}"): STANDSTILL,
            # Detectable once the records it has not read are that old.
            ("lag_seconds", f"group/{group('lagging')}"): LAG_SECONDS,
        },
        also=also,
    )

    traffic = Traffic(kafka["bootstrap_servers"])
    try:
        traffic.send(topics["parked"], 1000)
        traffic.send(archive, 50)
        traffic.consume(
            topics["draining"], group("draining"), per_record=0.004, max_poll_records=50
        )
        traffic.consume(topics["bursty"], group("bursty"))
        traffic.consume(topics["steady"], group("steady"))
        traffic.consume(topics["rare"], group("rare"), per_record=8)
        orders_reader = traffic.consume(topics["orders"], group("orders"))
        traffic.consume(topics["stuck"], group("stuck"), hang=True)
        traffic.consume(topics["lagging"], group("lagging"), pause=(1,))
        traffic.wait_joined()
        traffic.send(topics["draining"], 3000)  # far faster than its group reads
        traffic.produce(topics["bursty"], 0, burst=300, every=8)
        traffic.produce(topics["steady"], 20)
        traffic.produce(topics["rare"], 0, every=60)
        traffic.produce(topics["orders"], 10)
        traffic.produce(topics["lagging"], 1, partition=0)

        def begin() -> None:
            orders_reader.set()  # the orders consumer goes away; its producer goes on
            traffic.produce(dlt, 2)
            traffic.send(topics["stuck"], 40)
            traffic.send(topics["lagging"], 20, partition=1)  # the paused partition

        scene.play(begin)

        open_now = {
            (i.cause, i.key): i
            for i in Incident.objects.filter(
                broker=kafka_broker, state="open", key__contains=unique_name
            )
        }
        assert set(scene.trouble) <= set(open_now) <= {*scene.trouble, *also}, open_now
        lost = open_now[("consumers_lost", f"group/{group('orders')}")]
        assert lost.severity == "critical" and lost.summary.startswith("lost its 1 consumer(s)")
        dead = open_now[("dead_letters", f"topic/{dlt}")]
        assert dead.severity == "critical"  # 120 a minute
        stuck = open_now[("stalled", f"group/{group('stuck')}")]
        assert stuck.severity == "warning" and stuck.summary.endswith("; lag 40")
        behind = open_now[("lag_seconds", f"group/{group('lagging')}")]
        assert behind.severity == "warning" and behind.evidence["threshold_s"] == LAG_SECONDS
        # The 20 on the paused partition, and perhaps one in flight on the one it reads.
        assert re.search(r"\(over 45 s\); lag 2[01]$", behind.summary), behind.summary
        # Kafka's one meaning of backlog: a topic nobody reads has none, unless it holds
        # dead letters, which wait there as its backlog without arriving.
        rows = {d.key: d for d in Destination.objects.filter(broker=kafka_broker)}
        parked, old = rows[f"topic/{topics['parked']}"], rows[f"topic/{archive}"]
        assert (parked.backlog, parked.consumers, parked.in_total) == (0, 0, 1000)
        assert (old.backlog, old.consumers) == (50, 0)

        # The On fire section lists them, most urgent first, and none of the noise.
        section = on_fire(client_for("carol").get("/").content.decode())
        for incident in open_now.values():
            assert f">{incident.name}<" in section
        for key in noise:
            assert f">{key.split('/', 1)[1]}<" not in section
        shown = sorted(
            open_now.values(), key=lambda i: section.index(f'data-incident="{i.public_id}"')
        )
        order = [(i.urgency, i.started_at) for i in shown]
        assert order == sorted(order, reverse=True)
        assert shown[0].severity == "critical" and shown[-1].severity == "warning"
    finally:
        traffic.close()
