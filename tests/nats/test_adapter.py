"""The NATS adapter against a real nats-server with JetStream and monitoring (tests/conftest.py).

`js` and `private_nats` come from tests/nats_fixtures.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats as nats_client
import pytest
from nats.aio.client import __version__ as client_version
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from brokers.base import BrokerError, Destination, Snapshot
from brokers.nats.adapter import Nats
from brokers.nats.monitor import NatsHealth, NatsTopology
from brokers.nats.monitor_server import seconds
from tests.nats_fixtures import JetStream, NatsServer, free_port, start_linked_servers


@pytest.fixture
def adapter(nats: dict[str, str]) -> Iterator[Nats]:
    a = Nats(nats["monitoring_url"], url=nats["url"])
    yield a
    a.close()


def stream_name(unique_name: str) -> str:
    return unique_name.replace("-", "_").upper()  # stream names cannot have dots


def find(snapshot: Snapshot, key: str) -> Destination:
    found = next((d for d in snapshot.destinations if d.key == key), None)
    assert found is not None, f"{key} not in {[d.key for d in snapshot.destinations]}"
    return found


def nats_health(snapshot: Snapshot) -> NatsHealth:
    """The snapshot's health, with the fields only NATS has."""
    assert isinstance(snapshot.health, NatsHealth)
    return snapshot.health


def nats_topology(snapshot: Snapshot) -> NatsTopology:
    """The snapshot's topology, which a topology collection always has."""
    assert isinstance(snapshot.topology, NatsTopology)
    return snapshot.topology


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
    # /varz, /healthz, /jsz, /connz; no topology asked.
    assert snapshot.requests == 4 and snapshot.topology is None


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
    # In: delivered (6) plus pending (4). Out: the ack floor's consumer sequence.
    assert consumer.in_total == 10 and consumer.out_total == 4
    assert consumer.extra["delivered_consumer_seq"] == 6
    assert consumer.extra["ack_floor_consumer_seq"] == 4
    assert consumer.extra["num_ack_pending"] == 2 and consumer.extra["num_pending"] == 4
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


def test_server_without_jetstream_has_health_and_no_destinations(
    private_nats: Callable[..., NatsServer],
) -> None:
    server = private_nats()  # no -js
    adapter = Nats(server.monitoring_url)
    snapshot = adapter.collect(topology=True)
    adapter.close()
    assert snapshot.destinations == ()
    assert snapshot.health.facts["jetstream"] is False
    assert nats_health(snapshot).server["jetstream"]["enabled"] is False
    assert snapshot.health.version
    assert nats_health(snapshot).healthz == {"status": "ok", "error": ""}
    # /varz, /healthz, /connz, then /subsz for the topology: no /jsz.
    assert snapshot.requests == 4


def test_closed_monitoring_port_raises_broker_error() -> None:
    port = free_port()
    with pytest.raises(BrokerError) as caught:
        Nats(f"http://127.0.0.1:{port}", timeout=1.0).collect()
    assert caught.value.message == f"cannot reach http://127.0.0.1:{port}: connection refused"
    assert caught.value.retryable


def test_monitoring_port_down_while_the_client_port_answers_says_so(
    nats: dict[str, str],
) -> None:
    port = free_port()
    adapter = Nats(f"http://127.0.0.1:{port}", url=nats["url"], timeout=1.0)
    with pytest.raises(BrokerError) as caught:
        adapter.collect()
    message = caught.value.message
    assert message.startswith(f"cannot reach http://127.0.0.1:{port}: connection refused")
    assert f"the client port {nats['url']} answers" in message
    assert "-m 8222" in message and caught.value.retryable


def test_client_port_given_as_monitoring_url_is_explained(nats: dict[str, str]) -> None:
    client_port = nats["url"].replace("nats://", "http://")
    with pytest.raises(BrokerError) as caught:
        Nats(client_port).collect()
    assert "NATS client port" in caught.value.message
    assert not caught.value.retryable


def test_errors_never_show_the_password() -> None:
    port = free_port()
    for adapter in (
        Nats(f"http://127.0.0.1:{port}", user="carol", password="hunter2-secret"),
        Nats(f"http://carol:hunter2-secret@127.0.0.1:{port}"),
    ):
        with pytest.raises(BrokerError) as caught:
            adapter.collect()
        assert "hunter2" not in str(caught.value)


# -- the server: /varz, /connz, /healthz, /subsz, /routez, /gatewayz, /leafz ----


def test_varz_figures_and_byte_rates_from_counters(
    adapter: Nats, js: JetStream, unique_name: str
) -> None:
    first = adapter.collect()
    assert nats_health(first).server["in_bytes_rate"] is None  # nothing to compare with yet
    js.publish(f"{unique_name}.core", b"x" * 100, count=20, jetstream=False)
    time.sleep(0.05)
    second = adapter.collect()

    server = nats_health(second).server
    assert server["version"] == second.health.version and server["server_id"]
    assert server["mem"] > 0 and server["cores"] >= 1 and server["cpu"] >= 0
    assert server["uptime_seconds"] is not None and server["uptime_seconds"] >= 0
    assert server["jetstream"]["enabled"] is True and server["jetstream"]["max_storage"] > 0
    assert second.health.in_total is not None and first.health.in_total is not None
    assert second.health.in_total - first.health.in_total >= 20
    assert server["in_bytes"] - nats_health(first).server["in_bytes"] >= 20 * 100
    assert server["in_bytes_rate"] > 0
    assert nats_health(second).healthz == {"status": "ok", "error": ""}
    assert second.health.alarms == []


