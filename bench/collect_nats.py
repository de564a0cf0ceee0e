"""Benchmark: what one NATS collection costs next to the same HTTP requests sent bare.

Starts a private nats-server with JetStream and monitoring as `python -m
dashboard.devservices` does (or uses `--monitoring-url`/`--url`), creates
`--streams` streams with `--consumers` durable pull consumers each, publishes
`--messages` messages to every stream and lets the consumers read different
amounts (some caught up, some with messages pending, some with messages
delivered and not acknowledged). Then it times, in interleaved rounds:

    reference  a tight script fetching the same endpoints with the same
               parameters on one keep-alive `requests.Session`, decoding the
               JSON and nothing else: /varz, /healthz, /jsz (accounts,
               streams, consumers, config, stream-leader-only), /connz;
    ours       `Nats.collect()`: the same requests, mapped to dataclasses;
    topology   `Nats.collect(topology=True)`, which adds /subsz (the server
               has no routes, gateways or leaf nodes), against the reference
               plus /subsz.

and prints the medians and ours ÷ reference (target: ours ≤ 2 s). Streams are
deleted at the end unless `--keep`.

    .venv/bin/python bench/collect_nats.py [--streams 200] [--consumers 5] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats
import requests
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from timing import cycle_table, interleaved

from brokers.nats.adapter import CONNZ_PARAMS, JSZ_PARAMS, Nats

PREFIX = "BENCH"
TARGET_SECONDS = 2.0


# -- setup and teardown -------------------------------------------------------


def stream_name(i: int) -> str:
    return f"{PREFIX}_{i:04d}"


async def setup(url: str, streams: int, consumers: int, messages: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await cleanup(js)
        for i in range(streams):
            name = stream_name(i)
            await js.add_stream(StreamConfig(name=name, subjects=[f"bench.{i}.>"]))
            acks = [js.publish(f"bench.{i}.m{m % 3}", b"payload %d" % m) for m in range(messages)]
            await asyncio.gather(*acks)
            for c in range(consumers):
                durable = f"c{c}"
                await js.add_consumer(
                    name, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
                )
                # c0 untouched (all pending), c1 caught up, c2 half read, c3 read and
                # not acknowledged (in flight), c4 a few read.
                take = {0: 0, 1: messages, 2: messages // 2, 3: 3, 4: 2}.get(c % 5, 0)
                if not take:
                    continue
                sub = await js.pull_subscribe_bind(durable=durable, stream=name)
                for msg in await sub.fetch(take, timeout=5):
                    if c % 5 != 3:
                        await msg.ack()
                await sub.unsubscribe()
        await nc.flush()
    finally:
        await nc.close()


async def cleanup(js: Any) -> None:
    for info in await js.streams_info():
        if info.config.name.startswith(PREFIX):
            await js.delete_stream(info.config.name)


async def teardown(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await cleanup(nc.jetstream())
    finally:
        await nc.close()


# -- the reference: the same requests, bare ------------------------------------


class Reference:
    """The HTTP requests of one collection, decoded and nothing else."""

    def __init__(self, monitoring_url: str, topology: bool = False) -> None:
        self.base = monitoring_url.rstrip("/")
        self.session = requests.Session()
        self.calls: list[tuple[str, dict[str, str] | None]] = [
            ("/varz", None),
            ("/healthz", None),
            ("/jsz", JSZ_PARAMS),
            ("/connz", CONNZ_PARAMS),
        ]
        if topology:
            self.calls.append(("/subsz", None))

    def run(self) -> int:
        size = 0
        for path, params in self.calls:
            response = self.session.get(self.base + path, params=params, timeout=30)
            size += len(response.content)
            response.json()
        return size

    def close(self) -> None:
        self.session.close()


def bench(monitoring_url: str, rounds: int) -> dict[str, float]:
    reference = Reference(monitoring_url)
    reference_topology = Reference(monitoring_url, topology=True)
    adapter = Nats(monitoring_url, timeout=30)
    try:
        size = reference.run()
        snapshot = adapter.collect()
        topo = adapter.collect(topology=True)
        kinds = [d.kind for d in snapshot.destinations]
        print(
            f"one collection reads {size / 1e6:.2f} MB of JSON; collect() maps "
            f"{kinds.count('stream')} streams and {kinds.count('consumer')} consumers in "
            f"{snapshot.requests} requests ({topo.requests} with topology)"
        )
        runs: dict[str, Callable[[], object]] = {
            "reference": reference.run,
            "ours": adapter.collect,
            "reference+subsz": reference_topology.run,
            "topology": lambda: adapter.collect(topology=True),
        }
        times = interleaved(runs, rounds)
    finally:
        adapter.close()
        reference.close()
        reference_topology.close()

    wall = cycle_table(
        times,
        {
            "reference": "reference requests",
            "ours": "collect()",
            "reference+subsz": "reference requests + /subsz",
            "topology": "collect(topology=True)",
        },
    )
    ratio = wall["ours"] / wall["reference"]
    ratio_topology = wall["topology"] / wall["reference+subsz"]
    ok = wall["ours"] <= TARGET_SECONDS and wall["topology"] <= TARGET_SECONDS
    print(
        f"\nours ÷ reference = {ratio:.2f}; with topology {ratio_topology:.2f}  "
        f"(target: ≤ {TARGET_SECONDS:g} s)  {'OK' if ok else 'OVER'}"
    )
    return {**wall, "ratio": ratio, "ratio_topology": ratio_topology}


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--consumers", type=int, default=5, help="per stream")
    parser.add_argument("--messages", type=int, default=10, help="per stream")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--url", default="", help="a NATS client URL to use")
    parser.add_argument("--monitoring-url", default="", help="its monitoring URL")
    parser.add_argument("--keep", action="store_true", help="leave the streams behind")
    args = parser.parse_args()

    url, monitoring_url = args.url, args.monitoring_url
    if not (url and monitoring_url):
        from dashboard import devservices

        server = devservices.nats()  # stopped at exit
        url, monitoring_url = server["url"], server["monitoring_url"]
    print(f"NATS at {url}, monitoring at {monitoring_url}")
    started = time.perf_counter()
    asyncio.run(setup(url, args.streams, args.consumers, args.messages))
    print(
        f"created {args.streams} streams × {args.consumers} consumers with {args.messages} "
        f"messages each in {time.perf_counter() - started:.1f} s"
    )
    try:
        bench(monitoring_url, args.rounds)
    finally:
        if not args.keep:
            asyncio.run(teardown(url))
            print("deleted the bench streams")


if __name__ == "__main__":
    main()
