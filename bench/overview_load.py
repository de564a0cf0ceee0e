"""Benchmark: the overview's answer time with 1 and with 50 people watching, next to /healthz.

Fills the three real brokers: 5,000 RabbitMQ queues (a tenth with 3 messages)
in the `sluice-bench` vhost, 300 Kafka topics × 4 partitions with one group
each on a private Tansu, and 100 NATS streams × 10 durable consumers on a
private nats-server. Then runs Sluice as `make run` does (`start_sluice`: web,
Celery worker and beat) at the default interval (5 s) on a scratch SQLite
database and a private Redis, waits for the first collections, and signs in one
requests.Session per simulated user.

Each round has two phases of `--seconds`: 1 user, then `--users` users, each
loading `/` (the full page, as a browser's first GET) every 5 s ± 0.5 s, while
a prober loads `/healthz` every `--probe-every` seconds under the same load.
It prints the p50, p95 and p99 of each, the requests and errors, and whether
the target holds: with 50 users, overview p95 ≤ 3 × /healthz p95 and ≤ 150 ms.
Queues, topics, groups and streams are removed at the end, also on failure.

Page loads alone leave the overview unwatched, so the first load after each
change renders it. `--watchers N` keeps N websockets on the overview, as the
users' browsers would: the push after each collection then renders it.

    .venv/bin/python bench/overview_load.py [--quick] [--seconds 60] [--rounds 2] [--watchers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import collect_nats as bench_nats
import collect_rabbitmq as bench_rabbitmq
import requests

from dashboard import devservices

PACE = 5.0  # seconds between one user's page loads
JITTER = 0.5  # ± seconds around PACE
TARGET_RATIO = 3.0  # overview p95 ÷ /healthz p95, at most
TARGET_MS = 150.0  # overview p95, at most
PER_TOPIC = 4  # Kafka partitions per topic; one group per topic
KAFKA_MESSAGES = 2  # per partition
PER_STREAM = 10  # NATS durable consumers per stream
NATS_MESSAGES = 10  # per stream
PASSWORD = "bench-admin-pw-1"
# Tansu 0.6 fails to commit offsets for a group deleted before: a rerun uses new names.
RUN = uuid.uuid4().hex[:6]
LOCK = threading.Lock()  # guards the Samples the threads append to


@dataclass
class Size:
    queues: int
    topics: int
    streams: int

    @property
    def what(self) -> str:
        return (
            f"{self.queues:,} queues, {self.topics * PER_TOPIC:,} partitions in "
            f"{self.topics:,} groups, {self.streams * PER_STREAM:,} NATS consumers"
        )


FULL = Size(queues=5_000, topics=300, streams=100)
QUICK = Size(queues=500, topics=30, streams=10)


# -- filling the brokers, and emptying them -----------------------------------


def cleanup(what: str, fn: Callable[[], object]) -> None:
    """Run one cleanup step; a failure is printed and does not stop the others."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - printed; the other steps still run
        print(f"cleanup of {what} failed: {type(exc).__name__}: {exc}")


def fill_rabbitmq(size: Size, stack: ExitStack) -> dict[str, str]:
    found = devservices.rabbitmq()
    server = bench_rabbitmq.Broker(
        found["management_url"], found["amqp_url"], found["username"], found["password"]
    )
    stack.callback(server.session.close)
    stack.callback(
        cleanup, f"vhost {bench_rabbitmq.VHOST}", lambda: bench_rabbitmq.drop_vhost(server)
    )
    published = bench_rabbitmq.create_queues(server, size.queues, publish_every=10, messages=3)
    bench_rabbitmq.wait_for_stats(server, size.queues, published)
    return {
        "kind": "rabbitmq",
        "management_url": server.management_url,
        "username": server.username,
        "password": "${SLUICE_BENCH_RABBITMQ_PASSWORD}",
    }


def topic_name(i: int) -> str:
    return f"sluice-load-{RUN}-t{i:03d}"


