"""Benchmark: every triage detector after a collection, next to that collection.

Two modes, both on a scratch SQLite database (and a private Redis for the
cache, unless REDIS_URL names one), with brokers collected every 5 s.

The default, synthetic mode stores made-up collections; nothing reaches a
broker. Its three brokers:

    RabbitMQ  `--queues` queues (5,000), their details as RabbitMQ's monitor fills
              them: limits from arguments and policies, ack and redeliver rates,
              ready bytes, consumers with their prefetch; a topology binding the
              dead-letter exchange to its queues;
    Kafka     `--groups` groups (300) over `--partitions` partitions (1,200): one
              topic each, plus three dead-letter topics nobody reads; groups with
              their partitions, topics, lag in seconds and members;
    NATS      `--consumers` consumers (1,000), five per stream, plus two
              dead-letter streams; consumers with num_redelivered, their
              stream's limits and the rest of what /jsz tells.

It stores WARMUP collections of each at stamped times INTERVAL apart, each
followed by an evaluation as the workers do, so samples fill the window and
incidents open. The figures move: some queues and groups grow, some drain,
most are parked or keep up; a few lose their consumers, stall, redeliver, or
receive dead letters, and some growing queues are emptied during the timed
rounds, so incidents resolve too. Then it times, in interleaved rounds of one
more collection per broker (the times run on, so the window slides):

    store   `collector.store()` of the collection: the database side of one
            collection (the kind's settling and status rules, rows, samples);
    triage  `dashboard.triage.evaluate.evaluate(broker, now, destinations=...)`
            with the rows the store returned, as the worker runs it: every
            detector of the broker and its kind, and the Incident rows kept in step.

and prints the medians (wall and this process's CPU), triage ÷ store per
broker and for all three, the incidents found, and PASS or FAIL against the
target: triage at most 10% of the collection, judged on the wall medians.
What this ratio compares: triage against the database side of the collection
alone. The broker's side (its requests and their mapping to
dataclasses: bench/collect_rabbitmq.py, collect_kafka.py, collect_nats.py)
and the kind's after_collect are not in it, so the whole collection takes
longer than "store" and the real share is smaller than the one printed.

The NATS broker has no client URL, so the detector counting dead-letter
advisories reads nothing: in a deployment it makes a connection and one
STREAM.INFO per evaluation. `--nats-url nats://host:4222` points it at a real
server to time that too (counts are read only if the capture stream exists).

`--real` measures the target as it is stated, on the real brokers of this
machine: triage against the whole collection. It sets up what the collect
benchmarks set up, with their own code:

    RabbitMQ  `--queues` queues (5,000) in the vhost `sluice-bench` of the
              machine's RabbitMQ, a tenth of them holding 3 messages
              (bench/collect_rabbitmq.py); the adapter has no vhost filter, so
              the Broker collects every vhost, and the queues other users have
              in `/` are collected too;
    Kafka     `--partitions` // 6 topics (200) of 6 partitions and `--groups`
              groups (300) with committed offsets on two topics each
              (bench/collect_kafka.py), on the Kafka named by `--bootstrap` or
              $SLUICE_TEST_KAFKA_BOOTSTRAP, else on a private Tansu started here;
    NATS      `--consumers` // 5 streams (200) of 5 durable consumers each
              (bench/collect_nats.py) on a private nats-server started here,
              with its client URL, so that the advisory count is read for real
              (the collection's after_collect creates the capture stream).

A Broker row points at each. WARMUP real collections of each
(`collector.collect(broker, now=...)`, each followed by an evaluation) fill the
window: the figures are the brokers' own, stamped INTERVAL apart so the
window fills without waiting. Then, in interleaved rounds (`--rounds`, 5),
each broker in turn:

    collect  `collector.collect(broker, now)`: the whole collection, the
             broker's side (the adapter's requests and mapping; the Broker's
             collect_ms) and storing it (collector.store, after_collect);
    triage   `evaluate(broker, now, destinations=...)` at the same stamp, with the
             rows the collection stored, as the worker runs it.

and prints the medians, triage ÷ collection per broker and for all three
(PASS or FAIL against 10%, on the wall medians: the target's own ratio), and
beside it triage ÷ storing, storing being the collection less its broker
side: the real-figures counterpart of the synthetic mode's ratio. Then, unless
`--no-synthetic`, it runs the synthetic mode too (7 rounds, in the same
database beside the real brokers' rows) and prints its triage ÷ store last,
under the verdict: made-up figures with more incidents, against the database
side alone.

One collection a minute also reads the topology (SLUICE_TOPOLOGY_INTERVAL,
60 s of stamped time); the output says how many of the timed ones did.
Requests may take 30 s (SLUICE_BROKER_TIMEOUT, unless set). A kind whose setup
fails is left out with the reason printed; the others still run. What the run
made is removed at the end, on failure or Ctrl-C too: the vhost, this run's
topics and groups, the streams, the scratch database; the servers started
here stop at exit.

    .venv/bin/python bench/triage.py [--queues 5000] [--groups 300] [--partitions 1200]
        [--consumers 1000] [--rounds 7] [--nats-url URL] [--profile]
    .venv/bin/python bench/triage.py --real [--rounds 5] [--bootstrap HOST:PORT] [--profile]
        [--no-synthetic] [--queues 5000] [--groups 300] [--partitions 1200] [--consumers 1000]

`--profile` then runs one more collection per broker and prints where its
evaluation's time goes (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import scratch_django
from timing import Timed, cycle_table, timed

from brokers.base import Binding, Consumer, Health, Node, Snapshot, Topology
from brokers.base import Destination as Dest
from brokers.nats.monitor import NatsHealth

TARGET = 0.10
INTERVAL = 5  # seconds between collections
WARMUP = 10  # collections stored and evaluated before timing: a full window
LOST_AT = 6  # the collection at which the few lose their consumers
CAUGHT_UP_AT = WARMUP + 3  # when some growing queues are emptied (in the timed rounds)
PER_STREAM = 5  # NATS consumers per stream


# -- RabbitMQ ------------------------------------------------------------------------


def rabbitmq_snapshot(i: int, queues: int) -> Snapshot:
    dests = tuple(_queue(n, i) for n in range(queues))
    dlqs = [d for d in dests if d.name.endswith(".dlq")]
    topology = None
    if i == 0:  # read on the topology cycle, kept until the next
        topology = Topology(
            vhosts=("/",),
            bindings=tuple(Binding("bench.dlx", d.name, "queue", d.name, vhost="/") for d in dlqs),
        )
    return Snapshot(
        health=Health(
            version="bench",
            nodes=(Node("rabbit@bench", mem_used=2**30, mem_limit=2**32, disk_free=2**36),),
            backlog=sum(d.backlog for d in dests),
            in_flight=sum(d.in_flight for d in dests),
            consumers=sum(d.consumers for d in dests),
            in_rate=sum(d.in_rate or 0 for d in dests),
            out_rate=sum(d.out_rate or 0 for d in dests),
        ),
        destinations=dests,
        topology=topology,
        requests=3 + -(-queues // 500),
    )


def _queue(n: int, i: int) -> Dest:
    """Queue `n` at collection `i`: its role by n, its figures moving with i."""
    t = i * INTERVAL
    name = f"bench.queue.{n:05d}"
    qtype, policy, limits = "classic", "", {}
    consumers, prefetch, unacked, again = 0, 0, 0, 0.0
    in_rate = out_rate = 0.0
    backlog = n % 977 + 1  # parked: nobody reads it, nothing arrives
    if n % 1000 == 4:  # loses its consumers at LOST_AT; messages keep arriving
        consumers, prefetch, in_rate = (2, 50, 3.0) if i < LOST_AT else (0, 0, 3.0)
        out_rate = in_rate if consumers else 0.0
        unacked = 4 if consumers else 0
        backlog = 40 + int(3.0 * max(0, t - LOST_AT * INTERVAL))
    elif n % 1000 == 5:  # stalled: every consumer at its prefetch, nothing acknowledged
        consumers, prefetch, unacked, backlog = 1, 20, 20, 800
    elif n % 1000 == 6:  # a redelivery storm on a quorum queue
        qtype, policy, consumers, prefetch, unacked = "quorum", "bench-retry", 2, 10, 15
        in_rate, out_rate, again, backlog = 2.0, 10.0, 8.0, 30
        limits = {"delivery-limit": {"value": 20, "source": "policy"}}
    elif n % 1000 == 7:  # a dead-letter queue receiving
        name += ".dlq"
        in_rate, backlog = 0.4, 10 + 2 * i
    elif n % 100 == 0:  # growing; every other one toward its max-length, some caught up later
        consumers, prefetch, unacked = 1, 50, 50
        in_rate, out_rate, backlog = 12.0, 8.0, 100 + 4 * t
        if n % 400 == 100 and i >= CAUGHT_UP_AT:
            out_rate, backlog = 12.0, 0
        elif n % 200 == 0:
            policy, limits = "bench-limits", {"max-length": {"value": 20000, "source": "policy"}}
    elif n % 100 == 1:  # draining
        consumers, prefetch, unacked = 2, 100, 40
        in_rate, out_rate, backlog = 5.0, 11.0, max(0, 5000 - 6 * t)
    elif n % 100 < 50:  # keeping up, its backlog going up and down a little
        consumers, prefetch, unacked = 1 + n % 3, 25, n % 7
        in_rate = out_rate = float(n % 50 + 1)
        backlog = n % 7 + 3 * (i % 2)
        if n % 100 < 20:
            policy = "bench-dlx"
            limits = {"dead-letter-exchange": {"value": "bench.dlx", "source": "policy"}}
    ack_rate = max(0.0, out_rate - again)
    published = n * 1000 + int(in_rate * t)
    delivered = n * 990 + int(out_rate * t)
    return Dest(
        kind="queue",
        name=name,
        key=f"//{name}",
        vhost="/",
        type=qtype,
        state="running",
        backlog=backlog,
        in_flight=unacked,
        consumers=consumers,
        consumer_capacity=1.0 if consumers else None,
        in_rate=in_rate,
        out_rate=out_rate,
        in_total=published,
        out_total=delivered,
        removed_total=n * 990 + int(ack_rate * t),
        policy=policy,
        effective_policy={k: v["value"] for k, v in limits.items()},
        consumer_details=tuple(
            Consumer(
                tag=f"ctag-{n}-{c}",
                channel=f"10.0.0.{c + 1}:5{n % 10000:04d} -> 10.0.1.1:5672 (1)",
                prefetch=prefetch,
                client=f"worker-{c}",
            )
            for c in range(consumers)
        ),
        extra={
            "ack_rate": ack_rate,
            "redeliver_rate": again,
            "messages": backlog + unacked,
            "message_bytes": (backlog + unacked) * 512,
            "message_bytes_ready": backlog * 512,
            "memory": 20000 + backlog * 600,
            "node": "rabbit@bench",
            "durable": True,
            "auto_delete": False,
            "exclusive": False,
            "idle_since": None if in_rate or out_rate else "2024-05-01T10:00:00Z",
            "limits": limits,
        },
    )


# -- Kafka ---------------------------------------------------------------------------


def kafka_snapshot(i: int, groups: int, partitions: int) -> Snapshot:
    per = max(1, partitions // groups)
    dests = [*(_topic(g, i, per) for g in range(groups)), *(_dead_topic(k, i) for k in range(3))]
    dests += [_group(g, i, per) for g in range(groups)]
    under = sum(d.extra.get("under_replicated", 0) for d in dests if d.kind == "topic")
    return Snapshot(
        health=Health(
            nodes=tuple(Node(f"bench-{b}:9092") for b in (1, 2, 3)),
            backlog=sum(d.backlog for d in dests if d.kind == "group"),
            consumers=sum(d.consumers for d in dests if d.kind == "group"),
            in_total=sum(d.in_total or 0 for d in dests if d.kind == "topic"),
            out_total=sum(d.out_total or 0 for d in dests if d.kind == "group"),
            facts={
                "cluster_id": "bench-cluster",
                "controller": "bench-1:9092",
                "api_version": "3.7",
                "brokers": 3,
                "topics": groups + 3,
                "partitions": groups * per + 3,
                "under_replicated": under,
                "offline": 0,
                "groups": groups,
            },
        ),
        destinations=tuple(dests),
        requests=8,
    )


def _produced(g: int) -> float:
    return float(1 + g % 5)  # records/s into each partition of topic g


def _end(g: int, p: int, t: float) -> int:
    return 1000 * (p + 1) + int(_produced(g) * t)


def _committed(g: int, p: int, i: int) -> int:
    """Group g's committed offset on partition p at collection i, by its role."""
    t = i * INTERVAL
    end = _end(g, p, t)
    if g % 20 == 0:  # committing, but slower than records arrive
        return _end(g, p, 0) - 5 + int(0.5 * _produced(g) * t)
    if g % 20 == 1:  # stalled: members joined, commits frozen
        return _end(g, p, 0) - 5
    if g % 50 == 2 and i >= LOST_AT:  # its members left
        return _end(g, p, (LOST_AT - 1) * INTERVAL) - 5
    return end - 5


