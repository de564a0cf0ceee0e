"""Benchmark: replaying dead letters with `AmqpTransfer` next to RabbitMQ's own shovel.

In a dedicated vhost (`sluice-bench-replay`), sets up the usual dead-letter
topology: a topic exchange `bench.orders` with ten durable queues
`bench.orders.0`..`bench.orders.9` (keys `orders.0`..`orders.9`), each
dead-lettering to a fanout `bench.dlx` bound to `bench.dlq`. It fills
bench.dlq with `--messages` persistent ~250-byte dead letters (x-death and
all) by publishing to bench.orders under a `message-ttl: 0` policy, then times:

    ours       Sluice's job engine (`dashboard.jobs.engine.run`, with a temporary
               SQLite database), replaying all of bench.dlq; with `--loop`,
               `AmqpTransfer` alone in the engine's loop written by hand: fetch a batch, `replay_target` for each
               message, send it back to its own original exchange and routing
               key with lineage headers (pipelined publisher confirms,
               mandatory), settle what was confirmed and routed, keep the rest;
               until all are replayed.
    reference  the dead letters made again, then a dynamic shovel (management
               API, `ack-mode: on-confirm`, `src-delete-after: queue-length`,
               prefetch 1000) moving bench.dlq to bench.moved; timed until
               bench.moved holds them all, counted over AMQP (exact, unlike the
               management statistics, which lag up to 5 s).

The shovel's task is easier: one fixed destination, no per-message decisions,
no headers added, and it runs inside the broker, without AMQP framing or TCP.
It prints both rates, ours ÷ shovel (target ≥ 1.0), and CPU time per message:
this process's and, when the broker runs on this machine, the broker's (read
from /proc), since on a small machine the two compete for the same cores.
`--rounds N` alternates the two N times and takes medians, for a noisy machine.
The vhost is deleted at the start and the end.

    .venv/bin/python bench/replay_rabbitmq.py [--messages 100000] [--batch 1000]
        [--rounds 1] [--transient] [--gc-threshold N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import requests
import scratch_django

from brokers.base import Outgoing
from brokers.rabbitmq.amqp import AmqpTransfer, replay_target

VHOST = "sluice-bench-replay"
ORIGINALS = [f"bench.orders.{i}" for i in range(10)]
TARGET = 1.0
DELIVERY_MODE = 2  # persistent, as dead letters of real work usually are; --transient for 1


class Broker:
    """The management API and AMQP address of the broker under test."""

    def __init__(self, management_url: str, amqp_url: str, username: str, password: str) -> None:
        parts = urlsplit(management_url)
        self.management_url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")
        )
        amqp = urlsplit(amqp_url)
        creds = f"{quote(username, safe='')}:{quote(password, safe='')}"
        hostport = amqp.netloc.rpartition("@")[2]
        self.amqp_url = urlunsplit((amqp.scheme, f"{creds}@{hostport}", "/", "", ""))
        self.username = username
        self.session = requests.Session()
        self.session.auth = (username, password)

    def api(
        self, method: str, path: str, ok: tuple[int, ...] = (), **kw: object
    ) -> requests.Response:
        resp = self.session.request(method, self.management_url + path, timeout=30, **kw)  # type: ignore[arg-type]
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise SystemExit(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp

    def connect(self) -> pika.BlockingConnection:
        params = pika.URLParameters(self.amqp_url)
        params.virtual_host = VHOST
        return pika.BlockingConnection(params)


def broker_cpu() -> float | None:
    """CPU seconds used so far by a RabbitMQ node on this machine (Linux); None if none is seen."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            cmdline = (stat.parent / "cmdline").read_bytes()
            if b"beam.smp" in cmdline and b"rabbit" in cmdline:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return None


