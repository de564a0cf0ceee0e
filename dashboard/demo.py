"""Demo traffic for the brokers in a Sluice config, so a fresh `make run` has something to show.

Reads `[[broker]]` tables from the TOML file named by `$SLUICE_CONFIG` (or
`--config`), expanding `${VAR}` from the environment, and for each broker kind
keeps modest, healthy traffic going until SIGTERM:

- rabbitmq (pika): topic exchange `events`; `orders` and `shipments`
  (`x-max-length` 1500), both kept up with, `invoices` (a worker a little faster
  than they arrive), `emails` (no consumer, `x-max-length` 5000, kept full, the
  oldest dropped), `payments` dead-lettering to fanout `dlx` -> `payments.dlq`
  (a payment that fails is retried once, carrying `x-exception`, then
  rejected), and the quorum queue `audit.q`.
- kafka (kafka-python): `orders.events` (3 partitions), `payments.events` and
  `payments.events.DLT`; group `billing` keeps up, group `analytics` stays
  about ANALYTICS_LAG records behind.
- nats (nats-py): JetStream `ORDERS` (limits) read by durable `shipper`, `JOBS`
  (work queue) where durable `jobs-worker` leaves about JOBS_WAITING waiting,
  `PAYMENTS` read by durable `charger`, and a core-NATS responder on `demo.echo`.

On top of it, every `--incidents-every` seconds (120 by default, or
`$SLUICE_DEMO_INCIDENTS_EVERY`; 0: never) one incident episode plays, in turn,
and heals (dashboard/demo_episodes.py): a lost consumer, a stalled group,
payments reaching max deliveries, poison payments dead-lettered, a slow worker,
poison records.

A broker that is down is logged and retried every few seconds; nothing here
is meant to stop before it is told to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from typing import Any

from dashboard import demo_episodes
from dashboard.demo_episodes import Trouble

log = logging.getLogger("sluice.demo")
RETRY_SECONDS = 5
Broker = dict[str, Any]
# What share of payments fail while a poison episode plays (none otherwise).
POISON_SHARE = 0.5


class Pace:
    """How many events are due since the last call, at `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._last = time.monotonic()
        self._owed = 0.0

    def due(self) -> int:
        now = time.monotonic()
        self._owed = min(self._owed + (now - self._last) * self.rate, self.rate * 2 + 1)
        self._last = now
        count = int(self._owed)
        self._owed -= count
        return count


def _payload(n: int, failing: bool = False) -> bytes:
    amount = -round(random.uniform(1, 50), 2) if failing else round(random.uniform(5, 500), 2)
    customer = f"c{random.randint(1, 40):03d}"
    return json.dumps({"id": n, "customer": customer, "amount": amount, "at": time.time()}).encode()


# --- RabbitMQ ----------------------------------------------------------------

RABBIT_QUEUES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "orders": ({}, ["orders.#"]),
    "shipments": ({"x-max-length": 1500}, ["orders.#"]),
    "invoices": ({}, ["invoices.#"]),
    "emails": ({"x-max-length": 5000}, ["emails.#"]),
    "payments": ({"x-dead-letter-exchange": "dlx"}, ["payments.#"]),
    "audit.q": ({"x-queue-type": "quorum"}, ["orders.#", "payments.#"]),
}
# Invoices arrive at 20/s; their worker takes 30/s, or 12/s while it is slow.
INVOICE_WORKER, SLOW_INVOICE_WORKER = 30, 12


def run_rabbitmq(
    broker: Broker, stop: threading.Event, stats: Counter[str], trouble: Trouble
) -> None:
    import pika

    params = pika.URLParameters(broker["amqp_url"])
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.exchange_declare("events", "topic", durable=True)
        ch.exchange_declare("dlx", "fanout", durable=True)
        ch.queue_declare("payments.dlq", durable=True)
        ch.queue_bind("payments.dlq", "dlx")
        held: dict[str, int] = {}
        for queue, (arguments, keys) in RABBIT_QUEUES.items():
            held[queue] = ch.queue_declare(
                queue, durable=True, arguments=arguments
            ).method.message_count
            for key in keys:
                ch.queue_bind(queue, "events", key)
        # Nobody reads emails: it starts full, and each new one pushes out the oldest.
        # (Filling it at 2/s would be a backlog growing for 40 minutes.)
        for i in range(RABBIT_QUEUES["emails"][0]["x-max-length"] - held["emails"]):
            ch.basic_publish("", "emails", _payload(i), pika.BasicProperties(delivery_mode=2))

        def ack(ch: Any, method: Any, props: Any, body: bytes) -> None:
            ch.basic_ack(method.delivery_tag)
            stats["consumed"] += 1

        def pay(ch: Any, method: Any, props: Any, body: bytes) -> None:
            headers = dict(props.headers or {})
            try:
                amount = json.loads(body)["amount"]
                if amount <= 0:
                    raise ValueError(f"amount must be positive, got {amount}")
            except ValueError as exc:
                if headers.get("x-retries"):
                    # Second failure: the broker dead-letters it to dlx -> payments.dlq.
                    ch.basic_reject(method.delivery_tag, requeue=False)
                    stats["dead-lettered"] += 1
                    return
                # First failure: retry once, noting why, as retrying consumers do.
                headers.update({"x-exception": f"ValueError: {exc}", "x-retries": 1})
                retry = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=props.message_id,
                    timestamp=props.timestamp,
                    headers=headers,
                )
                ch.basic_publish("", "payments", body, retry)
            ch.basic_ack(method.delivery_tag)
            stats["consumed"] += 1

        ch.basic_qos(prefetch_count=50)
        ch.basic_consume("orders", ack)
        ch.basic_consume("audit.q", ack)
        ch.basic_consume("payments", pay)
        shipper: str | None = ch.basic_consume("shipments", ack)
        publish = {
            "orders.created": Pace(10),
            "payments.charge": Pace(5),
            "invoices.issued": Pace(20),
            "emails.send": Pace(2),
        }
        invoice_worker = Pace(INVOICE_WORKER)
        n = 0
        while not stop.is_set():
            # The episodes: the shipments consumer goes away (pika nacks what it had
            # not handled yet), the invoice worker slows, payments are poisoned.
            if "consumer lost" in trouble and shipper is not None:
                ch.basic_cancel(shipper)
                shipper = None
            elif "consumer lost" not in trouble and shipper is None:
                shipper = ch.basic_consume("shipments", ack)
            slow = "slow worker" in trouble
            invoice_worker.rate = SLOW_INVOICE_WORKER if slow else INVOICE_WORKER
            poison = POISON_SHARE if "poison payments" in trouble else 0.0
            for key, pace in publish.items():
                for _ in range(pace.due()):
                    n += 1
                    failing = key.startswith("payments") and random.random() < poison
                    props = pika.BasicProperties(
                        content_type="application/json",
                        delivery_mode=2,
                        message_id=f"demo-{n}",
                        timestamp=int(time.time()),
                        headers={"source": "sluice-demo"},
                    )
                    ch.basic_publish("events", key, _payload(n, failing), props)
                    stats["published"] += 1
            for _ in range(invoice_worker.due()):
                method, _props, _body = ch.basic_get("invoices")
                if method is None:
                    break
                ch.basic_ack(method.delivery_tag)
                stats["consumed"] += 1
            conn.process_data_events(time_limit=0.1)
    finally:
        if conn.is_open:
            conn.close()


# --- Kafka -------------------------------------------------------------------

KAFKA_TOPICS = {"orders.events": 3, "payments.events": 2, "payments.events.DLT": 1}
ANALYTICS_LAG = 300  # records group analytics leaves unread (about 20 s of orders)


def run_kafka(broker: Broker, stop: threading.Event, stats: Counter[str], trouble: Trouble) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    servers = broker["bootstrap_servers"]
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10000)
    try:
        missing = {t: n for t, n in KAFKA_TOPICS.items() if t not in admin.list_topics()}
        if missing:
            spec = {t: {"num_partitions": n, "replication_factor": 1} for t, n in missing.items()}
            admin.create_topics(spec, wait_for_metadata=True)
    finally:
        admin.close()

    group = {
        "bootstrap_servers": servers,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20, max_block_ms=10000)
    if "orders.events" in missing:
        # A new topic starts with the orders analytics has yet to read: falling that far
        # behind record by record would look, for a minute, like a backlog growing.
        for i in range(ANALYTICS_LAG):
            producer.send("orders.events", _payload(i), key=f"order-{i % 50}".encode())
    # Both groups commit what each poll read. (Committing every 5 s, as auto-commit does,
    # makes a lag that, collected every 5 s too, can look as if it grew for a minute.)
    billing = KafkaConsumer(
        "orders.events", "payments.events", group_id="billing", enable_auto_commit=False, **group
    )
    # Analytics polls in a thread of its own: two consumers taking turns in one loop can
    # keep missing the moment their group's join completes (seen with Tansu).
    done = threading.Event()
    failed: list[Exception] = []
    reader = threading.Thread(
        target=_analytics, args=(group, done, stats, failed), name="analytics", daemon=True
    )
    reader.start()
    try:
        orders, payments = Pace(15), Pace(5)
        n = 0
        while not stop.is_set():
            if failed:
                raise failed[0]
            poison = POISON_SHARE if "poison records" in trouble else 0.0
            for _ in range(orders.due()):
                n += 1
                producer.send("orders.events", _payload(n), key=f"order-{n % 50}".encode())
                stats["published"] += 1
            for _ in range(payments.due()):
                n += 1
                failing = random.random() < poison
                producer.send("payments.events", _payload(n, failing), key=str(n).encode())
                if failing:
                    reason = b"ValueError: amount must be positive"
                    headers = [("x-exception", reason), ("x-original-topic", b"payments.events")]
                    producer.send("payments.events.DLT", _payload(n, True), headers=headers)
                    stats["dead-lettered"] += 1
                stats["published"] += 1
            # Stalled, billing keeps polling (so it stays joined) with its partitions paused:
            # it reads nothing, and its committed offsets stop moving while records arrive.
            if "stalled group" in trouble:
                billing.pause(*billing.assignment())
            elif billing.paused():
                billing.resume(*billing.paused())
            batches = billing.poll(timeout_ms=100, max_records=500)
            if batches:
                billing.commit()
                stats["consumed"] += sum(len(records) for records in batches.values())
    finally:
        done.set()
        reader.join(timeout=10)
        producer.close(timeout=5)
        billing.close()


def _analytics(
    group: dict[str, Any], done: threading.Event, stats: Counter[str], failed: list[Exception]
) -> None:
    """Group analytics, until `done`: it reads what lies more than ANALYTICS_LAG records
    behind the end of orders.events. What stops it is left in `failed` for the runner."""
    from kafka import KafkaConsumer

    try:
        consumer = KafkaConsumer(
            "orders.events", group_id="analytics", enable_auto_commit=False, **group
        )
    except Exception as exc:  # noqa: BLE001 - the runner reconnects, whatever it is
        failed.append(exc)
        return
    try:
        behind, next_look = 0, 0.0
        while not done.is_set():
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 1
                behind = _lag(consumer) - ANALYTICS_LAG
            if behind <= 0 and consumer.assignment():
                done.wait(0.1)
                continue
            # Unassigned, it polls all the same, to join its group.
            batches = consumer.poll(timeout_ms=100, max_records=min(max(behind, 1), 500))
            if batches:
                consumer.commit()
                read = sum(len(records) for records in batches.values())
                behind -= read
                stats["consumed"] += read
    except Exception as exc:  # noqa: BLE001 - the runner reconnects, whatever it is
        failed.append(exc)
    finally:
        consumer.close()


def _lag(consumer: Any) -> int:
    """Records between the consumer's positions and the ends of its partitions (0 unassigned)."""
    parts = list(consumer.assignment())
    if not parts:
        return 0
    ends = consumer.end_offsets(parts, timeout_ms=5000)
    return sum(max(0, ends[tp] - consumer.position(tp, timeout_ms=5000)) for tp in parts)


# --- NATS --------------------------------------------------------------------


JOBS_WAITING = 40  # jobs the worker leaves waiting in JOBS


def run_nats(broker: Broker, stop: threading.Event, stats: Counter[str], trouble: Trouble) -> None:
    asyncio.run(_nats(broker, stop, stats, trouble))


async def _nats(
    broker: Broker, stop: threading.Event, stats: Counter[str], trouble: Trouble
) -> None:
    import nats
    from nats.js.api import ConsumerConfig, RetentionPolicy
    from nats.js.errors import BadRequestError

    async def quiet(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    nc = await nats.connect(broker["url"], connect_timeout=3, allow_reconnect=False, error_cb=quiet)
    try:
        js = nc.jetstream(timeout=5)
        streams: list[dict[str, Any]] = [
            {"name": "ORDERS", "subjects": ["orders.>"], "max_msgs": 100_000},
            {"name": "JOBS", "subjects": ["jobs.>"], "retention": RetentionPolicy.WORK_QUEUE},
            {"name": "PAYMENTS", "subjects": ["payments.>"], "max_msgs": 100_000},
        ]
        for stream in streams:
            try:
                await js.add_stream(**stream)
            except BadRequestError:
                await js.update_stream(**stream)

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("demo.echo", cb=echo)
        shipper = await js.pull_subscribe("orders.>", durable="shipper", stream="ORDERS")
        worker = await js.pull_subscribe("jobs.>", durable="jobs-worker", stream="JOBS")
        # A payment charger: while its episode plays, it refuses every third payment
        # until it reaches max deliveries and terminates every seventh at once. Both
        # become dead-letter advisories, which Sluice's capture stream keeps.
        charger = await js.pull_subscribe(
            "payments.>",
            durable="charger",
            stream="PAYMENTS",
            config=ConsumerConfig(max_deliver=3, ack_wait=2),
        )
        publish = {
            "orders.created": Pace(8),
            "orders.shipped": Pace(4),
            "jobs.resize": Pace(5),
            "payments.charge": Pace(2),
        }
        work, ping = Pace(5), Pace(1)
        waiting, next_look = 0, 0.0  # jobs waiting in JOBS, read once a second
        n = 0
        while not stop.is_set():
            for subject, pace in publish.items():
                for _ in range(pace.due()):
                    n += 1
                    await js.publish(subject, _payload(n))
                    stats["published"] += 1
            try:
                for msg in await shipper.fetch(batch=200, timeout=0.2):
                    await msg.ack()
                    stats["consumed"] += 1
            except TimeoutError:  # nothing to fetch; nats-py raises asyncio's
                pass
            # The worker takes nothing until JOBS_WAITING wait (seconds after a fresh
            # start), then as many as arrive, and the surplus when more wait (after a restart).
            due = work.due() if waiting >= JOBS_WAITING else 0
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 1
                waiting = (await worker.consumer_info()).num_pending or 0
                due += max(0, waiting - JOBS_WAITING)
            if due:
                try:
                    for msg in await worker.fetch(batch=min(due, 200), timeout=0.2):
                        await msg.ack()
                        stats["consumed"] += 1
                except TimeoutError:  # nothing to fetch; nats-py raises asyncio's
                    pass
            refusing = "max deliveries" in trouble
            try:
                for msg in await charger.fetch(batch=50, timeout=0.1):
                    seq = msg.metadata.sequence.stream
                    if refusing and seq % 7 == 0:
                        await msg.term()
                    elif refusing and seq % 3 == 0:
                        await msg.nak()
                    else:
                        await msg.ack()
                        stats["consumed"] += 1
            except TimeoutError:  # nothing to fetch; nats-py raises asyncio's
                pass
            if ping.due():
                await nc.request("demo.echo", b"ping", timeout=2)
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


# --- Running -----------------------------------------------------------------

RUNNERS: dict[str, Callable[[Broker, threading.Event, Counter[str], Trouble], None]] = {
    "rabbitmq": run_rabbitmq,
    "kafka": run_kafka,
    "nats": run_nats,
}


def keep_running(broker: Broker, stop: threading.Event, trouble: Trouble) -> None:
    """Run one broker's traffic until stop is set, reconnecting after any failure."""
    stats: Counter[str] = Counter()
    name, run = broker["name"], RUNNERS[broker["kind"]]
    reporter = threading.Thread(target=_report, args=(name, stats, stop), daemon=True)
    reporter.start()
    while not stop.is_set():
        try:
            log.info("%s: connecting", name)
            run(broker, stop, stats, trouble)
        # Any error (broker down, connection lost, a client's odd exception) means
        # "reconnect later": the demo exists to keep traffic going.
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "%s: %s: %s; retrying in %d s",
                *(name, type(exc).__name__, exc, RETRY_SECONDS),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            stop.wait(RETRY_SECONDS)


def _report(name: str, stats: Counter[str], stop: threading.Event) -> None:
    while not stop.wait(30):
        counts = ", ".join(f"{key} {value}" for key, value in sorted(stats.items()))
        log.info("%s: last 30 s: %s", name, counts or "no traffic")
        stats.clear()


def load_brokers(path: str) -> list[Broker]:
    """Read [[broker]] tables from a Sluice TOML config, with ${VAR} expanded."""

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), value)
        return value

    with open(path, "rb") as f:
        config = tomllib.load(f)
    return [{k: expand(v) for k, v in broker.items()} for broker in config.get("broker", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("SLUICE_CONFIG"))
    parser.add_argument(
        "--incidents-every",
        type=float,
        default=os.environ.get("SLUICE_DEMO_INCIDENTS_EVERY", "120"),
        metavar="SECONDS",
        help="start an incident episode every SECONDS, in turn (default 120, or"
        " $SLUICE_DEMO_INCIDENTS_EVERY; 0: none)",
    )
    args = parser.parse_args(argv)
    if args.incidents_every < 0:
        parser.error("--incidents-every must be 0 or more seconds")
    level = logging.DEBUG if os.environ.get("SLUICE_DEMO_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("kafka", "pika", "nats"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if not args.config:
        parser.error("no config: set SLUICE_CONFIG or pass --config")
    brokers = [b for b in load_brokers(args.config) if b.get("kind") in RUNNERS]
    if not brokers:
        log.error("no rabbitmq, kafka or nats brokers in %s", args.config)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    trouble = Trouble()
    threads = [
        threading.Thread(target=keep_running, args=(b, stop, trouble), name=b["name"], daemon=True)
        for b in brokers
    ]
    threads.append(
        threading.Thread(
            target=demo_episodes.play,
            args=(brokers, args.incidents_every, trouble, stop),
            name="episodes",
            daemon=True,
        )
    )
    for thread in threads:
        thread.start()
    log.info("demo traffic for %s", ", ".join(b["name"] for b in brokers))
    if args.incidents_every and demo_episodes.cast(brokers):
        log.info("demo: an incident episode every %g s", args.incidents_every)
    while not stop.wait(1):
        pass
    log.info("stopping")
    for thread in threads:
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
