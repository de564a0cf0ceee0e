"""Broker HTTP requests per minute with 1 and with 20 websocket viewers of a running Sluice.

A counting proxy sits between Sluice and the RabbitMQ management API and
forwards every request unchanged; Sluice runs as `make run` starts it (daphne,
Celery worker and beat) with the proxy as its broker's management URL. The
count of proxied requests over the same window, with 1 and with 20 viewers
connected, must be equal: viewers never cause broker calls.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import requests
import websockets

from dashboard import devservices


class CountingProxy:
    """Forwards GETs to `upstream`, counting them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.log: list[tuple[float, str]] = []  # (when, path) of every request
        self._lock = threading.Lock()
        proxy = self
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                with proxy._lock:
                    proxy.log.append((time.monotonic(), self.path))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "accept")
                }
                answer = session.get(proxy.upstream + self.path, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                self.send_header(
                    "Content-Type", answer.headers.get("Content-Type", "application/json")
                )
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

    def per_minute(self, since: float, until: float) -> tuple[float, int]:
        """Requests per minute over the whole collections between `since` and `until`.

        Each collection starts with /api/overview; counting from one such start
        to a later one covers whole collections, so the figure has no jitter
        from where a window happens to cut a collection.
        """
        with self._lock:
            log = [(t, p) for t, p in self.log if since <= t <= until]
        starts = [t for t, p in log if p.startswith("/api/overview")]
        if len(starts) < 2:
            return float("nan"), 0
        first, last = starts[0], starts[-1]
        count = sum(1 for t, _ in log if first <= t < last)
        return count * 60.0 / (last - first), len(starts) - 1


def _login(url: str, password: str) -> str:
    session = requests.Session()
    page = session.get(f"{url}/login/", timeout=10)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "no login form"
    session.post(
        f"{url}/login/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": match.group(1)},
        headers={"Referer": f"{url}/login/"},
        timeout=10,
    )
    return "; ".join(f"{k}={v}" for k, v in session.cookies.items())


async def _count_with_viewers(
    url: str, cookie: str, proxy: CountingProxy, viewers: int, seconds: float
) -> tuple[float, int, int]:
    """(broker requests per minute, collections, fragments received) with `viewers` sockets open."""
    base = url.replace("http://", "ws://") + "/ws/live/?view="
    # Each viewer watches a different view, the worst case for rendering.
    views = ["overview"] + [f"overview?q=q{i:03d}" for i in range(1, viewers)]
    sockets = [
        await websockets.connect(
            base + quote(view, safe=""),
            additional_headers={"Cookie": cookie, "Origin": url},
            max_size=None,
        )
        for view in views
    ]
    received = 0

    async def drain(ws: websockets.ClientConnection) -> None:
        nonlocal received
        async for _ in ws:
            received += 1

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    await asyncio.sleep(2)  # let the first push after connecting settle
    start = time.monotonic()
    await asyncio.sleep(seconds)
    rate, collections = proxy.per_minute(start, time.monotonic())
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    return rate, collections, received


def bench_viewers(
    management_url: str, username: str, password: str, seconds: float, interval: int = 5
) -> dict[str, float]:
    proxy = CountingProxy(management_url)
    state = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    config = state / "brokers.toml"
    config.write_text(
        f'[[broker]]\nname = "bench"\nkind = "rabbitmq"\nmanagement_url = "{proxy.url}"\n'
        f'username = "{username}"\npassword = "${{SLUICE_BENCH_PASSWORD}}"\ninterval = {interval}\n'
    )
    port = devservices.free_port()
    admin_password = "bench-admin-pw-1"
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(state),
        "DATABASE_URL": f"sqlite:///{state / 'sluice.sqlite3'}",
        "REDIS_URL": devservices.redis().rsplit("/", 1)[0] + "/4",
        "SLUICE_CONFIG": str(config),
        "SLUICE_BENCH_PASSWORD": password,
        "SLUICE_ADMIN_PASSWORD": admin_password,
        # Exchanges and bindings are refreshed once a minute; a window that
        # catches one refresh and a window that does not would differ by it.
        "SLUICE_TOPOLOGY_INTERVAL": "3600",
    }
    processes = devservices.start_sluice(port, env, state / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        cookie = _login(url, admin_password)
        time.sleep(2 * interval)  # the first collection, then steady state
        one, cycles_one, got_one = asyncio.run(_count_with_viewers(url, cookie, proxy, 1, seconds))
        twenty, cycles_twenty, got_twenty = asyncio.run(
            _count_with_viewers(url, cookie, proxy, 20, seconds)
        )
    finally:
        for process in processes:
            devservices.stop(process)
        proxy.close()
    print(f"\nBroker HTTP requests per minute (window {seconds:.0f} s, interval {interval} s):")
    print(
        f"  1 viewer:    {one:7.1f} /min over {cycles_one} collections  ({got_one} live updates received)"
    )
    print(
        f"  20 viewers:  {twenty:7.1f} /min over {cycles_twenty} collections  ({got_twenty} live updates received)"
    )
    ratio = twenty / one if one else float("nan")
    print(f"  ratio 20 ÷ 1 viewers: {ratio:.2f}  (target: 1.00, equal)")
    return {"one": one, "twenty": twenty, "ratio": ratio}
