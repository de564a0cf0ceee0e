"""Plain incidents amid noise, on the real NATS JetStream, in real time, as On fire ranks them.

Noise that is not urgent runs throughout: a parked work-queue stream with a large
static backlog and no consumer, a stream holding many messages whose one consumer
is caught up, a consumer draining a big backlog steadily, a bursty publisher with a
consumer that keeps up, and steady traffic. After a warm-up, four incidents start
at once: a worker stops acknowledging at its max_ack_pending while its publisher
goes on, a consumer falls behind on a stream with max_msgs, a worker naks every
message until each reaches max deliveries, and another naks every message so that
redeliveries rise. Each must be open with its cause within two collections of
becoming detectable (at once for the dead letters; after two rises in a row for
the redeliveries; once the window is long enough to show a trend or a standstill
for the others), and the noise never.

A stream's backlog is its slowest consumer's pending, and a durable consumer with
pending messages that no client reads is stalled by the status rules (nothing is
being completed), so a parked stream here is one no consumer reads, or one whose
consumer is caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import nats as nats_client
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, DeliverPolicy

from dashboard.kinds.nats import deadletters as dl
from dashboard.models import Broker, Incident
from tests.nats_fixtures import JetStream
from tests.scene import AT_ONCE, STANDSTILL, TREND, TWICE, Scene, on_fire

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_triage")]

Handler = Callable[[Any], Awaitable[None]]


async def ack(msg: Any) -> None:
    await msg.ack()


class Traffic:
    """Publishers and pull workers, each on a connection of its own, as tasks on the `js`
    helper's event loop, until stopped."""

    def __init__(self, js: JetStream) -> None:
        self.js = js
        self.stopping = asyncio.Event()
        self.running: list[Future[None]] = []

    def run(self, work: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        """Start `await work(jetstream_context)` on a connection of its own."""

        async def body() -> None:
            nc = await nats_client.connect(self.js.url, connect_timeout=5, allow_reconnect=False)
            try:
                await work(nc.jetstream())
            finally:
                await nc.close()

        self.running.append(asyncio.run_coroutine_threadsafe(body(), self.js.loop))

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the traffic is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def publish(self, subject: str, per_second: float, burst: int = 1, every: float = 0.0) -> None:
        """A publisher of `burst` messages every `every` s (or 1 / `per_second` s)."""

        async def work(ctx: Any) -> None:
            gap = every or 1 / per_second
            while not self.stopping.is_set():
                for _ in range(burst):
                    await ctx.publish(subject, b"m" * 64)
                await self.pause(gap)

        self.run(work)

    def pull(
        self, stream: str, durable: str, batch: int, pause: float = 0.0, handle: Handler = ack
    ) -> None:
        """A worker fetching up to `batch` at a time, `pause` s apart, giving each to `handle`."""

        async def work(ctx: Any) -> None:
            sub = await ctx.pull_subscribe_bind(durable=durable, stream=stream)
            while not self.stopping.is_set():
                try:
                    msgs = await sub.fetch(batch, timeout=1)
                except (TimeoutError, NatsTimeout):
                    continue
                for msg in msgs:
                    await handle(msg)
                await self.pause(pause)

        self.run(work)

    def check(self) -> None:
        """A publisher or worker that ended early fails the test with its own error."""
        for task in self.running:
            if task.done():
                task.result()
                raise AssertionError("a publisher or worker ended before the traffic was stopped")

    def close(self) -> None:
        self.js.loop.call_soon_threadsafe(self.stopping.set)
        try:
            for task in self.running:
                task.result(timeout=10)
        finally:
            for task in self.running:
                task.cancel()


def test_incidents_reach_on_fire_within_two_collections_and_the_noise_never_does(
    nats_broker: Broker, js: JetStream, unique_name: str, client_for: Callable[[str], Any]
) -> None:
    capture = dl.check_capture(nats_broker)  # dead letters are counted from its advisories
    assert capture.capturing, capture
    name = unique_name.upper()

    def stream(part: str) -> str:
        return f"{name}_{part.upper()}"

    def subject(part: str) -> str:
        return f"{name}.{part}.m"

    def consumer(part: str) -> str:
        return f"consumer/{stream(part)}/worker"

    streams: dict[str, dict[str, Any]] = {
        "parked": {"retention": "workqueue"},  # no consumer: its messages are its backlog
        "archive": {},
        "draining": {},
        "bursty": {},
        "steady": {},
        "stuck": {},
        "capped": {"max_msgs": 3000},
        "failing": {},
        "flaky": {},
    }
    for part, config in streams.items():
        js.add_stream(stream(part), [f"{name}.{part}.>"], **config)
    js.publish(subject("parked"), b"p" * 64, count=5000)
    js.publish(subject("archive"), b"a" * 64, count=5000)
    js.publish(subject("draining"), b"d" * 64, count=6000)
    consumers: dict[str, dict[str, Any]] = {
        "archive": {"deliver_policy": DeliverPolicy.NEW},  # caught up: read only what comes
        "draining": {},
        "bursty": {},
        "steady": {},
        "stuck": {"max_ack_pending": 10, "ack_wait": 300},
        "capped": {},
        "failing": {"max_deliver": 2, "ack_wait": 30},
        "flaky": {"ack_wait": 30},
    }
    for part, config in consumers.items():
        js.add_consumer(stream(part), "worker", ack_policy=AckPolicy.EXPLICIT, **config)

    noise = {f"stream/{stream(p)}" for p in ("parked", "archive", "draining", "bursty", "steady")}
    noise |= {consumer(p) for p in ("archive", "draining", "bursty", "steady")}
    scene = Scene(
        nats_broker,
        # Other streams on the shared server (other tests', the capture stream) are not
        # part of the scene.
        in_scene=lambda incident: f"/{name}_" in incident.key,
        noise=noise,
        trouble={
            ("stalled", consumer("stuck")): STANDSTILL,
            ("backlog_growing", f"stream/{stream('capped')}"): TREND,
            ("dead_letters", consumer("failing")): AT_ONCE,
            ("redelivery", consumer("flaky")): TWICE,
        },
    )
    broken = threading.Event()  # set when the incidents begin

    async def hold_once_broken(msg: Any) -> None:
        if not broken.is_set():
            await msg.ack()

    async def nak_once_broken(msg: Any) -> None:
        await (msg.nak() if broken.is_set() else msg.ack())

    async def nak_later_once_broken(msg: Any) -> None:
        await (msg.nak(delay=1) if broken.is_set() else msg.ack())

    traffic = Traffic(js)
    try:
        traffic.pull(stream("draining"), "worker", batch=10, pause=0.2)  # ~50 msg/s
        traffic.publish(subject("bursty"), 0, burst=300, every=8)
        traffic.pull(stream("bursty"), "worker", batch=50)
        traffic.publish(subject("steady"), 20)
        traffic.pull(stream("steady"), "worker", batch=10)
        for part, per_second, handle in (
            ("stuck", 2, hold_once_broken),
            ("failing", 2, nak_once_broken),
            ("flaky", 5, nak_later_once_broken),
        ):
            traffic.publish(subject(part), per_second)
            traffic.pull(stream(part), "worker", batch=5, handle=handle)
        traffic.pull(stream("capped"), "worker", batch=1, pause=0.2)  # ~5 msg/s

        def begin() -> None:
            broken.set()  # stuck holds what it has; failing and flaky nak all they get
            traffic.publish(subject("capped"), 20)  # four times what its worker takes

        scene.play(begin, tick=traffic.check)

        open_now = {
            (i.cause, i.key): i
            for i in Incident.objects.filter(
                broker=nats_broker, state="open", key__contains=f"/{name}_"
            )
        }
        assert not [k for k in open_now if k[1] in noise], sorted(open_now)
        capped = open_now[("backlog_growing", f"stream/{stream('capped')}")]
        assert "full in" in capped.summary and "(max_msgs 3,000 messages)" in capped.summary
        assert capped.severity == "critical"  # full within minutes
        stuck = open_now[("stalled", consumer("stuck"))]
        assert "10 awaiting acknowledgement" in stuck.summary, stuck.summary
        failing = open_now[("dead_letters", consumer("failing"))]
        assert "reached max deliveries (2)" in failing.summary, failing.summary
        flaky = open_now[("redelivery", consumer("flaky"))]
        assert flaky.evidence["num_redelivered"] > flaky.evidence["before"] > 0

        # The On fire section lists them, most urgent first, and none of the noise.
        section = on_fire(client_for("carol").get("/").content.decode())
        for place in scene.trouble:
            assert f'data-incident="{open_now[place].public_id}"' in section, place

        def shown_as(key: str) -> str:  # an incident's place, as the section names it
            return f">{key.partition('/')[2].replace('/', ' › ')}<"

        assert shown_as(capped.key) in section
        for key in noise:
            assert shown_as(key) not in section, key
        by_id = {str(i.public_id): i for i in open_now.values()}
        shown = [by_id[p] for p in re.findall(r'data-incident="([^"]+)"', section) if p in by_id]
        assert len(shown) == len(open_now)
        assert [i.urgency for i in shown] == sorted((i.urgency for i in shown), reverse=True)
        assert shown[0].severity == "critical"
        assert capped.urgency > max(stuck.urgency, failing.urgency, flaky.urgency)
    finally:
        traffic.close()