def fill_kafka(size: Size, stack: ExitStack) -> dict[str, str]:
    from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata

    bootstrap = devservices.kafka()["bootstrap_servers"]
    started = time.perf_counter()
    prefix = f"sluice-load-{RUN}-"

    def drop() -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
        try:
            groups = [
                g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(prefix)
            ]
            if groups:
                admin.delete_groups(groups)
            names = [t for t in admin.list_topics() if t.startswith(prefix)]
            if names:
                admin.delete_topics(names)
        finally:
            admin.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    stack.callback(cleanup, f"Kafka topics and groups {prefix}*", drop)
    try:
        names = [topic_name(i) for i in range(size.topics)]
        for chunk in range(0, len(names), 50):
            admin.create_topics([NewTopic(n, PER_TOPIC, 1) for n in names[chunk : chunk + 50]])
        # One record per batch: Tansu undercounts batched records (tests/kafka_fixtures.py).
        producer = KafkaProducer(bootstrap_servers=bootstrap, batch_size=1, linger_ms=0)
        for name in names:
            for p in range(PER_TOPIC):
                for m in range(KAFKA_MESSAGES):
                    producer.send(name, f"message {m}".encode(), partition=p)
        producer.flush()
        producer.close()
        # A group is listed once it has stored offsets: every other one is caught up.
        for i, name in enumerate(names):
            offsets = {
                TopicPartition(name, p): OffsetAndMetadata(KAFKA_MESSAGES * (i % 2), None, -1)
                for p in range(PER_TOPIC)
            }
            admin.alter_group_offsets(f"{prefix}g{i:03d}", offsets)
    finally:
        admin.close()
    print(
        f"Kafka at {bootstrap}: {size.topics} topics × {PER_TOPIC} partitions and "
        f"{size.topics} groups in {time.perf_counter() - started:.1f} s"
    )
    return {"kind": "kafka", "bootstrap_servers": bootstrap}