def test_connz_row_for_a_named_client(adapter: Nats, js: JetStream, unique_name: str) -> None:
    name = f"probe-{unique_name}"
    nc = js.connect(name=name)
    js.run(nc.subscribe(f"{unique_name}.a"))
    js.run(nc.subscribe(f"{unique_name}.b.>"))

    async def publish(count: int) -> None:
        for _ in range(count):
            await nc.publish(f"{unique_name}.elsewhere", b"hello")
        await nc.flush()

    js.run(publish(5))
    first = adapter.collect()
    js.run(publish(10))
    time.sleep(0.05)
    second = adapter.collect()

    connections = nats_health(second).connections
    rows = [r for r in connections["rows"] if r["name"] == name]
    assert len(rows) == 1, connections
    row = rows[0]
    assert row["lang"] == "python3" and row["version"] == client_version
    assert row["subscriptions"] == 2
    assert row["in_msgs"] >= 15  # the publishes, plus the client's own PINGs at most
    assert row["in_rate"] is not None and row["in_rate"] > 0
    assert row["address"].startswith("127.0.0.1:")
    assert row["rtt"] is None or row["rtt"] >= 0
    assert row["idle"] is not None and row["idle"] >= 0
    assert connections["total"] >= 1
    # The first sight of the connection had no rate.
    first_rows = nats_health(first).connections["rows"]
    assert [r["in_rate"] for r in first_rows if r["name"] == name] == [None]


def test_topology_reads_subsz_and_skips_what_is_not_configured(adapter: Nats) -> None:
    snapshot = adapter.collect(topology=True)
    topology = nats_topology(snapshot)
    assert topology.subsz["num_subscriptions"] > 0  # JetStream's own API subscriptions
    assert 0 <= topology.subsz["cache_hit_rate"] <= 1
    assert topology.routes is None and topology.gateways is None and topology.leafs is None
    assert snapshot.requests == 5  # varz, healthz, jsz, connz + subsz only


def test_a_failing_healthz_is_an_alarm_not_an_outage(
    private_nats: Callable[..., NatsServer],
) -> None:
    # A JetStream cluster member whose peers never come: the meta group has no
    # leader, and /healthz says so while /varz and /jsz still answer.
    server = private_nats(
        "--server_name", "lonely", "--cluster_name", "c1",
        "--cluster", f"nats://127.0.0.1:{free_port()}",
        "--routes", f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}",
        jetstream=True,
    )  # fmt: skip
    adapter = Nats(server.monitoring_url, url=server.url)
    snapshot = adapter.collect(topology=True)
    adapter.close()

    healthz = nats_health(snapshot).healthz
    assert healthz["status"] != "ok" and healthz["error"]
    assert f"healthz {healthz['status']}: {healthz['error']}" in snapshot.health.alarms
    # A cluster is configured, with no route connected.
    assert nats_topology(snapshot).routes == []


def test_routes_gateways_and_leaf_nodes_of_real_servers(
    private_nats: Callable[..., NatsServer],
) -> None:
    servers = start_linked_servers(private_nats)
    a, b = servers["a"], servers["b"]
    hub_a, hub_b = Nats(a.monitoring_url), Nats(b.monitoring_url)
    try:
        deadline = time.monotonic() + 20
        while True:
            seen_a, seen_b = hub_a.collect(topology=True), hub_b.collect(topology=True)
            ta, tb = nats_topology(seen_a), nats_topology(seen_b)
            if ta.routes and ta.leafs and tb.gateways and tb.gateways["outbound"]:
                break
            assert time.monotonic() < deadline, (ta, tb)
            time.sleep(0.2)
    finally:
        hub_a.close()
        hub_b.close()

    assert {r["remote"] for r in ta.routes} == {"hub-b"}
    assert all(r["address"].startswith("127.0.0.1:") for r in ta.routes)
    assert [leaf["name"] for leaf in ta.leafs] == ["leaf-l"]
    assert ta.gateways is None  # hub-a has no gateway configured
    assert tb.leafs is None and {r["remote"] for r in tb.routes or []} == {"hub-a"}
    assert tb.gateways["name"] == "east"
    assert [g["cluster"] for g in tb.gateways["outbound"]] == ["west"]
    hub_a_server = nats_health(seen_a).server
    assert hub_a_server["cluster"] == "east" and hub_a_server["leafnodes"] == 1
    # varz, healthz, connz (no JetStream) + subsz and the two configured ones.
    assert seen_a.requests == 6 and seen_b.requests == 6


