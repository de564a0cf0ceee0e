"""Benchmark: N websocket clients watch the overview for M minutes while a queue's backlog changes.

Runs Sluice as `make run` does (`start_sluice`: the uvicorn web tier, a Celery
worker and beat) on a scratch SQLite database and a private Redis, with one
broker: the machine's RabbitMQ at `--interval` seconds (2 s unless told; the
project's default is 5 s). The queue `soak` in the vhost `sluice-soak` starts
with 1,000 messages, so that it ranks on the overview's first page. Sluice
reaches the node through a small proxy (`OneVhost`) that narrows the management
API's listings and the Prometheus endpoint to that vhost: the node is shared,
and others' queues would make the figures measure their number.

`--clients` websockets (200) sign in as the admin (SLUICE_WS_MAX_PER_USER is
raised to let them) and watch the overview, the home page's live view. Every
1.5–3 intervals the bench publishes 1–9 messages to the queue, with publisher
confirms, and stamps the change. A prober reads the queue's count from the
Prometheus endpoint Sluice collects from, every 50 ms, to stamp when the broker
first shows the change: RabbitMQ updates its counts on its own timer (up to
`collect_statistics_interval`, 5 s), a delay no collector can beat.

Each client records every push: its arrival, the generation it carries (pushes
lead with `<!-- generation N -->`, dashboard/live/push.py; one per collection)
and the queue's backlog in it. At the end it prints, per client, the updates
and the generations missed, and over every (client, change) pair the p50, p95
and p99 of change → first update showing it, both from the publish and from the
broker showing it. Target: p95 from the broker showing the change ≤ interval +
300 ms, no generation missed nor socket closed, and memory flat: the RSS of the web tier's
processes and of the Celery worker's, each at the end ≤ 1.1 × start + 20 MB.

Then one Chromium (Playwright) signs in and loads the overview while the clients
stay connected; a MutationObserver on #stream stamps each change of the queue's
backlog cell, and `--browser-changes` changes give change → DOM updated.

    .venv/bin/python bench/live_soak.py [--clients 200] [--minutes 10] [--interval 2]
        [--browser-changes 10] [--dump timeline.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import collect_rabbitmq as bench_rabbitmq
import pika
import requests
import websockets
from overview_load import PASSWORD, cleanup, percentile, run_sluice, sign_in, wait_until
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from dashboard import devservices

VHOST, QUEUE = "sluice-soak", "soak"
KEY = f"{VHOST}/{QUEUE}"  # the row's data-key on the overview
START_BACKLOG = 1_000
PROMETHEUS_URL = "http://127.0.0.1:15692"  # the plugin on the machine's node (devservices)
PROBE_SECONDS = 0.05  # how often the prober reads the broker's count
SLACK_MS = 300.0  # target: p95 from the broker showing a change ≤ interval + this
MEMORY_RATIO, MEMORY_MB = 1.1, 20.0  # flat: end RSS ≤ start × ratio + MB
CONNECT_AT_ONCE = 20
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]  # as tests/test_browser.py
GENERATION = re.compile(r"<!-- generation (\d+) -->")
ROW = f'data-key="{KEY}"'
CELL = 'class="n backlog">'


# -- the broker and its changes --------------------------------------------------


@dataclass
class Change:
    backlog: int  # the queue's count once this change is in
    at: float  # the publish confirmed, Unix seconds
    shown: float | None = None  # the broker's count first showed it (the prober)


class Changer:
    """Publishes to the queue and reads its count back from the broker, every PROBE_SECONDS."""

    def __init__(self, rabbit: dict[str, str]) -> None:
        params = pika.URLParameters(rabbit["amqp_url"])
        params.virtual_host = VHOST
        params.heartbeat = 0  # used in bursts, from whichever thread changes the queue
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.queue_declare(QUEUE, durable=False)
        self.backlog = 0
        self.changes: list[Change] = []
        self.counts: list[tuple[float, int]] = []  # (when, count) at each count the prober saw
        self._metrics = PROMETHEUS_URL + "/metrics/detailed"
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe, daemon=True)
        self._prober.start()

    def publish(self, count: int) -> Change:
        for n in range(count):
            self.channel.basic_publish("", QUEUE, f"soak {self.backlog + n}".encode())
        self.backlog += count
        change = Change(self.backlog, time.time())
        self.changes.append(change)
        return change

    def _probe(self) -> None:
        session = requests.Session()
        line = f'rabbitmq_detailed_queue_messages{{vhost="{VHOST}",queue="{QUEUE}"}} '
        while not self._stop.is_set():
            with contextlib.suppress(requests.RequestException, ValueError):
                # Stamped as asked: the count may have moved at any time since the poll
                # before, so a change's latency is measured from no later than that.
                asked = time.time()
                text = session.get(
                    self._metrics,
                    params={"family": "queue_coarse_metrics", "vhost": VHOST},
                    timeout=2,
                ).text
                start = text.find(line)
                if start >= 0:
                    end = text.find("\n", start)
                    count = int(float(text[start + len(line) : end]))
                    if not self.counts or self.counts[-1][1] != count:
                        self.counts.append((asked, count))
            time.sleep(PROBE_SECONDS)

    def settle(self) -> None:
        """Stamp each change with when the broker's count first showed it."""
        for change in self.changes:
            change.shown = next((t for t, n in self.counts if n >= change.backlog), None)

    def close(self) -> None:
        self._stop.set()
        self._prober.join(5)
        self.connection.close()