def fill_nats(size: Size, stack: ExitStack) -> dict[str, str]:
    server = devservices.nats()
    url = server["url"]
    started = time.perf_counter()
    stack.callback(
        cleanup,
        f"NATS streams {bench_nats.PREFIX}_*",
        lambda: asyncio.run(bench_nats.teardown(url)),
    )
    asyncio.run(bench_nats.setup(url, size.streams, PER_STREAM, NATS_MESSAGES))
    print(
        f"NATS at {url}: {size.streams} streams × {PER_STREAM} consumers in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return {"kind": "nats", "url": url, "monitoring_url": server["monitoring_url"]}


def broker_file(path: Path, brokers: dict[str, dict[str, str]]) -> None:
    """Sluice's broker file; each broker at the default interval."""
    lines = []
    for name, options in brokers.items():
        lines.append("[[broker]]")
        lines.append(f'name = "{name}"')
        lines.extend(f'{key} = "{value}"' for key, value in options.items())
        lines.append("")
    path.write_text("\n".join(lines))


# -- Sluice --------------------------------------------------------------------


def run_sluice(
    port: int, env: dict[str, str], logs: Path, stack: ExitStack
) -> tuple[str, list[Any]]:
    """Sluice as `make run` starts it (web tier, worker, beat), stopped when `stack`
    closes; its URL once /healthz answers, and its processes."""
    processes = devservices.start_sluice(port, env, logs)
    for process in processes:
        stack.callback(devservices.stop, process)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{url}/healthz", timeout=2).ok
        return False

    wait_until("Sluice's /healthz", healthy, 60)
    return url, list(processes)


def wait_until(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(1)
    raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")


def stored(database: Path) -> dict[tuple[str, str], int]:
    """(broker, kind) -> destinations the collections stored and still see."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT b.name, d.kind, count(*) FROM dashboard_destination d "
                "JOIN dashboard_broker b ON b.id = d.broker_id "
                "WHERE d.gone_since IS NULL GROUP BY b.name, d.kind"
            ).fetchall()
    except sqlite3.Error:  # not migrated yet, or busy
        return {}
    return {(name, kind): n for name, kind, n in rows}


def sign_in(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{url}/login/", timeout=30)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "no login form"
    answer = session.post(
        f"{url}/login/",
        data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": match.group(1)},
        headers={"Referer": f"{url}/login/"},
        timeout=30,
        allow_redirects=False,
    )
    if answer.status_code != 302 or "sessionid" not in session.cookies:
        raise RuntimeError(f"sign-in failed: HTTP {answer.status_code}")
    return session


# -- the load ------------------------------------------------------------------


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)  # answer times of the successful requests
    errors: list[str] = field(default_factory=list)

    def add(self, other: Samples) -> None:
        self.ms.extend(other.ms)
        self.errors.extend(other.errors)


def load(session: requests.Session, url: str, every: float, until: float, out: Samples) -> None:
    """GET `url` every `every` ± JITTER·every/PACE seconds until `until`, from a random start."""
    jitter = JITTER * every / PACE
    due = time.monotonic() + random.uniform(0, every)
    while True:
        time.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() >= until:
            return
        started = time.perf_counter()
        try:
            answer = session.get(url, timeout=30, allow_redirects=False)
            took = (time.perf_counter() - started) * 1000
            problem = "" if answer.status_code == 200 else f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            took, problem = 0.0, type(exc).__name__
        with LOCK:
            if problem:
                out.errors.append(problem)
            else:
                out.ms.append(took)
        due += every + random.uniform(-jitter, jitter)


def phase(
    url: str, sessions: list[requests.Session], seconds: float, probe_every: float
) -> tuple[Samples, Samples]:
    """(overview, /healthz) samples of `len(sessions)` users and the prober over `seconds`."""
    until = time.monotonic() + seconds
    pages, health = Samples(), Samples()
    threads = [
        threading.Thread(target=load, args=(s, f"{url}/", PACE, until, pages), daemon=True)
        for s in sessions
    ]
    prober = requests.Session()
    threads.append(
        threading.Thread(target=load, args=(prober, f"{url}/healthz", probe_every, until, health))
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    prober.close()
    return pages, health


class Watchers:
    """`count` websockets watching the overview, as the users' browsers open them after
    the page: the push after each collection then renders the overview once for all."""

    def __init__(self, url: str, session: requests.Session, count: int) -> None:
        self.received = 0
        self._stop = threading.Event()
        cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
        ready = threading.Event()

        async def run() -> None:
            import websockets

            sockets = [
                await websockets.connect(
                    url.replace("http://", "ws://") + "/ws/live/?view=overview",
                    additional_headers={"Cookie": cookie, "Origin": url},
                    max_size=None,
                )
                for _ in range(count)
            ]
            ready.set()

            async def drain(ws: Any) -> None:
                async for _ in ws:
                    self.received += 1

            readers = [asyncio.create_task(drain(ws)) for ws in sockets]
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            for ws in sockets:
                await ws.close()
            for task in readers:
                task.cancel()

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError("the watchers' websockets did not connect")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def row(label: str, samples: Samples) -> str:
    p = [percentile(samples.ms, q) for q in (50, 95, 99)]
    errors = ""
    if samples.errors:
        kinds: dict[str, int] = {}
        for e in samples.errors:
            kinds[e] = kinds.get(e, 0) + 1
        errors = "  (" + ", ".join(f"{n} × {e}" for e, n in sorted(kinds.items())) + ")"
    return (
        f"{label:24}{p[0]:>8.1f}{p[1]:>8.1f}{p[2]:>8.1f}{len(samples.ms) + len(samples.errors):>10}"
        f"{len(samples.errors):>8}{errors}"
    )


HEADER = f"{'':24}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'requests':>10}{'errors':>8}"


# -- the run -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a small fill: {QUICK.what}")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="1-user and N-user phases, in turn")
    parser.add_argument(
        "--watchers",
        type=int,
        default=0,
        help="websockets watching the overview throughout (0: page loads only)",
    )
    parser.add_argument(
        "--probe-every", type=float, default=1.0, help="seconds between /healthz probes"
    )
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    # Private Redis, Kafka and NATS: nothing shared with other runs; stopped at exit.
    for name in ("REDIS_URL", "SLUICE_TEST_KAFKA_BOOTSTRAP", "SLUICE_TEST_NATS_URL"):
        os.environ.pop(name, None)
    print(f"filling: {size.what}")
    with ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="sluice-bench-load-"))
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        brokers = {
            "rabbit": fill_rabbitmq(size, stack),
            "kafka": fill_kafka(size, stack),
            "nats": fill_nats(size, stack),
        }
        config = state / "brokers.toml"
        broker_file(config, brokers)
        port = devservices.free_port()
        database = state / "sluice.sqlite3"
        env = {
            **os.environ,
            "SLUICE_STATE_DIR": str(state),
            "DATABASE_URL": f"sqlite:///{database}",
            "REDIS_URL": devservices.redis(),
            "SLUICE_CONFIG": str(config),
            "SLUICE_BENCH_RABBITMQ_PASSWORD": devservices.rabbitmq()["password"],
            "SLUICE_ADMIN_PASSWORD": PASSWORD,
        }
        env.pop("SLUICE_INTERVAL", None)  # the default interval
        url, _ = run_sluice(port, env, state / "logs", stack)
        expected = {
            ("rabbit", "queue"): size.queues,
            ("kafka", "group"): size.topics,
            ("nats", "consumer"): size.streams * PER_STREAM,
        }

        def collected() -> bool:
            found = stored(database)
            return all(found.get(key, 0) >= n for key, n in expected.items())

        began = time.monotonic()
        wait_until("the first collections of all three brokers", collected, 300)
        print(f"first collections stored after {time.monotonic() - began:.0f} s:")
        for (broker, kind), n in sorted(stored(database).items()):
            print(f"  {broker:8}{n:>7,} {kind}s")
        began = time.monotonic()
        sessions = [sign_in(url) for _ in range(args.users)]
        print(f"{args.users} sessions signed in in {time.monotonic() - began:.0f} s")
        for s in sessions:
            stack.callback(s.close)
        # A page load of each, so that the first phase does not time the first rendering.
        for s in sessions[:2]:
            s.get(f"{url}/", timeout=60)
        if args.watchers:
            watchers = Watchers(url, sessions[0], args.watchers)
            stack.callback(watchers.close)
            time.sleep(2 * PACE)  # a push has rendered the watched overview
        results: dict[str, tuple[Samples, Samples]] = {
            "1": (Samples(), Samples()),
            "N": (Samples(), Samples()),
        }
        print(
            f"\n{args.rounds} round(s) of {args.seconds:.0f} s with 1 user, then "
            f"{args.seconds:.0f} s with {args.users} users; each user loads / every "
            f"{PACE:.0f} ± {JITTER} s, the prober /healthz every {args.probe_every:g} s; "
            f"{args.watchers} websocket(s) watching the overview"
        )
        for n in range(args.rounds):
            for key, users in (("1", sessions[:1]), ("N", sessions)):
                pages, health = phase(url, users, args.seconds, args.probe_every)
                print(f"\nround {n + 1}, {len(users)} user(s)\n{HEADER}")
                print(row("overview /", pages))
                print(row("/healthz", health))
                results[key][0].add(pages)
                results[key][1].add(health)
        report(args.users, results)
        if args.watchers:
            print(f"live updates received by the {args.watchers} watcher(s): {watchers.received}")


def report(users: int, results: dict[str, tuple[Samples, Samples]]) -> None:
    print(f"\nall rounds\n{HEADER}")
    print(row("overview, 1 user", results["1"][0]))
    print(row("/healthz, 1 user", results["1"][1]))
    print(row(f"overview, {users} users", results["N"][0]))
    print(row(f"/healthz, {users} users", results["N"][1]))
    one = percentile(results["1"][0].ms, 95)
    page = percentile(results["N"][0].ms, 95)
    health = percentile(results["N"][1].ms, 95)
    ratio = page / health if health else float("nan")
    errors = len(results["N"][0].errors) + len(results["N"][1].errors)
    holds = ratio <= TARGET_RATIO and page <= TARGET_MS and errors == 0
    print(f"\noverview p95 with 1 user: {one:.1f} ms; with {users} users: {page:.1f} ms")
    print(
        f"overview p95 ÷ /healthz p95 with {users} users: {ratio:.2f} (target ≤ {TARGET_RATIO:g}); "
        f"overview p95 {page:.1f} ms (target ≤ {TARGET_MS:g} ms); {errors} errors: "
        f"{'PASS' if holds else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