def test_a_replicated_stream_counts_once_across_a_real_three_server_cluster(
    private_nats: Callable[..., NatsServer],
) -> None:
    ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in ports)
    servers = [
        private_nats(
            "--server_name",
            f"n{i}",
            "--cluster_name",
            "trio",
            "--cluster",
            f"nats://127.0.0.1:{ports[i]}",
            "--routes",
            routes,
            jetstream=True,
        )  # fmt: skip
        for i in range(3)
    ]
    adapters = [Nats(s.monitoring_url) for s in servers]
    try:
        deadline = time.monotonic() + 20
        while not all(nats_health(a.collect()).healthz["status"] == "ok" for a in adapters):
            assert time.monotonic() < deadline, "the cluster did not form"
            time.sleep(0.1)
        js = JetStream(servers[0].url)
        try:
            js.add_stream("TRIPLE", ["triple.>"], num_replicas=3)
            js.publish("triple.x", count=5)
            js.add_consumer("TRIPLE", "reader")
            # Every replica holds the stream; wait until each says so.
            while not all(
                nats_health(a.collect()).server["jetstream"]["replica_streams"] == 1
                for a in adapters
            ):
                assert time.monotonic() < deadline, "replicas did not catch up"
                time.sleep(0.1)
            snapshots = [a.collect() for a in adapters]
        finally:
            js.close()
    finally:
        for a in adapters:
            a.close()

    listed = [[d.key for d in snap.destinations] for snap in snapshots]
    # Only the leader lists the stream and its consumer: counted once in all.
    assert sorted(listed, key=len) == [[], [], ["stream/TRIPLE", "consumer/TRIPLE/reader"]]
    assert [snap.health.facts["streams"] for snap in snapshots].count(1) == 1
    assert sum(snap.health.facts["messages"] for snap in snapshots) == 5
    leader = next(snap for snap in snapshots if snap.destinations)
    stream = leader.destinations[0]
    assert stream.extra["replicas"] == 3 and stream.extra["cluster"] == "trio"
    assert stream.extra["leader"] == nats_health(leader).server["server_name"]
    assert len(stream.extra["replica_state"]) == 2  # the two followers
    assert all(snap.health.facts["cluster"] == "trio" for snap in snapshots)


# -- JetStream details -------------------------------------------------------------


def test_wildcard_and_unusual_subjects_are_kept_as_given(
    adapter: Nats, js: JetStream, unique_name: str
) -> None:
    name = stream_name(unique_name)
    subjects = [
        f"{unique_name}.orders.*.eu",
        f"{unique_name}.a.>",
        f"{unique_name}.tok-en_x.größe.日本",
    ]
    js.add_stream(name, subjects, description="<script>alert(1)</script>")
    js.publish(f"{unique_name}.tok-en_x.größe.日本", count=2)
    js.publish(f"{unique_name}.orders.42.eu")
    js.add_consumer(name, "eu", filter_subjects=[subjects[0], subjects[1]])
    time.sleep(0.2)
    snapshot = adapter.collect()

    stream = find(snapshot, f"stream/{name}")
    assert stream.extra["subjects"] == subjects
    assert stream.extra["description"] == "<script>alert(1)</script>"
    assert stream.extra["num_subjects"] == 2 and stream.extra["messages"] == 3
    assert stream.extra["oldest_age"] >= 0.2
    assert stream.extra["first_ts"] <= stream.extra["last_ts"]
    consumer = find(snapshot, f"consumer/{name}/eu")
    assert consumer.extra["filter_subjects"] == subjects[:2]
    assert consumer.backlog == 1  # only orders.42.eu matches its filters


def test_delivery_and_ack_rates_come_from_sequence_changes(
    adapter: Nats, js: JetStream, unique_name: str
) -> None:
    name = stream_name(unique_name)
    js.add_stream(name, [f"{unique_name}.>"])
    js.publish(f"{unique_name}.job", count=10)
    js.add_consumer(name, "worker", ack_policy=AckPolicy.EXPLICIT)
    adapter.collect()
    assert js.fetch(name, "worker", 4, ack=True) == 4
    time.sleep(0.05)
    consumer = find(adapter.collect(), f"consumer/{name}/worker")

    assert consumer.extra["deliver_rate"] > 0
    assert consumer.out_total == 4 and consumer.backlog == 6 and consumer.in_flight == 0


# -- durations and resources ---------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2.050624ms", 0.002050624),
        ("220µs", 0.00022),
        ("1d2h3m4s", 93784.0),
        ("1m0s", 60.0),
        ("0s", 0.0),
        ("", None),
        ("soon", None),
        ("3s later", None),
    ],
)
def test_go_durations_as_the_server_writes_them(text: str, expected: float | None) -> None:
    assert (
        seconds(text) == pytest.approx(expected) if expected is not None else seconds(text) is None
    )


def test_collecting_leaves_no_threads_or_sockets_behind(nats: dict[str, str]) -> None:
    import os

    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    adapter = Nats(nats["monitoring_url"], url=nats["url"])
    for topology in (True, False, False):
        adapter.collect(topology=topology)
    adapter.close()
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) <= fds