def _topic(g: int, i: int, per: int) -> Dest:
    t = i * INTERVAL
    name = f"bench.topic.{g:03d}"
    under = 1 if g % 150 == 7 else 0
    ends = [_end(g, p, t) for p in range(per)]
    rows = [
        {
            "partition": p,
            "leader": 1 + p % 3,
            "replicas": [1, 2, 3],
            "isr": [1, 2] if under and p == 0 else [1, 2, 3],
            "under_replicated": bool(under and p == 0),
            "first": 0,
            "last": end,
            "messages": end,
            "size": end * 200,
        }
        for p, end in enumerate(ends)
    ]
    held = sum(ends)
    configs = {
        "cleanup.policy": {"value": "delete", "source": "default"},
        # Groups near retention read a topic that keeps an hour.
        "retention.ms": {"value": "3600000" if g % 20 == 3 else "604800000", "source": "topic"},
        # Growing groups run toward their topic's retention.bytes.
        "retention.bytes": {"value": "50000000" if g % 20 == 0 else "-1", "source": "topic"},
    }
    return Dest(
        kind="topic",
        key=f"topic/{name}",
        name=name,
        in_total=held,
        extra={
            "partitions": per,
            "replication_factor": 3,
            "messages": held,
            "under_replicated": under,
            "offline": 0,
            "partition_details": rows,
            "configs": configs,
            "size": held * 200,
            "size_note": "",
        },
    )