def schedule(changer: Changer, interval: float, until: float) -> None:
    """Change the backlog by 1–9 messages every 1.5–3 intervals until `until`."""
    while True:
        time.sleep(random.uniform(1.5, 3.0) * interval)
        if time.time() >= until:
            return
        changer.publish(random.randint(1, 9))


class OneVhost:
    """Sluice's view of the shared RabbitMQ, narrowed to VHOST by rewriting its GETs.

    Others' queues on the same node (tests, other benchmarks) would otherwise be
    collected too, and the figures would measure their number, not the live push.
    The management API's listings get the vhost in their path, the Prometheus
    endpoint a `vhost` parameter; everything else passes unchanged.
    """

    SCOPED = ("/api/queues", "/api/consumers", "/api/exchanges", "/api/bindings")

    def __init__(self, management_url: str, prometheus_url: str) -> None:
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                parts = urlsplit(self.path)
                path, query = parts.path.rstrip("/"), parts.query
                if path in OneVhost.SCOPED:
                    path += "/" + quote(VHOST, safe="")
                if path == "/metrics/detailed":
                    query = f"{query}&vhost={quote(VHOST)}" if query else f"vhost={quote(VHOST)}"
                upstream = prometheus_url if path.startswith("/metrics") else management_url
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "accept")
                }
                target = upstream + path + (f"?{query}" if query else "")
                try:
                    answer = session.get(target, headers=headers, timeout=30)
                except requests.RequestException:
                    self.send_error(502)
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# -- the clients ----------------------------------------------------------------


@dataclass
class Client:
    pushes: list[tuple[float, int, int | None]] = field(default_factory=list)  # at, gen, backlog
    closed: str = ""  # why the socket ended early, if it did

    def first_showing(self, change: Change, until: float) -> float | None:
        for at, _, backlog in self.pushes:
            if change.at < at <= until and backlog is not None and backlog >= change.backlog:
                return at
        return None


def backlog_in(html: str) -> int | None:
    """The queue's backlog in a pushed overview, or None if its row is not on the page."""
    row = html.find(ROW)
    cell = html.find(CELL, row) if row >= 0 else -1
    if cell < 0:
        return None
    value = html[cell + len(CELL) : html.find("<", cell + len(CELL))]
    return int(value.replace(",", "")) if value.strip().replace(",", "").isdigit() else None


async def listen(ws: Any, client: Client) -> None:
    try:
        async for message in ws:
            at = time.time()
            found = GENERATION.match(message)
            client.pushes.append((at, int(found[1]) if found else -1, backlog_in(message)))
    except websockets.ConnectionClosed as exc:
        client.closed = f"closed {exc.rcvd.code if exc.rcvd else '?'}"
    else:
        client.closed = "closed by the server"


async def connect(url: str, cookie: str, count: int) -> tuple[list[Any], list[Client]]:
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one() -> Any:
        async with gate:
            return await websockets.connect(
                url.replace("http://", "ws://") + "/ws/live/?view=overview",
                additional_headers={"Cookie": cookie, "Origin": url},
                max_size=None,
                open_timeout=60,
            )

    sockets = await asyncio.gather(*(one() for _ in range(count)))
    return list(sockets), [Client() for _ in sockets]


# -- memory -----------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def rss_mb(pid: int) -> tuple[float, int]:
    """(RSS in MB summed over `pid`'s process tree, processes in it)."""
    total, pids = 0.0, tree(pid)
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total, len(pids)


# -- the browser -------------------------------------------------------------------

