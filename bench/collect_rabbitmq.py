"""Benchmark: what one RabbitMQ collection costs next to the cheapest raw listing.

Creates `--queues` queues in a dedicated vhost (`sluice-bench`), puts a few
messages in some, lets the management statistics settle, then times, in
interleaved rounds on the same broker:

    reference  the paged queue listing alone, straight through `requests`
               (`/api/queues?page=N&page_size=500&columns=...`, the query the
               adapter makes), nothing done beyond `.json()`;
    ours       `RabbitMQ.collect()`: overview, nodes, consumers and the same
               paged listing, mapped to dataclasses.

and prints the medians and ours ÷ reference (target ≤ 1.3). `collect(topology=True)`
is timed separately: it runs on a slower cadence. So is the same listing with
`sort=name`, which RabbitMQ 3.10 serves in its slow mode (statistics for every
queue on every page); the adapter leaves `sort` out for that reason. The vhost is deleted at the
end, and at the start if a previous run left it behind.

    .venv/bin/python bench/collect_rabbitmq.py [--queues 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import requests

from brokers.rabbitmq.adapter import RabbitMQ
from brokers.rabbitmq.management import PAGE_SIZE
from brokers.rabbitmq.monitor import QUEUE_COLUMNS

VHOST = "sluice-bench"
TARGET = 1.3


class Broker:
    """The management API and AMQP address of the broker under test."""

    def __init__(self, management_url: str, amqp_url: str, username: str, password: str) -> None:
        parts = urlsplit(management_url)
        self.management_url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")
        )
        self.amqp_url = amqp_url
        self.username, self.password = username, password
        self.session = requests.Session()
        self.session.auth = (username, password)

    def api(
        self, method: str, path: str, ok: tuple[int, ...] = (), **kw: object
    ) -> requests.Response:
        resp = self.session.request(method, self.management_url + path, timeout=30, **kw)  # type: ignore[arg-type]
        if resp.status_code >= 400 and resp.status_code not in ok:
            resp.raise_for_status()
        return resp

    def adapter(self) -> RabbitMQ:
        return RabbitMQ(
            self.management_url, self.amqp_url, self.username, self.password, timeout=30
        )


def vhost_path(*rest: str) -> str:
    return "/".join(quote(part, safe="") for part in rest)


# -- setup and teardown -------------------------------------------------------


def drop_vhost(broker: Broker) -> None:
    broker.api("DELETE", "/api/vhosts/" + vhost_path(VHOST), ok=(404,))


def create_queues(broker: Broker, count: int, publish_every: int, messages: int) -> int:
    """Declare `count` queues over AMQP; returns how many messages were published."""
    drop_vhost(broker)
    broker.api("PUT", "/api/vhosts/" + vhost_path(VHOST))
    broker.api(
        "PUT",
        "/api/permissions/" + vhost_path(VHOST, broker.username),
        json={"configure": ".*", "write": ".*", "read": ".*"},
    )
    params = pika.URLParameters(broker.amqp_url)
    params.credentials = pika.PlainCredentials(broker.username, broker.password)
    params.virtual_host = VHOST
    published = 0
    started = time.perf_counter()
    # One channel and one declare after another: far faster than 5,000 HTTP PUTs.
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        for i in range(count):
            name = f"bench-{i:05d}"
            channel.queue_declare(name, durable=False)
            if i % publish_every == 0:
                for m in range(messages):
                    channel.basic_publish("", name, f"message {m}".encode())
                published += messages
    print(
        f"declared {count} queues, published {published} messages in {time.perf_counter() - started:.1f} s"
    )
    return published


def wait_for_stats(broker: Broker, count: int, published: int, deadline: float = 60.0) -> None:
    """Wait until the management database has seen every queue and message, then one more tick."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        vhost = broker.api("GET", "/api/vhosts/" + vhost_path(VHOST)).json()
        total = broker.api(
            "GET",
            "/api/queues/" + vhost_path(VHOST),
            params={"page": 1, "page_size": 1, "columns": "name"},
        ).json()["total_count"]
        if total == count and vhost.get("messages") == published:
            break
        time.sleep(1)
    else:
        print("warning: statistics did not settle; timing anyway")
    time.sleep(5)  # one more statistics interval so that every queue has rates
    print(f"statistics settled after {time.monotonic() - started:.1f} s")