class Timed:
    """Wall-clock seconds, this process's CPU seconds and the broker's, of a `with` block."""

    def __enter__(self) -> Timed:
        self.wall, self.cpu, self.broker = time.perf_counter(), time.process_time(), broker_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        after = broker_cpu()
        self.broker = None if self.broker is None or after is None else after - self.broker


def path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


# -- setup and teardown -------------------------------------------------------


def drop_vhost(broker: Broker) -> None:
    broker.api("DELETE", "/api/vhosts/" + path(VHOST), ok=(404,))


def set_up(broker: Broker) -> None:
    drop_vhost(broker)
    broker.api("PUT", "/api/vhosts/" + path(VHOST))
    broker.api(
        "PUT",
        "/api/permissions/" + path(VHOST, broker.username),
        json={"configure": ".*", "write": ".*", "read": ".*"},
    )
    with broker.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("bench.orders", "topic", durable=True)
        ch.exchange_declare("bench.dlx", "fanout", durable=True)
        ch.queue_declare("bench.dlq", durable=True)
        ch.queue_bind("bench.dlq", "bench.dlx")
        for i, name in enumerate(ORIGINALS):
            ch.queue_declare(name, durable=True, arguments={"x-dead-letter-exchange": "bench.dlx"})
            ch.queue_bind(name, "bench.orders", f"orders.{i}")
        ch.queue_declare("bench.moved", durable=True)


def count(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> int:
    """Exact number of ready messages, over AMQP (the management statistics lag)."""
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def make_dead_letters(broker: Broker, n: int) -> None:
    """Publish `n` orders under a TTL-0 policy so that each dies at once into bench.dlq."""
    policy = "/api/policies/" + path(VHOST, "bench-expire")
    broker.api(
        "PUT",
        policy,
        json={
            "pattern": r"^bench\.orders\.",
            "definition": {"message-ttl": 0},
            "apply-to": "queues",
        },
    )
    started = time.perf_counter()
    with broker.connect() as conn:
        ch = conn.channel()
        # Policies apply asynchronously: wait until a probe dies.
        before = count(ch, "bench.dlq")
        while count(ch, "bench.dlq") == before:
            ch.basic_publish("bench.orders", "orders.0", b"probe")
            time.sleep(0.05)
        ch.queue_purge("bench.dlq")
        pad = "x" * 120
        for i in range(n):
            body = json.dumps(
                {"order": i, "customer": f"c-{i % 977}", "total": i % 1000 + 0.5, "pad": pad}
            ).encode()
            props = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=DELIVERY_MODE,
                timestamp=int(time.time()),
                headers={"tenant": f"t{i % 7}", "attempt": 1},
            )
            ch.basic_publish("bench.orders", f"orders.{i % 10}", body, props)
        deadline = time.monotonic() + 120
        while count(ch, "bench.dlq") < n and time.monotonic() < deadline:
            time.sleep(0.1)
        have = count(ch, "bench.dlq")
    broker.api("DELETE", policy)
    if have != n:
        raise SystemExit(f"bench.dlq holds {have} dead letters, not {n}")
    print(f"made {n} dead letters in {time.perf_counter() - started:.1f} s")


# -- ours ---------------------------------------------------------------------