OBSERVE = """sel => {
  window.soakSeen = [];
  let last = null;
  const read = () => {
    const cell = document.querySelector(sel);
    const value = cell ? parseInt(cell.textContent.replace(/,/g, ''), 10) : null;
    if (value !== last) { last = value; window.soakSeen.push([Date.now(), value]); }
  };
  new MutationObserver(read).observe(document.getElementById('stream'),
    {subtree: true, childList: true, characterData: true});
  read();
}"""


async def in_browser(
    url: str, changer: Changer, interval: float, changes: int
) -> tuple[list[tuple[Change, float]], int]:
    """(change, when its DOM update came) for each of `changes` changes, and how many
    did not show within 30 s."""
    shown: list[tuple[Change, float]] = []
    late = 0
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=devservices.chromium(install=True), args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.goto(f"{url}/login/")
        await page.fill("input[name=username]", "admin")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{url}/")
        sel = f'tr[data-key="{KEY}"] td.backlog'
        await page.locator(sel).wait_for(timeout=30_000)
        await page.evaluate(OBSERVE, sel)
        await asyncio.sleep(interval)
        for _ in range(changes):
            await asyncio.sleep(random.uniform(0, interval))
            change = await asyncio.to_thread(changer.publish, random.randint(1, 9))
            # Polled from here: the observer has the time already, and a page's
            # requestAnimationFrame (wait_for_function's polling) may never fire headless.
            at, deadline = None, time.time() + 30
            while at is None and time.time() < deadline:
                await asyncio.sleep(0.25)
                seen = await page.evaluate("window.soakSeen")
                at = next(
                    (t / 1000 for t, b in seen if b is not None and b >= change.backlog), None
                )
            if at is None:
                late += 1
            else:
                shown.append((change, at))
        await browser.close()
    changer.settle()
    return shown, late


# -- the report -----------------------------------------------------------------------


def ms_row(label: str, values: list[float]) -> str:
    p = [percentile(values, q) for q in (50, 95, 99)]
    return f"  {label:44}{p[0]:>8.0f}{p[1]:>8.0f}{p[2]:>8.0f}{len(values):>9}"


def collections(database: Path, since: float, until: float) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT count(*) FROM dashboard_collection WHERE ts >= ? AND ts < ?",
            (int(since), int(until)),
        ).fetchone()
    return int(row[0])


def report(
    clients: list[Client],
    changer: Changer,
    began: float,
    ended: float,
    interval: float,
    database: Path,
) -> bool:
    minutes = (ended - began) / 60
    # The generations first pushed within the window, each looked for in everything a
    # client got: a push that reached some clients just after the window still counts.
    first: dict[int, float] = {}
    for c in clients:
        for at, g, _ in c.pushes:
            first[g] = min(at, first.get(g, at))
    window = [g for g, at in first.items() if began <= at <= ended and g >= 0]
    expected = set(range(min(window), max(window) + 1)) if window else set()
    seen_by = [{g for _, g, _ in c.pushes} & expected for c in clients]
    never = expected - set().union(*seen_by)
    missed = [len(expected - g) for g in seen_by]
    lost = sum(len(expected - never - g) for g in seen_by)
    unnumbered = sum(1 for c in clients for _, g, _ in c.pushes if g < 0)
    counts = [len(g) for g in seen_by]
    print(f"\nclients {len(clients)}, {minutes:.1f} minutes, interval {interval:g} s")
    print(
        f"updates per client: min {min(counts)}, median {sorted(counts)[len(counts) // 2]}, "
        f"max {max(counts)}; collections stored in the window: "
        f"{collections(database, began, ended)}; generations pushed in it: {len(window)}"
    )
    print(
        f"generations missed per client: total {sum(missed)}, max {max(missed)} (never "
        f"pushed to anyone: {len(never)}; pushed but lost on the way to a client: {lost}; "
        f"pushes without a number: {unnumbered})"
    )
    arrivals: dict[int, list[float]] = {}
    for c in clients:
        for at, g, _ in c.pushes:
            if g in expected:
                arrivals.setdefault(g, []).append(at)
    spread = [(max(a) - min(a)) * 1000 for a in arrivals.values()]
    rowless = sum(1 for c in clients for _, g, b in c.pushes if g in expected and b is None)
    print(
        f"one push from its first client to its last: p50 {percentile(spread, 50):.0f} ms, "
        f"p95 {percentile(spread, 95):.0f} ms; pushes without the queue's row: {rowless}"
    )
    closed = [c.closed for c in clients if c.closed]
    print(
        f"sockets closed early: {len(closed)}{' (' + ', '.join(closed[:5]) + ')' if closed else ''}"
    )
    # The first fill came before Sluice started, and a change in the last moments may
    # not have reached anyone yet: leave those out.
    changes = [c for c in changer.changes if began <= c.at < ended - interval - 6]
    from_publish, from_shown, broker_delay, not_shown = [], [], [], 0
    for change in changes:
        if change.shown is not None:
            broker_delay.append((change.shown - change.at) * 1000)
        for client in clients:
            got = client.first_showing(change, ended + 30)
            if got is None:
                not_shown += 1
                continue
            from_publish.append((got - change.at) * 1000)
            if change.shown is not None:
                from_shown.append((got - change.shown) * 1000)
    print(f"\nchanges: {len(changes)}; (client, change) pairs never shown: {not_shown}")
    print(f"  {'ms':44}{'p50':>8}{'p95':>8}{'p99':>8}{'samples':>9}")
    print(ms_row("publish → broker's count shows it", broker_delay))
    print(ms_row("broker shows change → client update", from_shown))
    print(ms_row("publish → client update (end to end)", from_publish))
    if from_shown:
        print(
            f"fastest broker change → client update: {min(from_shown):.0f} ms (about the "
            "path from a collection's read to the clients, without the wait for a collection)"
        )
    target = interval * 1000 + SLACK_MS
    p95 = percentile(from_shown, 95)
    latency_ok = p95 <= target and not_shown == 0
    print(
        f"p95 broker change → client update {p95:.0f} ms, target ≤ interval + {SLACK_MS:.0f} ms "
        f"= {target:.0f} ms: {'PASS' if latency_ok else 'FAIL'}"
    )
    missed_ok = sum(missed) == 0 and unnumbered == 0 and not closed
    print(f"no update missed: {'PASS' if missed_ok else 'FAIL'}")
    return latency_ok and missed_ok


