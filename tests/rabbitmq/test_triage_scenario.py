"""A plain incident amid noise, on the real RabbitMQ, in real time, as On fire ranks it.

Noise that is not urgent runs throughout: a parked queue with a large static
backlog, a consumer draining a big backlog steadily, a bursty producer with a
consumer that keeps up, a queue at zero with an occasional message, and steady
traffic. After a warm-up, four incidents start at once: a queue loses its
consumer while its producer goes on, dead letters pour into a dead-letter queue,
a queue with a length limit fills, and a consumer stops acknowledging at its
prefetch limit. Each must be open with its cause within two collections of
becoming detectable (at once for the first two; once the window is long enough
to show a trend or a standstill for the others), and the noise never.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

from dashboard.models import Incident
from tests.scene import AT_ONCE, STANDSTILL, TREND, Scene, on_fire

pytestmark = pytest.mark.django_db


class Traffic:
    """Producers and consumers on their own connections, each in a thread, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def run(self, work: Callable[[Any, threading.Event], None]) -> threading.Event:
        """Start `work(channel, done)`; returns the event that ends this one alone."""
        done = threading.Event()

        def body() -> None:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            try:
                work(conn.channel(), done)
                while not (self.stop.is_set() or done.is_set()):
                    conn.process_data_events(time_limit=0.1)
            finally:
                conn.close()

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        self.threads.append(thread)
        return done

    def produce(self, queue: str, per_second: float, burst: int = 1, every: float = 0.0) -> None:
        def work(ch: Any, done: threading.Event) -> None:
            gap = every or 1 / per_second
            while not (self.stop.is_set() or done.is_set()):
                for _ in range(burst):
                    ch.basic_publish("", queue, b"m" * 64)
                self.stop.wait(gap)

        self.run(work)

    def consume(self, queue: str, prefetch: int, ack_after: float | None) -> threading.Event:
        """A consumer acking each message `ack_after` s after it came (None: never acking)."""

        def work(ch: Any, done: threading.Event) -> None:
            ch.basic_qos(prefetch_count=prefetch)

            def on(ch: Any, method: Any, props: Any, body: bytes) -> None:
                if ack_after is not None:
                    time.sleep(ack_after)
                    ch.basic_ack(method.delivery_tag)

            ch.basic_consume(queue, on)

        return self.run(work)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def test_incidents_reach_on_fire_within_two_collections_and_the_noise_never_does(
    rabbit_broker, amqp, unique_name, rabbitmq, client_for
):
    def q(part: str) -> str:
        return f"{unique_name}.{part}"

    dlx = q("dlx")
    amqp.exchange_declare(dlx, "fanout", auto_delete=True)
    for part, args in {
        "parked": {},
        "draining": {},
        "bursty": {},
        "quiet": {},
        "steady": {},
        "orders": {},
        "payments.dlq": {},
        "source": {"x-message-ttl": 0, "x-dead-letter-exchange": dlx},
        "capped": {"x-max-length": 3000},
        "stuck": {},
    }.items():
        amqp.queue_declare(q(part), arguments=args)
    amqp.queue_bind(q("payments.dlq"), dlx)
    for _ in range(5000):
        amqp.basic_publish("", q("parked"), b"p" * 64)
    for _ in range(6000):
        amqp.basic_publish("", q("draining"), b"d" * 64)
    noise = {f"//{q(p)}" for p in ("parked", "draining", "bursty", "quiet", "steady")}
    scene = Scene(
        rabbit_broker,
        # Other queues on the shared broker (other tests') are not part of the scene.
        in_scene=lambda incident: incident.key.startswith(f"//{unique_name}."),
        noise=noise,
        trouble={
            ("consumers_lost", f"//{q('orders')}"): AT_ONCE,
            ("dead_letters", f"//{q('payments.dlq')}"): AT_ONCE,
            ("backlog_growing", f"//{q('capped')}"): TREND,
            ("stalled", f"//{q('stuck')}"): STANDSTILL,
        },
    )

    traffic = Traffic(rabbitmq["amqp_url"])
    try:
        traffic.consume(q("draining"), prefetch=20, ack_after=0.02)  # ~50 msg/s
        traffic.produce(q("bursty"), 0, burst=300, every=8)
        traffic.consume(q("bursty"), prefetch=50, ack_after=0.002)
        traffic.produce(q("quiet"), 0, burst=1, every=7)
        traffic.consume(q("quiet"), prefetch=1, ack_after=0)
        traffic.produce(q("steady"), 20)
        traffic.consume(q("steady"), prefetch=10, ack_after=0)
        traffic.produce(q("orders"), 10)
        orders_reader = traffic.consume(q("orders"), prefetch=10, ack_after=0)

        def begin() -> None:
            orders_reader.set()  # the orders consumer goes away; its producer goes on
            traffic.produce(q("source"), 10)  # every one expires into the dead-letter queue
            traffic.produce(q("capped"), 20)
            for _ in range(40):
                amqp.basic_publish("", q("stuck"), b"s" * 64)
            traffic.consume(q("stuck"), prefetch=10, ack_after=None)

        scene.play(begin)

        open_now = {
            (i.cause, i.key): i
            for i in Incident.objects.filter(
                broker=rabbit_broker, state="open", key__startswith=f"//{unique_name}."
            )
        }
        assert not [k for k in open_now if k[1] in noise], sorted(open_now)
        capped = open_now[("backlog_growing", f"//{q('capped')}")]
        assert "full in" in capped.summary and "max-length (argument) 3,000" in capped.summary
        assert capped.severity == "critical"  # full within minutes
        assert open_now[("consumers_lost", f"//{q('orders')}")].severity == "critical"

        # The On fire section lists them, most urgent first, and none of the noise.
        section = on_fire(client_for("carol").get("/").content.decode())
        for _, key in scene.trouble:
            assert key.removeprefix("//") in section
        for key in noise:
            assert f">{key.removeprefix('//')}<" not in section
        ranked = sorted(open_now.values(), key=lambda i: -i.urgency)
        assert section.index(str(ranked[0].public_id)) < section.index(str(ranked[-1].public_id))
        assert ranked[0].severity == "critical"
    finally:
        traffic.close()