def replay_ours(broker: Broker, n: int, batch: int) -> Timed:
    """Replay bench.dlq to each message's original exchange and key."""
    replay_id = uuid.uuid4().hex
    replayed = kept = 0
    timed = Timed().__enter__()
    transfer = AmqpTransfer(broker.amqp_url, VHOST, "bench.dlq", prefetch=2 * batch)
    try:
        while replayed + kept < n:
            messages = transfer.fetch(batch, timeout=5)
            if not messages:
                break
            outs, lost = [], []
            for m in messages:
                target = replay_target(m)
                if target is None:
                    lost.append(m)
                    continue
                headers = {
                    **m.headers,
                    "sluice-replay-id": replay_id,
                    "sluice-replayed-from": "bench.dlq",
                    "sluice-replay-count": int(m.headers.get("sluice-replay-count", 0)) + 1,
                    "sluice-replayed-by": "bench",
                }
                outs.append(Outgoing(m, target[0], target[1], headers))
            sent = transfer.send(outs)
            done = [o.message for o, s in zip(outs, sent, strict=True) if s.confirmed and s.routed]
            rest = [
                o.message for o, s in zip(outs, sent, strict=True) if not (s.confirmed and s.routed)
            ]
            transfer.settle(done)
            if rest or lost:
                transfer.keep(rest + lost, {"sluice-replay-error": "unroutable or refused"})
            replayed += len(done)
            kept += len(rest) + len(lost)
    finally:
        transfer.close()
    timed.__exit__()
    if kept:
        print(f"warning: {kept} messages were kept in bench.dlq")
    with broker.connect() as conn:
        ch = conn.channel()
        originals = sum(count(ch, q) for q in ORIGINALS)
        left = count(ch, "bench.dlq")
    print(f"ours: replayed {replayed}; originals hold {originals}, bench.dlq holds {left}")
    if originals != n or left != 0:
        raise SystemExit("ours did not replay every message exactly once")
    return timed


def replay_engine(broker: Broker, n: int, batch: int) -> Timed:
    """Replay bench.dlq through Sluice's own job engine, as an operator's replay job runs.

    The same as `replay_ours` plus what the product does around it: the
    selection and origin decisions per message, an outcome per message and
    progress written to the database after every batch (SQLite here, in a
    temporary directory), and the lineage headers.
    """
    scratch_django.setup("sluice-bench-engine-")
    from dashboard.jobs import engine as jobs
    from dashboard.jobs import service as jobservice
    from dashboard.models import Broker as BrokerRow
    from dashboard.models import Destination, Job

    row = BrokerRow.objects.create(
        name=f"bench-{uuid.uuid4().hex[:8]}",
        kind="rabbitmq",
        options={"management_url": broker.management_url, "amqp_url": broker.amqp_url},
    )
    key = f"{VHOST}/bench.dlq"
    Destination.objects.create(
        broker=row, kind="queue", key=key, name="bench.dlq", vhost=VHOST, type="classic"
    )
    job = Job.objects.create(
        broker=row,
        action="replay",
        source=key,
        selection={"all": True},
        target={"mode": "auto"},
        batch_size=batch,
        created_by="bench",
    )
    with Timed() as timed:
        job = jobs.run(job.pk, jobservice.transfer_for, jobservice.router)
    with broker.connect() as conn:
        ch = conn.channel()
        originals = sum(count(ch, q) for q in ORIGINALS)
        left = count(ch, "bench.dlq")
    print(
        f"engine: {job.state}, replayed {job.replayed}; originals hold {originals}, bench.dlq holds {left}"
    )
    if job.state != "done" or originals != n or left != 0:
        raise SystemExit(f"the engine did not replay every message exactly once: {job.error}")
    return timed


# -- the shovel ---------------------------------------------------------------