def memory_report(samples: list[tuple[str, dict[str, tuple[float, int]]]]) -> bool:
    print(f"\nRSS (MB, process tree; processes){'':6}" + "".join(f"{s:>14}" for s, _ in samples))
    flat = True
    for name in samples[0][1]:
        cells = "".join(f"{m[name][0]:>9.0f} ({m[name][1]})" for _, m in samples)
        start, end = samples[0][1][name][0], samples[-1][1][name][0]
        ok = end <= start * MEMORY_RATIO + MEMORY_MB
        flat = flat and ok
        print(f"  {name:38}{cells}  {'PASS' if ok else 'FAIL'}")
    print(
        f"memory flat (end ≤ start × {MEMORY_RATIO} + {MEMORY_MB:.0f} MB): {'PASS' if flat else 'FAIL'}"
    )
    return flat


def dump(path: Path, clients: list[Client], changer: Changer, began: float) -> None:
    """The raw timeline, seconds from the start, for a closer look at a slow change."""
    path.write_text(
        json.dumps(
            {
                "changes": [
                    (c.backlog, c.at - began, (c.shown or 0) - began) for c in changer.changes
                ],
                "broker_counts": [(t - began, n) for t, n in changer.counts],
                "client_0": [(t - began, g, b) for t, g, b in clients[0].pushes],
            }
        )
    )


# -- the run ------------------------------------------------------------------------


