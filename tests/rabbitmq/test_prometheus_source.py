"""RabbitMQ counts from the Prometheus plugin against the management API, on the real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import requests
from django.urls import reverse

from brokers.base import BrokerError, Destination, Snapshot
from brokers.rabbitmq import monitor, prometheus
from brokers.rabbitmq.adapter import RabbitMQ
from brokers.rabbitmq.management import quote_path
from brokers.rabbitmq.monitor import LOOKUPS
from tests.nats_fixtures import free_port
from tests.rabbit_fixtures import management

DEADLINE = 25.0  # both sources refresh every 5 s; the statistics database lags a little more
HOSTILE = ('say "hi"', "a/b", "100%", "#1", "two words", "ünï ☃", "back\\slash", 'x",queue="y')


def adapter_for(rabbitmq: dict[str, str], **options: str) -> RabbitMQ:
    return RabbitMQ(
        rabbitmq["management_url"],
        rabbitmq["amqp_url"],
        rabbitmq["username"],
        rabbitmq["password"],
        timeout=15.0,  # the shared broker can be slow under other tests' load
        **options,
    )


@pytest.fixture
def adapters(rabbitmq: dict[str, str]) -> Iterator[Callable[..., RabbitMQ]]:
    made: list[RabbitMQ] = []

    def make(**options: str) -> RabbitMQ:
        made.append(adapter_for(rabbitmq, **{"metrics_source": "auto", **options}))
        return made[-1]

    yield make
    for a in made:
        a.close()


def seen(destination: Destination) -> tuple[Any, ...]:
    """What both paths must agree on."""
    return (
        destination.kind,
        destination.type,
        destination.backlog,
        destination.in_flight,
        destination.consumers,
        destination.arguments,
        destination.effective_policy,
        destination.extra["limits"],
    )


def ours(snapshot: Snapshot, prefix: str) -> dict[str, tuple[Any, ...]]:
    return {d.key: seen(d) for d in snapshot.destinations if prefix in d.key}


def until(check: Callable[[], bool], what: str, show: Callable[[], Any] = lambda: "") -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {DEADLINE} s {show()}")
        time.sleep(0.5)


@pytest.fixture
def hostile(rabbitmq: dict[str, str], unique_name: str, odd_vhost: str) -> Iterator[dict[str, Any]]:
    """Queues with hostile names in "/" and in an odd vhost: ready, unacked, consumers, limits."""
    params = pika.URLParameters(rabbitmq["amqp_url"])
    connections, queues = [], []
    for vhost in ("/", odd_vhost):
        params.virtual_host = vhost
        connection = pika.BlockingConnection(params)
        connections.append(connection)
        channel = connection.channel()
        for i, odd in enumerate(HOSTILE):
            name = f"{unique_name} {odd}"
            arguments: dict[str, Any] = {"x-max-length": 100 + i} if i % 2 else {}
            if i == 3:
                arguments["x-queue-type"] = "quorum"
            channel.queue_declare(name, durable=i == 3, arguments=arguments or None)
            queues.append((vhost, name))
            for n in range(i + 1):
                channel.basic_publish("", name, f"m{n}".encode())
        # One unacknowledged message and one consumer on the first queue of each vhost.
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=1)
        consumer.basic_consume(f"{unique_name} {HOSTILE[0]}", lambda *a: None)
    policy = f"sluice-{unique_name}"
    management(
        rabbitmq,
        "PUT",
        quote_path("api", "policies", "/", policy),
        json={
            "pattern": f"^{unique_name} two",
            "definition": {"max-length": 7, "dead-letter-exchange": "dlx"},
            "apply-to": "queues",
        },
    )

    def settled() -> bool:
        """The management API shows every message, the consumer and the policy."""
        for vhost, name in queues:
            q = management(rabbitmq, "GET", quote_path("api", "queues", vhost, name)).json()
            i = HOSTILE.index(name[len(unique_name) + 1 :])
            if q.get("messages") != i + 1 or q.get("consumers", 0) != (1 if i == 0 else 0):
                return False
            if vhost == "/" and i == 4 and not q.get("effective_policy_definition"):
                return False
        return True

    until(settled, "the hostile queues as declared")
    yield {"prefix": unique_name, "queues": queues, "vhost": odd_vhost}
    management(rabbitmq, "DELETE", quote_path("api", "policies", "/", policy))
    for connection in connections:
        connection.close()
    params.virtual_host = "/"
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        for vhost, name in queues:
            if vhost == "/":
                channel.queue_delete(name)


# -- both paths ---------------------------------------------------------------------


def test_both_paths_give_the_same_queues_with_the_same_counts_type_and_limits(adapters, hostile):
    fast, slow = adapters(), adapters(metrics_source="management")
    prefix = hostile["prefix"]
    got: dict[str, Any] = {}

    def agree() -> bool:
        fast.collect(topology=True)  # the slow cycle, which reads policies
        got["fast"] = ours(fast.collect(), prefix)
        got["slow"] = ours(slow.collect(), prefix)
        return got["fast"] == got["slow"] and len(got["fast"]) == len(hostile["queues"])

    def differ() -> dict[str, Any]:
        fast, slow = got["fast"], got["slow"]
        return {k: (fast.get(k), slow.get(k)) for k in {*fast, *slow} if fast.get(k) != slow.get(k)}

    until(agree, "the same queues and counts from both paths", differ)
    assert len(got["fast"]) == 2 * len(HOSTILE)
    # The queue with the consumer: one ready, one unacked, one consumer.
    first = got["fast"][f"//{prefix} {HOSTILE[0]}"]
    assert first[2:5] == (0, 1, 1)
    words = got["fast"][f"//{prefix} two words"]
    assert words[6] == {"max-length": 7, "dead-letter-exchange": "dlx"}
    assert words[7]["max-length"] == {"value": 7, "source": "policy"}
    assert got["fast"][f"//{prefix} #1"][1] == "quorum"
    assert got["fast"][f"//{prefix} #1"][3] == 0 and got["fast"][f"//{prefix} #1"][2] == 4
    vhost = hostile["vhost"]
    assert f"{vhost}/{prefix} {HOSTILE[-1]}" in got["fast"]


def test_the_prometheus_path_reads_the_counts_in_one_request_beside_overview_and_nodes(
    adapters, hostile
):
    fast = adapters()
    assert fast.collect(topology=True).requests > 3  # settings and topology on the slow cycle
    fast.collect()  # asks about the queues of earlier tests the plugin still shows
    assert fast.prometheus is not None
    asked = fast.api.requests_made, fast.prometheus.requests_made
    snapshot = fast.collect()
    # One GET of the plugin; overview and nodes; one GET per queue new to the settings
    # (other tests on the shared broker make some), never the paged listing.
    assert fast.prometheus.requests_made - asked[1] == 1
    assert 2 <= fast.api.requests_made - asked[0] <= 2 + LOOKUPS
    assert snapshot.health.facts["counts_from"].startswith("Prometheus plugin (detailed endpoint)")


def test_a_queue_created_after_the_slow_cycle_appears_with_its_type_and_arguments(
    adapters, declare, unique_name
):
    fast = adapters()
    fast.collect(topology=True)
    topo = declare()
    name = topo.queue(f'{unique_name} late "one"', **{"x-queue-type": "quorum", "x-max-length": 9})
    topo.fill(name, 2)

    def listed() -> Destination | None:
        return next((d for d in fast.collect().destinations if d.key == f"//{name}"), None)

    until(lambda: (d := listed()) is not None and d.backlog == 2, "the new queue and its count")
    late = listed()
    assert late is not None
    assert (late.type, late.arguments["x-max-length"]) == ("quorum", 9)
    assert late.extra["limits"]["max-length"] == {"value": 9, "source": "argument"}


def test_a_queue_new_to_a_running_adapter_has_the_brokers_rates_at_first_sight(
    adapters, rabbitmq, unique_name
):
    """Its counters have no earlier reading: the rates come from the look-up of its settings,
    so that a storm on it opens as soon as on a queue the adapter knew (triage needs two
    collections in a row)."""
    fast = adapters()
    fast.collect(topology=True)
    name = f"{unique_name} storm"
    stop = threading.Event()
    ready = threading.Event()

    def reject_forever() -> None:
        with pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"])) as conn:
            ch = conn.channel()
            ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
            for n in range(20):
                ch.basic_publish("", name, f"m{n}".encode())
            ch.basic_qos(prefetch_count=10)
            ch.basic_consume(name, lambda c, m, p, b: c.basic_nack(m.delivery_tag, requeue=True))
            ready.set()
            while not stop.is_set():
                conn.process_data_events(time_limit=0.2)
            ch.queue_delete(name)

    worker = threading.Thread(target=reject_forever, daemon=True)
    worker.start()
    try:
        assert ready.wait(15)

        def storming() -> bool:
            q = management(rabbitmq, "GET", quote_path("api", "queues", "/", name)).json()
            stats = q.get("message_stats") or {}
            return (stats.get("redeliver_details") or {}).get("rate", 0) >= 2

        until(storming, "the broker's own redeliver rate")
        # The first collection that lists it is the one that must have its rates.
        deadline = time.monotonic() + DEADLINE
        dest = None
        while dest is None and time.monotonic() < deadline:
            dest = next((d for d in fast.collect().destinations if d.name == name), None)
            if dest is None:
                time.sleep(0.5)
        assert dest is not None, "the queue never appeared on the Prometheus path"
        assert (dest.extra.get("redeliver_rate") or 0) >= 1, dest.extra
    finally:
        stop.set()
        worker.join(15)


def test_a_deleted_queue_leaves_the_prometheus_listing(adapters, declare, unique_name):
    fast = adapters()
    topo = declare()
    name = topo.queue(f"{unique_name}-gone")
    fast.collect(topology=True)
    until(lambda: any(d.name == name for d in fast.collect().destinations), "the queue listed")
    topo.channel.queue_delete(name)
    until(lambda: all(d.name != name for d in fast.collect().destinations), "the queue gone")


# -- counters -----------------------------------------------------------------------


def test_counters_move_with_traffic_and_give_none_when_a_channel_that_counted_closes(
    adapters, rabbitmq, declare, unique_name
):
    fast = adapters()
    name = declare().queue(unique_name)
    publisher = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = publisher.channel()
    channel.confirm_delivery()
    for _ in range(5):
        channel.basic_publish("", name, b"x")

    def mine() -> Destination:
        found = next(d for d in fast.collect().destinations if d.name == name)
        return found

    first = mine()
    # The first reading of a source gives none: the totals before were another source's.
    assert first.in_total is None and first.removed_total is None
    until(lambda: mine().in_total == 5, "5 publishes counted")
    for _ in range(3):
        channel.basic_get(name, auto_ack=True)
    until(lambda: (d := mine()).out_total == 3 and d.removed_total == 3, "3 gets counted")
    publisher.close()
    # Its counters gone with the channel, the sum would fall: no total for that reading.
    until(lambda: mine().in_total is None, "the closed channel noticed")
    # The node drops a closed channel's rows per queue and per exchange, not always in the
    # same sweep: totals come back once no row of it is left, and never exceed what was.
    seen: list[Destination] = []

    def settled() -> bool:
        seen.append(mine())
        return seen[-1].in_total == 0 and seen[-1].out_total == 0

    until(settled, "totals again, from no live channel")
    assert all((d.in_total or 0) <= 5 and (d.out_total or 0) <= 3 for d in seen), seen


def test_rates_from_the_plugins_counters_match_a_known_rate(
    adapters, rabbitmq, declare, unique_name
):
    """20 msg/s published and consumed, read every 5 s as the collector does: once the
    window is full, the in, out, ack and arrival rates read 20 within an eighth (the
    window's bound is a twelfth, and the readings here take time of their own)."""
    fast = adapters()
    name = declare().queue(unique_name)
    per_second, stop = 20, threading.Event()

    def produce() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
        ch, start, sent = conn.channel(), time.monotonic(), 0
        ch.confirm_delivery()
        while not stop.is_set():
            while sent < int((time.monotonic() - start) * per_second):
                ch.basic_publish("", name, b"x")
                sent += 1
            time.sleep(0.01)
        conn.close()

    def consume() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
        ch = conn.channel()
        ch.basic_consume(name, lambda c, method, p, b: c.basic_ack(method.delivery_tag))
        while not stop.is_set():
            conn.process_data_events(time_limit=0.2)
        conn.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (produce, consume)]
    for thread in threads:
        thread.start()
    seen: list[tuple[Any, ...]] = []
    try:
        began = time.monotonic()
        while time.monotonic() - began < prometheus.WINDOW_SECONDS + 20:
            dest = next(d for d in fast.collect().destinations if d.name == name)
            if time.monotonic() - began > prometheus.WINDOW_SECONDS + 5:
                rates = (dest.in_rate, dest.out_rate, dest.extra["ack_rate"], dest.arrival_rate)
                seen.append(rates)
            time.sleep(5.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(seen) >= 3
    for rates in seen:
        assert all(r is not None and abs(r - per_second) <= per_second / 8 for r in rates), seen


# -- the source shown, and falling back ----------------------------------------------


def test_an_unreachable_plugin_falls_back_to_the_management_api_and_says_so(adapters, hostile):
    port = free_port()
    auto = adapters(prometheus_url=f"http://127.0.0.1:{port}")
    slow = adapters(metrics_source="management")
    prefix = hostile["prefix"]
    snapshot = auto.collect()
    said = snapshot.health.facts["counts_from"]
    assert said.startswith(
        f"management API: cannot reach the Prometheus plugin at 127.0.0.1:{port}"
    )
    assert "tried again after" in said
    until(
        lambda: ours(auto.collect(), prefix) == ours(slow.collect(), prefix),
        "the fallback giving the management path's queues",
    )
    # Not asked again on every cycle while it keeps failing.
    assert auto.prometheus is not None
    asked = auto.prometheus.requests_made
    auto.collect()
    assert auto.prometheus.requests_made == asked


def test_metrics_source_prometheus_makes_an_unreachable_plugin_an_error(adapters):
    strict = adapters(metrics_source="prometheus", prometheus_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerError, match="cannot reach the Prometheus plugin"):
        strict.collect()


def test_a_bad_metrics_source_is_refused(rabbitmq):
    with pytest.raises(BrokerError, match="metrics_source must be one of auto, prometheus"):
        adapter_for(rabbitmq, metrics_source="fastest")


def test_credentials_in_prometheus_url_are_not_shown(rabbitmq):
    a = adapter_for(rabbitmq, metrics_source="auto", prometheus_url="http://ops:s3cret@127.0.0.1:1")
    try:
        said = a.collect().health.facts["counts_from"]
    finally:
        a.close()
    assert "s3cret" not in said and "127.0.0.1:1" in said


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "shown"),
    [
        (
            {},
            "Prometheus plugin (detailed endpoint), rates averaged over the last 60 s of its"
            " counters; queue type, arguments, policies",
        ),
        ({"metrics_source": "management"}, "management API (metrics_source = management)"),
        (
            {"metrics_source": "auto", "prometheus_url": "unreachable"},
            "management API: cannot reach the Prometheus plugin",
        ),
    ],
)
def test_the_broker_page_says_where_the_counts_come_from(rabbit_broker, client_for, options, shown):
    from dashboard.collection import collector

    if options.get("prometheus_url") == "unreachable":
        options = {**options, "prometheus_url": f"http://127.0.0.1:{free_port()}"}
    rabbit_broker.options = {**rabbit_broker.options, **options}
    rabbit_broker.save()
    try:
        assert collector.collect(rabbit_broker)
    finally:
        collector.forget_adapter(rabbit_broker)
    page = client_for("carol").get(reverse("dashboard:broker-detail", args=[rabbit_broker.name]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Counts from" in text and shown in text


# -- the parser ---------------------------------------------------------------------


def test_the_parser_reads_the_real_endpoint_with_hostile_names(rabbitmq, hostile):
    url = prometheus.default_url(rabbitmq["management_url"])
    prefix = hostile["prefix"]

    def parsed() -> dict[tuple[str, str], prometheus.QueueSample]:
        text = requests.get(
            url + "/metrics/detailed",
            params=[("family", f) for f in prometheus.FAMILIES],
            timeout=10,
        ).content.decode()
        return {k: v for k, v in prometheus.parse(text).items() if prefix in k[1]}

    until(lambda: len(parsed()) == 2 * len(HOSTILE), "every hostile queue in the endpoint")
    found = parsed()
    for vhost in ("/", hostile["vhost"]):
        for i, odd in enumerate(HOSTILE):
            sample = found[(vhost, f"{prefix} {odd}")]
            assert (sample.messages, sample.memory is not None) == (i + 1, True), odd
        first = found[(vhost, f"{prefix} {HOSTILE[0]}")]
        assert (first.ready, first.unacked, first.consumers) == (0, 1, 1)
        # The consumer's channel counted its delivery.
        assert sum(c.get("deliver", 0) for c in first.channels.values()) == 1


def test_the_parser_handles_escaped_values_raw_newlines_nan_and_junk():
    text = "\n".join(
        [
            "# TYPE rabbitmq_detailed_queue_messages_ready gauge",
            'rabbitmq_detailed_queue_messages_ready{vhost="/",queue="a\\"b\\\\c"} 4',
            'rabbitmq_detailed_queue_messages_ready{vhost="v} 1",queue="two\nlines"} 2',
            'rabbitmq_detailed_queue_messages_ready{vhost="/",queue="nan"} NaN',
            'rabbitmq_detailed_queue_messages_ready{queue="wrong order",vhost="/"} 9',
            "rabbitmq_detailed_queue_messages_ready 3",
            'rabbitmq_detailed_queue_consumers{vhost="/",queue="q"} 2 1700000000000',
            'rabbitmq_detailed_queue_messages_published_total{channel="<0.1.0>",queue_vhost="/",'
            'queue="q",exchange_vhost="/",exchange="x"} 3',
            'rabbitmq_detailed_queue_messages_published_total{channel="<0.1.0>",queue_vhost="/",'
            'queue="q",exchange_vhost="/",exchange=""} 4',
            "",
        ]
    )
    found = prometheus.parse(text)
    escaped = found[("/", 'a\\"b\\\\c')]
    assert escaped.ready == 4 and prometheus.unescape(escaped.name) == 'a"b\\c'
    assert found[("v} 1", "two\nlines")].ready == 2
    assert ("/", "nan") not in found
    assert ("/", "wrong order") not in found
    assert found[("/", "q")].consumers == 2
    assert found[("/", "q")].channels == {"<0.1.0>": {"publish": 7}}
    assert prometheus.unescape("no\\escape\\q") == "no\\escape\\q"


def test_channel_totals_give_none_across_a_closed_channel():
    totals = prometheus.ChannelTotals()
    key = ("/", "q")

    def reading(**channels: dict[str, int]) -> prometheus.Totals | None:
        return totals.read(key, prometheus.QueueSample("/", "q", channels=dict(channels)), False)

    assert reading(a={"publish": 2}) == prometheus.Totals(2, 0, 0)
    assert reading(a={"publish": 5, "get_no_ack": 1}, b={"deliver": 2, "ack": 2}) == (
        prometheus.Totals(5, 3, 3)
    )
    assert reading(b={"deliver": 9, "ack": 9}) is None  # channel a went: no exact total
    assert reading(b={"deliver": 10, "ack": 10}) == prometheus.Totals(0, 10, 10)
    assert totals.read(key, prometheus.QueueSample("/", "q"), True) is None  # another source before


def test_channel_totals_never_rise_by_more_than_happened():
    """A closed channel's rows go at the node's metrics sweep, its per-queue and
    per-exchange ones not always in the same answer: a total then is None, not a sum
    that the next reading's rows would seem to raise."""
    totals = prometheus.ChannelTotals()
    key = ("/", "dlq")

    def reading(at: float, **channels: dict[str, int]) -> prometheus.Totals | None:
        sample = prometheus.QueueSample("/", "dlq", ready=0, messages=0, channels=channels)
        return totals.read(key, sample, False, now=at)

    assert reading(0, a={"publish": 4, "ack": 3}, b={"ack": 1}) == prometheus.Totals(4, 0, 4)
    # Channel a's publish row swept before its per-queue one: no total for that reading.
    assert reading(5, a={"ack": 3}, b={"ack": 1}) is None
    # A counter that went down without its channel going: its row was made anew.
    assert reading(10, a={"ack": 3}, b={"ack": 2}) == prometheus.Totals(0, 0, 5)
    assert reading(15, a={"ack": 1}, b={"ack": 2}) is None
    got = reading(20, a={"ack": 2}, b={"ack": 3}, c={"publish": 1})
    assert got == prometheus.Totals(1, 0, 5)
    # Rates since the window started again at the gap (15 s); the new channel's counts are new.
    assert got.rates == {
        "publish": 0.2,
        "deliver_get": 0.0,
        "ack": 0.4,
        "redeliver": 0.0,
        "arrivals": 0.4,
    }


def test_counters_unchanged_within_the_nodes_refresh_keep_their_rates():
    """The node refreshes its counters every 5 s: a reading sooner that sees no change
    keeps the last rates rather than showing traffic stopped; a longer one shows 0, and
    traffic starting again is not averaged with the standstill."""
    totals = prometheus.ChannelTotals()
    key = ("/", "busy")

    def rates(at: float, delivered: int) -> dict[str, float]:
        channels = {"a": {"deliver": delivered, "redeliver": delivered}}
        sample = prometheus.QueueSample("/", "busy", ready=0, messages=0, channels=channels)
        got = totals.read(key, sample, False, now=at)
        assert got is not None
        return got.rates

    rates(0, 0)
    assert rates(5, 50)["redeliver"] == 10.0
    assert rates(6, 50)["redeliver"] == 10.0  # not refreshed yet
    assert rates(11, 100)["redeliver"] == 100 / 11
    assert rates(17, 100)["redeliver"] == 0.0  # stood still for longer than a refresh
    assert rates(20, 100)["redeliver"] == 0.0
    assert rates(25, 130)["redeliver"] == 30 / 8  # since the standstill was seen


def test_rates_are_averaged_over_the_window_not_the_last_interval():
    """10 msg/s, refreshed every 5 s by the node, read every 5 s a little out of step:
    one interval can hold two refreshes (20 msg/s) or none (0), the window does not."""
    totals = prometheus.ChannelTotals()
    key = ("/", "steady")
    shown = []
    refreshed = 0
    for step in range(60):
        at = 5.0 * step
        # The channel's refreshes land at 4.9 s, 9.9 s...; the reading at 5.0 s sees the
        # one at 4.9 s, but the one the node made late (at 15.1 s) is seen at 20 s.
        while (refreshed + 1) * 5.0 - 0.1 + (0.2 if refreshed + 1 == 3 else 0.0) <= at:
            refreshed += 1
        counted = 50 * refreshed
        channels = {"a": {"deliver": counted, "ack": counted}}
        sample = prometheus.QueueSample("/", "steady", ready=3, messages=3, channels=channels)
        got = totals.read(key, sample, step == 0, now=at)
        if got is not None and got.rates and at >= prometheus.WINDOW_SECONDS:
            shown.append(got.rates["deliver_get"])
    bound = 10.0 * 5.0 / prometheus.WINDOW_SECONDS  # one refresh's count in the window
    assert shown and all(abs(rate - 10.0) <= bound for rate in shown), shown


def test_a_queue_shown_only_through_channel_counters_is_left_out():
    """Deleted, or too new to have its own counts: read as empty, it would seem to fill."""
    text = "\n".join(
        [
            'rabbitmq_detailed_queue_messages_ready{vhost="/",queue="dlq"} 1',
            'rabbitmq_detailed_queue_messages{vhost="/",queue="dlq"} 1',
            'rabbitmq_detailed_channel_messages_acked_total{channel="<0.1.0>",vhost="/",queue="new"} 2',
            "",
        ]
    )
    settings = monitor.Settings()
    settings.fill([{"vhost": "/", "name": "dlq"}, {"vhost": "/", "name": "new"}], {})
    # Every queue is known to the settings: the management API is not asked.
    found = monitor._resolve(None, settings, prometheus.parse(text), None)  # type: ignore[arg-type]
    assert list(found) == [("/", "dlq")]