def _dead_topic(k: int, i: int) -> Dest:
    """A dead-letter topic nobody reads, receiving a record every other second or so."""
    name = f"bench.orders-{k}.DLT"
    last = 10 + 2 * i
    return Dest(
        kind="topic",
        key=f"topic/{name}",
        name=name,
        in_total=last,
        extra={
            "partitions": 1,
            "replication_factor": 3,
            "messages": last,
            "under_replicated": 0,
            "offline": 0,
            "partition_details": [
                {
                    "partition": 0,
                    "leader": 1,
                    "replicas": [1, 2, 3],
                    "isr": [1, 2, 3],
                    "under_replicated": False,
                    "first": 0,
                    "last": last,
                    "messages": last,
                    "size": last * 900,
                }
            ],
            "configs": {"cleanup.policy": {"value": "delete", "source": "default"}},
            "size": last * 900,
            "size_note": "",
        },
    )


def _group(g: int, i: int, per: int) -> Dest:
    t = i * INTERVAL
    topic = f"bench.topic.{g:03d}"
    lost = g % 50 == 2 and i >= LOST_AT
    error = "GROUP_AUTHORIZATION_FAILED" if g % 100 == 4 else ""
    members: list[dict[str, Any]] = [] if lost or error else [
        {
            "member_id": f"consumer-{g}-{m}-4f1c",
            "client_id": f"consumer-{g}-{m}",
            "host": f"/10.0.2.{m + 1}",
            "instance_id": "",
            "assignment": [[topic, list(range(m, per, 2))]],
        }
        for m in range(2)
    ]  # fmt: skip
    ends = [_end(g, p, t) for p in range(per)]
    commits = [_committed(g, p, i) for p in range(per)]
    lags = [max(0, end - committed) for end, committed in zip(ends, commits, strict=True)]
    # Behind in seconds: past an hour's retention for some, else as the lag takes to read.
    behind = [
        2000.0 + t if g % 20 == 3 else (2.5 + lag / _produced(g) if lag else 0.0) for lag in lags
    ]
    total = sum(lags)
    return Dest(
        kind="group",
        key=f"group/bench.group.{g:03d}",
        name=f"bench.group.{g:03d}",
        state="" if error else ("Stable" if members else "Empty"),
        backlog=total,
        lag=total,
        consumers=len(members),
        in_total=sum(ends),
        out_total=sum(commits),
        consumer_details=tuple(
            Consumer(tag=m["member_id"], channel=m["host"], client=m["client_id"]) for m in members
        ),
        extra={
            "topics": {topic: total},
            "partitions": [[topic, p, commits[p], ends[p], lags[p]] for p in range(per)],
            "lag_seconds": {
                "max": max(behind),
                "partitions": [[topic, p, behind[p]] for p in range(per)],
            },
            "members": members,
            "assignor": "range" if members else "",
            "protocol_type": "consumer",
            "coordinator": 1 + g % 3,
            "error": error,
            "out_of_range": [],
        },
    )