async def soak(
    url: str,
    cookie: str,
    args: argparse.Namespace,
    changer: Changer,
    processes: dict[str, int],
    database: Path,
) -> None:
    started = time.monotonic()
    sockets, clients = await connect(url, cookie, args.clients)
    print(f"{len(sockets)} websockets connected in {time.monotonic() - started:.1f} s")
    readers = [asyncio.create_task(listen(ws, c)) for ws, c in zip(sockets, clients, strict=True)]
    await asyncio.sleep(2 * args.interval)  # the first pushes after connecting

    def memory() -> dict[str, tuple[float, int]]:
        return {name: rss_mb(pid) for name, pid in processes.items()}

    seconds = args.minutes * 60
    began, cpu = time.time(), time.process_time()
    samples = [("start", memory())]
    changes = threading.Thread(
        target=schedule, args=(changer, args.interval, began + seconds), daemon=True
    )
    changes.start()
    await asyncio.sleep(seconds / 2)
    samples.append(("middle", memory()))
    await asyncio.sleep(seconds / 2)
    ended, cpu = time.time(), time.process_time() - cpu
    samples.append(("end", memory()))
    await asyncio.to_thread(changes.join)
    await asyncio.sleep(args.interval + 6)  # the last changes reach the clients
    changer.settle()
    ok = report(clients, changer, began, ended, args.interval, database)
    if args.dump:
        dump(args.dump, clients, changer, began)
    ok = memory_report(samples) and ok
    print(
        f"this bench's own CPU over the window (the clients and the prober): "
        f"{cpu / (ended - began) * 100:.0f} % of one core"
    )
    if args.browser_changes:
        print(f"\nChromium, {args.browser_changes} changes, the {args.clients} clients connected:")
        try:
            budget = args.browser_changes * (2 * args.interval + 31) + 90
            shown, late = await asyncio.wait_for(
                in_browser(url, changer, args.interval, args.browser_changes), budget
            )
        except (TimeoutError, PlaywrightError) as exc:
            print(f"  the browser's run failed: {type(exc).__name__}: {exc}")
        else:
            dom = [(at - (c.shown or c.at)) * 1000 for c, at in shown]
            print(f"  {'ms':44}{'p50':>8}{'p95':>8}{'p99':>8}{'samples':>9}")
            print(ms_row("broker shows change → DOM updated", dom))
            print(
                ms_row(
                    "publish → DOM updated (end to end)", [(at - c.at) * 1000 for c, at in shown]
                )
            )
            target = args.interval * 1000 + SLACK_MS
            holds = percentile(dom, 95) <= target and not late
            print(
                f"p95 broker change → DOM updated, target ≤ {target:.0f} ms; {late} not shown "
                f"within 30 s: {'PASS' if holds else 'FAIL'}"
            )
    print(f"\noverall: {'PASS' if ok else 'FAIL'} (the websocket clients and memory)")
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=int, default=2, help="collection interval, seconds")
    parser.add_argument("--browser-changes", type=int, default=10, help="0: no browser")
    parser.add_argument("--dump", type=Path, help="write the changes and one client's pushes here")
    args = parser.parse_args()
    os.environ.pop("REDIS_URL", None)  # a private Redis: nothing shared with other runs
    rabbit = devservices.rabbitmq()
    with ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="sluice-bench-soak-"))
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        server = bench_rabbitmq.Broker(
            rabbit["management_url"], rabbit["amqp_url"], rabbit["username"], rabbit["password"]
        )
        stack.callback(server.session.close)
        bench_rabbitmq.drop_vhost(server, VHOST)
        server.api("PUT", "/api/vhosts/" + bench_rabbitmq.vhost_path(VHOST))
        server.api(
            "PUT",
            "/api/permissions/" + bench_rabbitmq.vhost_path(VHOST, server.username),
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        stack.callback(cleanup, f"vhost {VHOST}", lambda: bench_rabbitmq.drop_vhost(server, VHOST))
        changer = Changer(rabbit)
        stack.callback(changer.close)
        changer.publish(START_BACKLOG)
        proxy = OneVhost(server.management_url, PROMETHEUS_URL)
        stack.callback(proxy.close)
        config = state / "brokers.toml"
        config.write_text(
            f'[[broker]]\nname = "soak"\nkind = "rabbitmq"\n'
            f'management_url = "{proxy.url}"\nprometheus_url = "{proxy.url}"\n'
            f'username = "{server.username}"\n'
            f'password = "${{SLUICE_BENCH_RABBITMQ_PASSWORD}}"\ninterval = {args.interval}\n'
        )
        port = devservices.free_port()
        database = state / "sluice.sqlite3"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SLUICE_STATE_DIR": str(state),
            "DATABASE_URL": f"sqlite:///{database}",
            "REDIS_URL": devservices.redis(),
            "SLUICE_CONFIG": str(config),
            "SLUICE_BENCH_RABBITMQ_PASSWORD": rabbit["password"],
            "SLUICE_ADMIN_PASSWORD": PASSWORD,
            # One admin signs every client in; the cap per user would refuse most.
            "SLUICE_WS_MAX_PER_USER": str(args.clients + 10),
        }
        url, started = run_sluice(port, env, state / "logs", stack)

        def collected() -> bool:
            with contextlib.suppress(sqlite3.Error):
                return collections(database, 0, time.time() + 1) >= 2
            return False

        wait_until("the first collections", collected, 120)
        session = sign_in(url)
        stack.callback(session.close)
        cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
        by_name = {p.name: p.proc.pid for p in started}
        processes = {
            "web tier (uvicorn supervisor + workers)": by_name["web"],
            "Celery worker (main + pool)": by_name["worker"],
        }
        print(
            f"Sluice at {url}, broker `soak` every {args.interval} s; {args.clients} clients "
            f"for {args.minutes:g} minutes"
        )
        asyncio.run(soak(url, cookie, args, changer, processes, database))


if __name__ == "__main__":
    main()