def move_with_shovel(broker: Broker, n: int) -> Timed:
    """Move bench.dlq to bench.moved with a dynamic shovel."""
    uri = "amqp:///" + quote(VHOST, safe="")  # direct connection inside the broker
    shovel = "/api/parameters/shovel/" + path(VHOST, "bench-move")
    with broker.connect() as conn:
        ch = conn.channel()
        timed = Timed().__enter__()
        broker.api(
            "PUT",
            shovel,
            json={
                "value": {
                    "src-protocol": "amqp091",
                    "src-uri": uri,
                    "src-queue": "bench.dlq",
                    "dest-protocol": "amqp091",
                    "dest-uri": uri,
                    "dest-queue": "bench.moved",
                    "ack-mode": "on-confirm",
                    "src-delete-after": "queue-length",
                    "src-prefetch-count": 1000,
                }
            },
        )
        deadline = time.monotonic() + 600
        while count(ch, "bench.moved") < n and time.monotonic() < deadline:
            time.sleep(0.05)
        timed.__exit__()
        moved, left = count(ch, "bench.moved"), count(ch, "bench.dlq")
    broker.api("DELETE", shovel, ok=(404,))  # deletes itself when done; just in case
    print(f"shovel: bench.moved holds {moved}, bench.dlq holds {left}")
    if moved != n:
        raise SystemExit("the shovel did not move every message")
    return timed


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="messages per fetch/send/settle")
    parser.add_argument(
        "--rounds", type=int, default=1, help="ours then shovel, this many times; medians"
    )
    parser.add_argument(
        "--transient", action="store_true", help="delivery_mode 1 (default: persistent)"
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=0,
        help="set this process's gen-0 GC threshold (Python's default: 700), as a worker might",
    )
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--amqp-url", default="amqp://127.0.0.1:5672/")
    parser.add_argument("--username", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--keep", action="store_true", help="leave the vhost behind")
    parser.add_argument(
        "--loop",
        action="store_true",
        help="time the transfer loop alone instead of Sluice's job engine (no database)",
    )
    args = parser.parse_args()
    global DELIVERY_MODE
    DELIVERY_MODE = 1 if args.transient else 2
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold)
    broker = Broker(args.management_url, args.amqp_url, args.username, args.password)
    n = args.messages
    runs: dict[str, list[Timed]] = {"ours": [], "shovel": []}
    try:
        set_up(broker)
        for _ in range(args.rounds):
            make_dead_letters(broker, n)
            replay = replay_ours if args.loop else replay_engine
            runs["ours"].append(replay(broker, n, args.batch))
            with broker.connect() as conn:
                ch = conn.channel()
                for q in ORIGINALS:  # or the TTL policy would dead-letter the replayed ones too
                    ch.queue_purge(q)
            make_dead_letters(broker, n)
            runs["shovel"].append(move_with_shovel(broker, n))
            with broker.connect() as conn:
                conn.channel().queue_purge("bench.moved")
    finally:
        if not args.keep:
            drop_vhost(broker)
            print(f"deleted vhost {VHOST}")
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[Timed]]) -> None:
    n = args.messages
    mode = "transient" if args.transient else "persistent"
    gc_note = f", gc threshold {args.gc_threshold}" if args.gc_threshold else ""
    what = "the transfer loop alone" if args.loop else "Sluice's job engine"
    print(f"\nours: {what}; {n} {mode} dead letters, batch {args.batch}{gc_note}", end="")
    print(f"; medians of {args.rounds} rounds" if args.rounds > 1 else "")
    print(f"{'':8}{'seconds':>9}{'msg/s':>9}{'our CPU µs/msg':>16}{'broker CPU µs/msg':>19}")
    wall = {}
    for name, timings in runs.items():
        wall[name] = statistics.median(t.wall for t in timings)
        cpu = statistics.median(t.cpu for t in timings) * 1e6 / n
        brokers = [t.broker for t in timings if t.broker is not None]
        broker = f"{statistics.median(brokers) * 1e6 / n:>19.0f}" if brokers else f"{'?':>19}"
        ours_cpu = f"{cpu:>16.0f}" if name == "ours" else f"{'-':>16}"
        print(f"{name:8}{wall[name]:>9.2f}{n / wall[name]:>9.0f}{ours_cpu}{broker}")
    if args.rounds > 1:
        each = [s.wall / o.wall for o, s in zip(runs["ours"], runs["shovel"], strict=True)]
        print("ours ÷ shovel per round: " + ", ".join(f"{r:.2f}" for r in each))
    ratio = wall["shovel"] / wall["ours"]
    verdict = "OK" if ratio >= TARGET else "UNDER"
    print(f"\nours ÷ shovel = {ratio:.2f}  (target ≥ {TARGET})  {verdict}")


if __name__ == "__main__":
    main()