# -- NATS ----------------------------------------------------------------------------


def nats_snapshot(i: int, consumers: int) -> Snapshot:
    streams = -(-consumers // PER_STREAM)
    dests = [_stream(s, i) for s in range(streams)]
    dests += [_dead_stream(k, i) for k in range(2)]
    dests += [_consumer(j, i) for j in range(consumers)]
    readers = [d for d in dests if d.kind == "consumer"]
    return Snapshot(
        health=NatsHealth(
            version="2.10.18",
            nodes=(Node("nats-bench", mem_used=2**28),),
            backlog=sum(d.backlog for d in readers),
            in_flight=sum(d.in_flight for d in readers),
            consumers=sum(d.consumers for d in readers),
            in_total=10**6 + 5000 * i,
            out_total=10**6 + 4900 * i,
            facts={"jetstream": True, "streams": streams + 2, "consumers": consumers},
            healthz={"status": "ok", "error": ""},
            server={"connections": 40, "subscriptions": 1200, "slow_consumers": 0},
            connections={"total": 40, "limit": 1024, "rows": []},
        ),
        destinations=tuple(dests),
        requests=4,
    )


def _last_seq(s: int, t: float) -> int:
    return 1000 + int((2 + s % 4) * t)


def _stream_extra(messages: int, max_msgs: int, discard: str = "old") -> dict[str, Any]:
    return {
        "messages": messages,
        "bytes": messages * 300,
        "num_subjects": 4,
        "num_deleted": 0,
        "storage": "file",
        "replicas": 1,
        "first_seq": 1,
        "last_seq": messages,
        "oldest_age": 3600.0,
        "description": "",
        "created": "2024-05-01T10:00:00Z",
        "leader": "nats-bench",
        "cluster": "",
        "replica_state": [],
        "max_msgs": max_msgs,
        "max_bytes": -1,
        "max_age": 0.0,
        "max_msg_size": -1,
        "max_msgs_per_subject": -1,
        "discard": discard,
        "sealed": False,
        "mirror": "",
        "sources": [],
    }


def _stream(s: int, i: int) -> Dest:
    name = f"BENCH_{s:03d}"
    last = _last_seq(s, i * INTERVAL)
    # Streams of lagging consumers (every fourth) are bounded.
    extra = _stream_extra(last, 200_000 if s % 4 == 0 else -1)
    extra["subjects"] = [f"bench.{s}.>"]
    return Dest(
        kind="stream",
        key=f"stream/{name}",
        name=name,
        type="limits",
        consumers=PER_STREAM,
        in_total=last,
        extra=extra,
    )


def _dead_stream(k: int, i: int) -> Dest:
    name = f"ORDERS_{k}_DLQ"
    extra = _stream_extra(5 + i, -1)
    extra["subjects"] = [f"dlq.orders.{k}"]
    return Dest(
        kind="stream", key=f"stream/{name}", name=name, type="limits", in_total=5 + i, extra=extra
    )


def _consumer(j: int, i: int) -> Dest:
    """Consumer j (the (j % 5)th of stream j // 5) at collection i, by its role."""
    s, t = j // PER_STREAM, i * INTERVAL
    stream = f"BENCH_{s:03d}"
    name = f"worker-{j % PER_STREAM}"
    last, rate = _last_seq(s, t), float(2 + s % 4)
    readers, pending, ack_pending, redelivered = 1, 2, 1, 0
    if j % 20 == 0:  # lagging: acknowledges at half the rate messages arrive
        pending = 10 + int(0.5 * rate * t)
    elif j % 20 == 1:  # stalled: its ack floor frozen, pending piling up
        ack_pending = 10
        pending = last - (_last_seq(s, 0) - 20) - ack_pending
    elif j % 100 == 2 and i >= LOST_AT:  # its reader left
        readers, ack_pending = 0, 0
        frozen = _last_seq(s, (LOST_AT - 1) * INTERVAL) - 3
        pending = last - frozen
    elif j % 50 == 3:  # redelivering more and more
        ack_pending, redelivered = 8, 3 * i
    sent = last - pending
    acked = sent - ack_pending
    limits = {"max_msgs": 200_000 if s % 4 == 0 else -1, "max_bytes": -1, "discard": "old"}
    return Dest(
        kind="consumer",
        key=f"consumer/{stream}/{name}",
        name=f"{stream} › {name}",
        type="pull",
        backlog=pending,
        in_flight=ack_pending,
        consumers=readers,
        in_total=sent + pending,
        out_total=acked,
        extra={
            "durable": name,
            "consumer_name": name,
            "stream": stream,
            "filter_subjects": [f"bench.{s}.>"],
            "filter_subject": f"bench.{s}.>",
            "description": "",
            "ack_policy": "explicit",
            "ack_wait": 30.0,
            "max_deliver": 5,
            "max_ack_pending": 1000,
            "deliver_policy": "all",
            "deliver_subject": "",
            "deliver_group": "",
            "num_pending": pending,
            "num_ack_pending": ack_pending,
            "num_redelivered": redelivered,
            "num_waiting": readers,
            "delivered_seq": sent,
            "delivered_consumer_seq": sent + redelivered,
            "ack_floor_seq": acked,
            "ack_floor_consumer_seq": acked,
            "deliver_rate": rate if readers else 0.0,
            "last_delivered": "2024-05-01T10:00:00+00:00",
            "last_acked": "2024-05-01T10:00:00+00:00",
            "last_active": "2024-05-01T10:00:00+00:00",
            "push_bound": False,
            "created": "2024-05-01T09:00:00Z",
            "stream_limits": {**limits, "messages": last, "bytes": last * 300},
        },
    )


# -- the run -------------------------------------------------------------------------


@dataclass
class Run:
    """One broker's collections: each stored at its own stamped time, then evaluated."""

    label: str
    what: str
    broker: Any
    snapshot: Callable[[int], Snapshot]
    start: float
    done: int = 0  # collections stored
    opened: int = 0
    resolved: int = 0
    stored: list[Any] = field(default_factory=list)  # the rows the last collection stored

    def next_collection(self) -> tuple[Snapshot, float]:
        return self.snapshot(self.done), self.start + self.done * INTERVAL

    def store(self, snap: Snapshot, now: float) -> None:
        from dashboard.collection import collector

        self.stored = []  # as in the worker, the last collection's rows are gone by now
        self.stored = collector.store(self.broker, snap, now)
        self.done += 1

    def triage(self, now: float) -> None:
        from dashboard.triage.evaluate import evaluate

        # As the worker does: the rows the collection stored, handed over.
        outcome = evaluate(self.broker, now, destinations=self.stored)
        self.opened += len(outcome.opened)
        self.resolved += len(outcome.resolved)


def brokers(args: argparse.Namespace, start: float) -> list[Run]:
    """The three Broker rows, their options pointing nowhere: nothing here reaches a broker."""
    from dashboard.models import Broker

    nats_options = {"monitoring_url": "http://127.0.0.1:1"}
    if args.nats_url:
        nats_options["url"] = args.nats_url
    per = max(1, args.partitions // args.groups)

    def row(kind: str, options: dict[str, str]) -> Any:
        return Broker.objects.create(
            name=f"bench-{kind}", kind=kind, options=options, interval=INTERVAL
        )

    return [
        Run(
            "RabbitMQ",
            f"{args.queues:,} queues",
            row("rabbitmq", {"management_url": "http://127.0.0.1:1"}),
            partial(rabbitmq_snapshot, queues=args.queues),
            start,
        ),
        Run(
            "Kafka",
            f"{args.groups:,} groups, {args.groups * per:,} partitions",
            row("kafka", {"bootstrap_servers": "127.0.0.1:1"}),
            partial(kafka_snapshot, groups=args.groups, partitions=args.partitions),
            start,
        ),
        Run(
            "NATS",
            f"{args.consumers:,} consumers",
            row("nats", nats_options),
            partial(nats_snapshot, consumers=args.consumers),
            start,
        ),
    ]


def incidents(run: Run | Live) -> str:
    from dashboard.models import Incident

    causes = Counter(
        Incident.objects.filter(broker=run.broker, state=Incident.OPEN).values_list(
            "cause", flat=True
        )
    )
    pending = Incident.objects.filter(broker=run.broker, state=Incident.PENDING).count()
    listed = ", ".join(f"{cause} {n}" for cause, n in causes.most_common())
    return f"{sum(causes.values())} open ({listed}), {pending} pending"


def summary(
    runs: list[Run],
    times: dict[str, list[tuple[float, float]]],
    wall: dict[str, float],
    rounds: int,
) -> float:
    """Print triage ÷ store per broker and for all three (wall and CPU medians); return the
    wall ratio of all three."""
    cpu = {name: statistics.median(c for _, c in v) for name, v in times.items()}
    print("\ntriage ÷ store, the database side of the collection (not its broker side)")
    print(f"{'':10}{'wall':>8}{'CPU':>8}")
    for run in runs:
        s, t = f"store {run.label}", f"triage {run.label}"
        print(f"{run.label:10}{wall[t] / wall[s]:8.1%}{cpu[t] / cpu[s]:8.1%}")

    def total(part: str, medians: dict[str, float]) -> float:
        return sum(medians[f"{part} {run.label}"] for run in runs)

    ratio = total("triage", wall) / total("store", wall)
    print(f"{'all three':10}{ratio:8.1%}{total('triage', cpu) / total('store', cpu):8.1%}")
    print(f"\nincidents after the {rounds} timed rounds")
    for run in runs:
        print(
            f"{run.label:10}{incidents(run)}; "
            f"{run.opened} opened and {run.resolved} resolved in the timed rounds"
        )
    print(
        f"\ntriage {total('triage', wall) * 1000:.0f} ms after storing collections that took "
        f"{total('store', wall) * 1000:.0f} ms (wall medians, all three brokers)"
    )
    return ratio


def profile(runs: list[Run]) -> None:
    """One more collection per broker, its evaluation under cProfile."""
    for run in runs:
        snap, now = run.next_collection()
        run.store(snap, now)
        profiler = cProfile.Profile()
        profiler.runcall(run.triage, now)
        print(f"\n-- {run.label}: where one evaluation's time goes (cumulative, top 25)")
        pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(25)


# -- the real brokers (--real) ------------------------------------------------------

PER_TOPIC = 6  # Kafka partitions per topic, as bench/collect_kafka.py makes them
NATS_MESSAGES = 10  # per stream, as bench/collect_nats.py publishes them


@dataclass
class Live:
    """One real broker under test: its Broker row, and what its timed rounds saw."""

    label: str
    what: str
    broker: Any
    opened: int = 0
    resolved: int = 0
    stored: list[Any] = field(default_factory=list)  # the rows the last collection stored
    topology: int = 0  # timed collections that read the topology too
    broker_side: list[float] = field(default_factory=list)  # seconds, from collect_ms
    storing: list[float] = field(default_factory=list)  # the collection less its broker side

    def collect(self, now: float) -> tuple[float, float]:
        """One whole collection at stamp `now`; its (wall, CPU) seconds. Raises if it failed."""
        from dashboard.collection import collector

        read = self.broker.topology_at
        self.stored = []
        with Timed() as took:
            ok = collector.collect(self.broker, now=now, stored=self.stored)
        if not ok:
            raise RuntimeError(f"{self.label}: the collection failed: {self.broker.error}")
        side = (self.broker.collect_ms or 0) / 1000
        self.broker_side.append(side)
        self.storing.append(took.wall - side)
        self.topology += self.broker.topology_at != read
        return took.wall, took.cpu

    def triage(self, now: float) -> tuple[float, float]:
        from dashboard.triage.evaluate import evaluate

        with Timed() as took:
            # As the worker does (dashboard/tasks.py): the rows the collection stored.
            outcome = evaluate(self.broker, now, destinations=self.stored)
        self.opened += len(outcome.opened)
        self.resolved += len(outcome.resolved)
        return took.wall, took.cpu

    def reset(self) -> None:
        self.opened = self.resolved = self.topology = 0
        self.broker_side.clear()
        self.storing.clear()


def undo(what: str, fn: Callable[[], object]) -> None:
    """One cleanup step; a failure is printed, and the other steps still run."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - printed; the next cleanup step must still run
        print(f"cleanup failed: {what}: {type(exc).__name__}: {exc}")
    else:
        print(f"cleaned up: {what}")


def broker_row(kind: str, options: dict[str, str], stack: ExitStack) -> Any:
    from dashboard.collection import collector
    from dashboard.models import Broker

    row = Broker.objects.create(name=f"real-{kind}", kind=kind, options=options, interval=INTERVAL)
    # Its adapter's connections are closed before the broker's objects are removed.
    stack.callback(collector.forget_adapter, row)
    return row


def real_rabbitmq(args: argparse.Namespace, stack: ExitStack) -> Live:
    import collect_rabbitmq as bench_rabbitmq

    from dashboard import devservices

    found = devservices.rabbitmq()
    server = bench_rabbitmq.Broker(
        found["management_url"], found["amqp_url"], found["username"], found["password"]
    )
    stack.callback(server.session.close)
    vhost = bench_rabbitmq.VHOST
    stack.callback(
        undo, f"RabbitMQ vhost {vhost} and its queues", partial(bench_rabbitmq.drop_vhost, server)
    )
    print(f"RabbitMQ at {server.management_url}")
    published = bench_rabbitmq.create_queues(server, args.queues, publish_every=10, messages=3)
    bench_rabbitmq.wait_for_stats(server, args.queues, published)
    amqp = urlsplit(found["amqp_url"])
    options = {
        "management_url": server.management_url,
        # Its vhost is for moving and browsing messages only: a collection reads every vhost.
        "amqp_url": urlunsplit((amqp.scheme, amqp.netloc, "/" + quote(vhost, safe=""), "", "")),
        "username": server.username,
        "password": server.password,
    }
    what = f"{args.queues:,} queues in {vhost}"
    return Live("RabbitMQ", what, broker_row("rabbitmq", options, stack))


def real_kafka(args: argparse.Namespace, stack: ExitStack) -> Live:
    import collect_kafka as bench_kafka

    from dashboard import devservices

    bootstrap = args.bootstrap or os.environ.get("SLUICE_TEST_KAFKA_BOOTSTRAP", "")
    if not bootstrap:
        bootstrap = devservices.kafka()["bootstrap_servers"]  # a private Tansu, stopped at exit
    print(f"Kafka at {bootstrap}")
    topics = max(1, args.partitions // PER_TOPIC)
    ours = f"{bench_kafka.PREFIX}-{bench_kafka.RUN}-"  # this run's names only
    from kafka import KafkaAdminClient

    # Reached first, so that a Kafka that does not answer has nothing to clean up.
    KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000).close()

    def drop() -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
        try:
            groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(ours)]
            if groups:
                admin.delete_groups(groups)
            names = [t for t in admin.list_topics() if t.startswith(ours)]
            if names:
                admin.delete_topics(names)
        finally:
            admin.close()

    stack.callback(undo, f"Kafka topics and groups {ours}*", drop)
    bench_kafka.setup(bootstrap, topics, PER_TOPIC, args.groups)
    what = f"{args.groups:,} groups, {topics * PER_TOPIC:,} partitions"
    return Live("Kafka", what, broker_row("kafka", {"bootstrap_servers": bootstrap}, stack))


def real_nats(args: argparse.Namespace, stack: ExitStack) -> Live:
    import collect_nats as bench_nats

    from dashboard import devservices

    # Always a private server: the collections create the advisory capture stream on it.
    os.environ.pop("SLUICE_TEST_NATS_URL", None)
    server = devservices.nats()  # stopped at exit, its data with it
    url, monitoring_url = server["url"], server["monitoring_url"]
    print(f"NATS at {url}, monitoring at {monitoring_url}")
    streams = -(-args.consumers // PER_STREAM)
    stack.callback(
        undo, f"NATS streams {bench_nats.PREFIX}_*", lambda: asyncio.run(bench_nats.teardown(url))
    )
    started = time.perf_counter()
    asyncio.run(bench_nats.setup(url, streams, PER_STREAM, NATS_MESSAGES))
    print(
        f"created {streams} streams × {PER_STREAM} consumers with {NATS_MESSAGES} messages "
        f"each in {time.perf_counter() - started:.1f} s"
    )
    options = {"monitoring_url": monitoring_url, "url": url}
    what = f"{streams * PER_STREAM:,} consumers"
    return Live("NATS", what, broker_row("nats", options, stack))


def collected(live: Live) -> str:
    """What the Broker's last collection stored: destinations by kind."""
    from dashboard.models import Destination

    kinds = Counter(
        Destination.objects.filter(broker=live.broker, gone_since__isnull=True).values_list(
            "kind", flat=True
        )
    )
    return ", ".join(f"{n:,} {kind}s" for kind, n in sorted(kinds.items()))


def real_summary(
    lives: list[Live], times: dict[str, list[tuple[float, float]]], wall: dict[str, float]
) -> float:
    """Print triage ÷ collection and triage ÷ storing per broker and for all; return the
    wall ratio of all of them to the whole collection."""
    cpu = {name: statistics.median(c for _, c in v) for name, v in times.items()}
    side = {live.label: statistics.median(live.broker_side) for live in lives}
    storing = {live.label: statistics.median(live.storing) for live in lives}
    print("\ntriage ÷ collection: the whole collection, the broker's side and storing")
    print(
        f"{'':10}{'collect':>9}{'broker':>9}{'storing':>9}{'triage':>9}"
        f"{'÷ collect':>11}{'CPU':>7}{'÷ storing':>11}"
    )

    def row(
        label: str, c: float, b: float, st: float, t: float, c_cpu: float, t_cpu: float
    ) -> None:
        verdict = "PASS" if t / c <= TARGET else "FAIL"
        print(
            f"{label:10}{c * 1000:>7.0f}ms{b * 1000:>7.0f}ms{st * 1000:>7.0f}ms{t * 1000:>7.0f}ms"
            f"{t / c:>11.1%}{t_cpu / c_cpu:>7.1%}{t / st:>11.1%}  {verdict}"
        )

    for live in lives:
        c, t = f"collect {live.label}", f"triage {live.label}"
        row(live.label, wall[c], side[live.label], storing[live.label], wall[t], cpu[c], cpu[t])

    def total(part: str, medians: dict[str, float]) -> float:
        return sum(medians[f"{part} {live.label}"] for live in lives)

    every = "all three" if len(lives) == 3 else f"all {len(lives)}"
    row(
        every,
        total("collect", wall),
        sum(side.values()),
        sum(storing.values()),
        total("triage", wall),
        total("collect", cpu),
        total("triage", cpu),
    )
    print(
        "(medians; broker: the adapter's requests and mapping, as the Broker's collect_ms "
        "records it; storing: the collection less that)"
    )
    print(f"\nafter the {len(times[f'collect {lives[0].label}'])} timed rounds")
    for live in lives:
        print(f"{live.label:10}collected {collected(live)}")
        print(
            f"{'':10}incidents {incidents(live)}; {live.opened} opened and "
            f"{live.resolved} resolved in the timed rounds; {live.topology} of the timed "
            "collections read the topology too"
        )
    return total("triage", wall) / total("collect", wall)


def real(args: argparse.Namespace) -> None:
    """Set up the three real brokers, warm up, time, print; remove everything made."""
    from dashboard import devservices

    os.environ.setdefault("SLUICE_BROKER_TIMEOUT", "30")
    if not os.environ.get("REDIS_URL"):  # the triage memo must not land in a shared Redis
        os.environ["REDIS_URL"] = devservices.redis()  # stopped at exit
    scratch_django.setup("sluice-bench-triage-")
    from django.db import connections

    logging.getLogger("dashboard.triage.evaluate").setLevel(logging.ERROR)
    rounds = args.rounds or 5
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, os.environ["SLUICE_STATE_DIR"], ignore_errors=True)
        stack.callback(connections.close_all)
        lives: list[Live] = []
        left_out: dict[str, str] = {}
        for label, setup in (
            ("RabbitMQ", real_rabbitmq),
            ("Kafka", real_kafka),
            ("NATS", real_nats),
        ):
            try:
                lives.append(setup(args, stack))
            except Exception as exc:  # noqa: BLE001 - printed; the other kinds still run
                left_out[label] = f"setup failed: {type(exc).__name__}: {exc}"
                print(f"{label}: {left_out[label]}")

        times: dict[str, list[tuple[float, float]]] = {}
        for live in lives:
            times[f"collect {live.label}"] = []
            times[f"triage {live.label}"] = []

        def one_round(now: float, timing: bool) -> None:
            """Each broker in turn: collected, then evaluated. One that fails is left out."""
            for live in list(lives):
                try:
                    collect, triage = live.collect(now), live.triage(now)
                except RuntimeError as exc:
                    left_out[live.label] = str(exc)
                    print(exc)
                    lives.remove(live)
                    continue
                if timing:
                    times[f"collect {live.label}"].append(collect)
                    times[f"triage {live.label}"].append(triage)

        start = time.time() - INTERVAL * (WARMUP + rounds)
        began = time.perf_counter()
        for i in range(WARMUP):
            one_round(start + i * INTERVAL, timing=False)
        print(f"warmed up: {WARMUP} rounds in {time.perf_counter() - began:.0f} s")
        for live in lives:
            live.reset()
        for i in range(WARMUP, WARMUP + rounds):
            one_round(start + i * INTERVAL, timing=True)
        if not lives:
            print("no broker was measured")
            return
        labels = {}
        for live in lives:
            labels[f"collect {live.label}"] = f"collect: {live.label}, {live.what}"
            labels[f"triage {live.label}"] = f"triage: {live.label}"
        wall = cycle_table({name: times[name] for name in labels}, labels)
        ratio = real_summary(lives, times, wall)
        for label, why in left_out.items():
            print(f"{label:10}LEFT OUT: {why}")
        if args.profile:
            for live in lives:
                now = start + (WARMUP + rounds) * INTERVAL
                live.collect(now)
                profiler = cProfile.Profile()
                profiler.runcall(live.triage, now)
                print(f"\n-- {live.label}: where one evaluation's time goes (cumulative, top 25)")
                pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(25)
        stored = None
        if not args.no_synthetic:
            print("\n-- for comparison, the synthetic mode: collector.store() of made-up figures")
            _, stored = synthetic_rounds(args, 7)
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        which = "all three brokers" if len(lives) == 3 else ", ".join(live.label for live in lives)
        print(
            f"\ntriage ÷ collection (whole collection, real brokers: {which}): {ratio:.1%} "
            f"(target ≤ {TARGET:.0%}) {verdict}"
        )
        if stored is not None:
            print(
                f"triage ÷ store (database side only, synthetic figures, all three): {stored:.1%}"
            )


def synthetic(args: argparse.Namespace) -> None:
    if not os.environ.get("REDIS_URL"):  # the triage memo must not land in a shared Redis
        from dashboard import devservices

        os.environ["REDIS_URL"] = devservices.redis()  # stopped at exit
    scratch_django.setup("sluice-bench-triage-")
    # Each incident opened is logged as a warning; a detector's failure, as an error, still shows.
    logging.getLogger("dashboard.triage.evaluate").setLevel(logging.ERROR)
    runs, ratio = synthetic_rounds(args, args.rounds or 7)
    if not args.nats_url:
        print("NATS had no client URL: the dead-letter advisory count was not read (--nats-url)")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"triage ÷ collection (database side): {ratio:.1%} (target ≤ {TARGET:.0%}) {verdict}")
    if args.profile:
        profile(runs)