# -- the collection benchmark -------------------------------------------------


def reference_listing(session: requests.Session, management_url: str, **extra: str) -> int:
    """The cheapest read of every queue: the paged listing, `.json()` and nothing else."""
    page, items = 1, 0
    while True:
        params: dict[str, str | int] = {
            "page": page,
            "page_size": PAGE_SIZE,
            "columns": QUEUE_COLUMNS,
        }
        params.update(extra)
        resp = session.get(management_url + "/api/queues", params=params, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        items += len(body["items"])
        if page >= body["page_count"]:
            return items
        page += 1


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds taken by `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_collect(broker: Broker, rounds: int) -> dict[str, float]:
    """Median seconds of the reference listing, of collect(), and of collect(topology=True)."""
    session = requests.Session()
    session.auth = (broker.username, broker.password)
    adapter = broker.adapter()
    runs: dict[str, Callable[[], object]] = {
        "reference": lambda: reference_listing(session, broker.management_url),
        "ours": adapter.collect,
        "topology": lambda: adapter.collect(topology=True),
        "sort=name": lambda: reference_listing(session, broker.management_url, sort="name"),
    }
    # Warm up (connections, the broker's caches) before timing anything.
    listed = reference_listing(session, broker.management_url)
    snapshot = adapter.collect()
    topo = adapter.collect(topology=True)
    print(
        f"reference lists {listed} queues; collect() maps {len(snapshot.destinations)} "
        f"in {snapshot.requests} requests, {topo.requests} with topology"
    )
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    # Interleaved, so that drift in the broker's load hits every variant alike.
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    adapter.close()
    session.close()

    wall = {name: statistics.median(w for w, _ in v) for name, v in times.items()}
    cpu = {name: statistics.median(c for _, c in v) for name, v in times.items()}
    print(f"\n{'median of ' + str(rounds):28}{'wall':>9}{'min':>9}{'max':>9}{'our CPU':>9}")
    for name, label in (
        ("reference", "reference listing"),
        ("ours", "collect()"),
        ("topology", "collect(topology=True)"),
        ("sort=name", "listing with sort=name"),
    ):
        w = [x for x, _ in times[name]]
        print(
            f"{label:28}{wall[name] * 1000:>7.0f}ms{min(w) * 1000:>7.0f}ms"
            f"{max(w) * 1000:>7.0f}ms{cpu[name] * 1000:>7.0f}ms"
        )
    ratio = wall["ours"] / wall["reference"]
    verdict = "OK" if ratio <= TARGET else "OVER"
    print(f"\nours ÷ reference = {ratio:.2f}  (target ≤ {TARGET})  {verdict}")
    return {**wall, "ratio": ratio}


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--amqp-url", default="amqp://127.0.0.1:5672/")
    parser.add_argument("--username", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--keep", action="store_true", help="leave the vhost and its queues behind")
    parser.add_argument(
        "--viewer-seconds",
        type=float,
        default=60,
        help="window per viewer count; 0 skips that part",
    )
    args = parser.parse_args()

    broker = Broker(args.management_url, args.amqp_url, args.username, args.password)
    try:
        published = create_queues(broker, args.queues, publish_every=10, messages=3)
        wait_for_stats(broker, args.queues, published)
        bench_collect(broker, args.rounds)
        if args.viewer_seconds > 0:
            from viewers import bench_viewers  # beside this file

            bench_viewers(args.management_url, args.username, args.password, args.viewer_seconds)
    finally:
        if not args.keep:
            drop_vhost(broker)
            print(f"deleted vhost {VHOST}")


if __name__ == "__main__":
    main()
