"""Benchmark: what one RabbitMQ collection costs, the broker's CPU included, next to references.

Creates `--queues` queues in a dedicated vhost (`sluice-bench` unless `--vhost`), puts a few
messages in some, lets the management statistics settle, then times, in
interleaved rounds on the same broker:

    reference    the paged queue listing alone, straight through `requests`
                 (`/api/queues?page=N&page_size=500&columns=...`, the query the
                 management path makes), nothing done beyond `.json()`;
    prometheus   the Prometheus plugin's detailed endpoint alone (the families
                 the fast cycle asks for; and with the slow cycle's sizes),
                 nothing done beyond reading the text;
    management   `RabbitMQ.collect()` with `metrics_source = "management"`:
                 overview, nodes, consumers and the paged listing, mapped;
    ours         `RabbitMQ.collect()` as configured by default ("auto": the
                 plugin when it answers), the fast cycle.

For each it prints the medians of wall time, of this process's CPU and of
RabbitMQ's own CPU (utime + stime of the local beam.smp in /proc, so the broker
must run on this machine; also net of the broker's background, measured just
before each call), then management ÷ reference (target ≤ 1.3) and ours ÷
management in RabbitMQ's CPU (target ≤ 1/5), the median of the rounds' own
ratios. Other load on the broker makes the net figures noisy: raise `--rounds`.
`collect(topology=True)` is timed separately: it runs on a slower cadence. So is
the listing with `sort=name` (once), which RabbitMQ 3.10 serves in its slow mode
(statistics for every queue on every page); the adapter leaves `sort` out for
that reason. The vhost
is deleted at the end, and at the start if a previous run left it behind.

    .venv/bin/python bench/collect_rabbitmq.py [--queues 5000] [--rounds 5] [--vhost NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import requests

from brokers.rabbitmq import prometheus
from brokers.rabbitmq.adapter import RabbitMQ
from brokers.rabbitmq.management import PAGE_SIZE
from brokers.rabbitmq.monitor import NODE_COLUMNS, OVERVIEW_COLUMNS, QUEUE_COLUMNS

VHOST = "sluice-bench"
TARGET = 1.3
CPU_TARGET = 1 / 5  # ours ÷ management, in RabbitMQ's CPU per collection


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

    def adapter(self, metrics_source: str = "management") -> RabbitMQ:
        return RabbitMQ(
            self.management_url,
            self.amqp_url,
            self.username,
            self.password,
            timeout=30,
            metrics_source=metrics_source,
        )


def vhost_path(*rest: str) -> str:
    return "/".join(quote(part, safe="") for part in rest)


# -- setup and teardown -------------------------------------------------------


def drop_vhost(broker: Broker, vhost: str = VHOST) -> None:
    broker.api("DELETE", "/api/vhosts/" + vhost_path(vhost), ok=(404,))


def create_queues(
    broker: Broker, count: int, publish_every: int, messages: int, vhost: str = VHOST
) -> int:
    """Declare `count` queues over AMQP; returns how many messages were published."""
    drop_vhost(broker, vhost)
    broker.api("PUT", "/api/vhosts/" + vhost_path(vhost))
    broker.api(
        "PUT",
        "/api/permissions/" + vhost_path(vhost, broker.username),
        json={"configure": ".*", "write": ".*", "read": ".*"},
    )
    params = pika.URLParameters(broker.amqp_url)
    params.credentials = pika.PlainCredentials(broker.username, broker.password)
    params.virtual_host = vhost
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


def wait_for_stats(
    broker: Broker, count: int, published: int, deadline: float = 60.0, vhost_name: str = VHOST
) -> None:
    """Wait until the management database has seen every queue and message, then one more tick."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        vhost = broker.api("GET", "/api/vhosts/" + vhost_path(vhost_name)).json()
        total = broker.api(
            "GET",
            "/api/queues/" + vhost_path(vhost_name),
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


def beam_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM, or None when it is not on this machine."""
    found = subprocess.run(["pgrep", "-f", "beam.smp.*rabbit"], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    return pids[0] if pids else None


def beam_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) the broker's VM has used so far; 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command (which may hold spaces), from its closing parenthesis.
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The broker's VM is busy on its own (statistics, other clients, other people's tests),
# and finishes some of a request's work after answering it. So each call is timed after
# SETTLE s of rest, with TAIL s after it counted to it, and the background is measured
# just before it, over BACKGROUND s, and taken off at that rate.
SETTLE, BACKGROUND, TAIL = 1.0, 2.0, 1.0


def timed(fn: Callable[[], object], pid: int | None = None) -> tuple[float, float, float, float]:
    """Wall-clock, this process's CPU, the broker's CPU, and that net of its background."""
    time.sleep(SETTLE)
    before = beam_cpu(pid)
    time.sleep(BACKGROUND)
    background = (beam_cpu(pid) - before) / BACKGROUND
    broker = beam_cpu(pid)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    time.sleep(TAIL)
    used = beam_cpu(pid) - broker
    return wall, cpu, used, used - background * (wall + TAIL)


def reference_prometheus(
    session: requests.Session, url: str, families: tuple[str, ...] = prometheus.FAST_FAMILIES
) -> int:
    """The plugin's detailed endpoint alone, for the families the fast cycle reads."""
    resp = session.get(
        url + "/metrics/detailed",
        params=[("family", f) for f in families],
        timeout=30,
    )
    resp.raise_for_status()
    return len(resp.content)


def bench_collect(broker: Broker, rounds: int) -> dict[str, float]:
    """Medians of each variant; the broker's CPU too when it runs on this machine."""
    session = requests.Session()
    session.auth = (broker.username, broker.password)
    plain = requests.Session()
    management, ours = broker.adapter("management"), broker.adapter("auto")
    prometheus_url = prometheus.default_url(broker.management_url)
    runs: dict[str, tuple[str, Callable[[], object]]] = {
        "reference": (
            "reference: listing",
            lambda: reference_listing(session, broker.management_url),
        ),
        "prometheus": (
            "reference: plugin GET",
            lambda: reference_prometheus(plain, prometheus_url),
        ),
        # With queue_metrics (sizes, consumer capacity), as the slow cycle asks.
        "sizes": (
            "  plugin GET, + sizes",
            lambda: reference_prometheus(plain, prometheus_url, prometheus.FAMILIES),
        ),
        "management": ("collect(), management", management.collect),
        "ours": ("collect(), ours (auto)", ours.collect),
        # What the fast cycle still asks the management API, alone.
        "health": (
            "  of which overview+nodes",
            lambda: (
                ours.api.get("/api/overview", {"columns": OVERVIEW_COLUMNS}),
                ours.api.get("/api/nodes", {"columns": NODE_COLUMNS}),
            ),
        ),
        "topology": ("ours, topology=True", lambda: ours.collect(topology=True)),
    }
    pid = beam_pid()
    # Warm up (connections, the broker's caches, our settings cache) before timing anything.
    listed = reference_listing(session, broker.management_url)
    snapshot = management.collect()
    topo = ours.collect(topology=True)
    fast = ours.collect()
    print(
        f"reference lists {listed} queues; the management path maps {len(snapshot.destinations)} "
        f"in {snapshot.requests} requests; ours {len(fast.destinations)} in {fast.requests} "
        f"({topo.requests} with topology)\ncounts from: {fast.health.facts.get('counts_from')}"
    )
    if pid is None:
        print("no local beam.smp: RabbitMQ's CPU is not measured")
    times: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in runs}
    # Interleaved, so that drift in the broker's load hits every variant alike.
    for _ in range(rounds):
        for name, (_, fn) in runs.items():
            times[name].append(timed(fn, pid))
    # Slow mode: minutes over all rounds, and only a side note; once is enough.
    runs["sort=name"] = (
        "listing with sort=name",
        lambda: reference_listing(session, broker.management_url, sort="name"),
    )
    times["sort=name"] = [timed(runs["sort=name"][1], pid)]
    management.close()
    ours.close()
    session.close()
    plain.close()

    med = {
        name: tuple(statistics.median(run[i] for run in v) for i in range(4))
        for name, v in times.items()
    }
    print(
        f"\n{'median of ' + str(rounds):26}{'wall':>9}{'min':>9}{'max':>9}"
        f"{'our CPU':>10}{'RabbitMQ CPU':>14}{'net of bg':>11}{'net min..max':>16}"
    )
    for name, (label, _) in runs.items():
        w = [x[0] for x in times[name]]
        n = [x[3] for x in times[name]]
        wall, cpu, beam, net = med[name]
        print(
            f"{label:26}{wall * 1000:>7.0f}ms{min(w) * 1000:>7.0f}ms{max(w) * 1000:>7.0f}ms"
            f"{cpu * 1000:>8.0f}ms{beam * 1000:>12.0f}ms{net * 1000:>9.0f}ms"
            f"{min(n) * 1000:>8.0f}..{max(n) * 1000:.0f}ms"
        )
    ratio = med["management"][0] / med["reference"][0]
    verdict = "OK" if ratio <= TARGET else "OVER"
    print(
        f"\nmanagement path ÷ reference listing (wall) = {ratio:.2f}  (target ≤ {TARGET})  {verdict}"
    )
    result = {name: m[0] for name, m in med.items()} | {"ratio": ratio}
    if pid is not None and med["management"][3] > 0:
        # Per round, each path against the other in the same round, then the median.
        per_round = [
            o[3] / m[3] for o, m in zip(times["ours"], times["management"], strict=True) if m[3] > 0
        ]
        cpu_ratio = statistics.median(per_round)
        raw = med["ours"][2] / med["management"][2]
        verdict = "PASS" if cpu_ratio <= CPU_TARGET else "FAIL"
        print(
            f"ours ÷ management path (RabbitMQ's CPU per collection, net of background) = "
            f"{cpu_ratio:.3f}  (target ≤ {CPU_TARGET:.2f})  {verdict}\n"
            f"  per round: {', '.join(f'{r:.3f}' for r in per_round)}; "
            f"ratio of medians {med['ours'][3] / med['management'][3]:.3f}; "
            f"raw, background included: {raw:.3f}"
        )
        result["cpu_ratio"] = cpu_ratio
    return result


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
    parser.add_argument("--vhost", default=VHOST, help="the vhost to create, fill and delete")
    parser.add_argument(
        "--viewer-seconds",
        type=float,
        default=60,
        help="window per viewer count; 0 skips that part",
    )
    args = parser.parse_args()

    broker = Broker(args.management_url, args.amqp_url, args.username, args.password)
    try:
        published = create_queues(broker, args.queues, 10, 3, args.vhost)
        wait_for_stats(broker, args.queues, published, vhost_name=args.vhost)
        bench_collect(broker, args.rounds)
        if args.viewer_seconds > 0:
            from viewers import bench_viewers  # beside this file

            bench_viewers(args.management_url, args.username, args.password, args.viewer_seconds)
    finally:
        if not args.keep:
            drop_vhost(broker, args.vhost)
            print(f"deleted vhost {args.vhost}")


if __name__ == "__main__":
    main()