def synthetic_rounds(args: argparse.Namespace, rounds: int) -> tuple[list[Run], float]:
    """The synthetic brokers warmed up and timed; their rows and triage ÷ store of all three."""
    start = time.time() - INTERVAL * (WARMUP + rounds)
    runs = brokers(args, start)
    for _ in range(WARMUP):
        for run in runs:
            snap, now = run.next_collection()
            run.store(snap, now)
            run.triage(now)
    for run in runs:
        run.opened = run.resolved = 0

    labels = {}
    for run in runs:
        labels[f"store {run.label}"] = f"store: {run.label}, {run.what}"
        labels[f"triage {run.label}"] = f"triage: {run.label}"
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in labels}
    for _ in range(rounds):  # the brokers take turns, each stored then evaluated
        for run in runs:
            snap, now = run.next_collection()
            times[f"store {run.label}"].append(timed(partial(run.store, snap, now)))
            times[f"triage {run.label}"].append(timed(partial(run.triage, now)))
    wall = cycle_table(times, labels)
    return runs, summary(runs, times, wall, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=1200)
    parser.add_argument("--consumers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=0, help="default 7, or 5 with --real")
    parser.add_argument("--nats-url", default="", help="a NATS client URL for the advisory read")
    parser.add_argument("--profile", action="store_true", help="then profile one evaluation each")
    parser.add_argument(
        "--real", action="store_true", help="time the whole collection of real brokers"
    )
    parser.add_argument("--bootstrap", default="", help="with --real: a Kafka to use")
    parser.add_argument(
        "--no-synthetic", action="store_true", help="with --real: skip the synthetic comparison"
    )
    args = parser.parse_args()
    if args.real:
        real(args)
    else:
        synthetic(args)


if __name__ == "__main__":
    main()
