"""Benchmark: replaying Kafka dead letters with Sluice's job engine next to a plain kafka-python loop.

Starts a private Kafka-protocol broker (Tansu, through dashboard.devservices,
unless `--bootstrap` names one), creates `bench.orders` and `bench.orders.DLT`
(`--partitions` each) and fills the dead-letter topic with `--messages`
~250-byte records, each with a key and the headers a dead-letter publisher
adds (`x-original-topic`, `x-exception-message`). Then, alternately for
`--rounds` rounds, it times:

    ours       Sluice's job engine (`dashboard.jobs.engine.run` with the Kafka
               `LogTransfer`, a temporary SQLite database), replaying the whole
               topic to the origin its header names: per record the selection
               and routing decision, lineage headers added, the producer's
               acks=all awaited per batch before the job's cursor moves, the
               outcome of every record and the progress written per batch.
    reference  a plain kafka-python loop: a consumer without a group reading
               the topic from the start, and for every record
               `producer.send(origin, value, key, headers)` to the topic its
               header names, with acks=all and the same producer settings,
               then one `flush()` at the end. No lineage, no bookkeeping, no
               confirmation before reading on.

Each replay's copies are counted by reading the origin topic back, and the
run fails unless every record arrived. It prints both rates, ours ÷ reference
(target ≥ 1.0) and this process's CPU time per record.

    .venv/bin/python bench/replay_kafka.py [--messages 100000] [--partitions 6]
        [--batch 2000] [--rounds 1] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import scratch_django
import timing
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from timing import Timed

TARGET = 1.0
PRODUCER = {"acks": "all", "linger_ms": 2, "batch_size": 256 * 1024}


def topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            admin.delete_topics(gone)
            time.sleep(1)
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def fill(bootstrap: str, topic: str, origin: str, n: int, partitions: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    body = b'{"order": %d, "lines": [' + b'{"sku": "A-1", "qty": 2}, ' * 6 + b'{"note": "x"}]}'
    for i in range(n):
        producer.send(
            topic,
            value=body % i,
            key=f"order-{i}".encode(),
            partition=i % partitions,
            headers=[
                ("x-original-topic", origin.encode()),
                ("x-exception-message", b"timeout talking to payments"),
            ],
        )
    producer.flush()
    producer.close()


def count(bootstrap: str, topic: str, partitions: int, expect: int) -> int:
    """Records in `topic`, read back (Tansu's ListOffsets undercounts batched records)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, quiet = 0, time.monotonic()
    while seen < expect and time.monotonic() - quiet < 3:
        got = consumer.poll(500)
        for records in got.values():
            seen += len(records)
        if got:
            quiet = time.monotonic()
    consumer.close()
    return seen


def reference(bootstrap: str, source: str, n: int, partitions: int) -> Timed:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    tps = [TopicPartition(source, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    done = 0
    with Timed() as timed:
        while done < n:
            for records in consumer.poll(500).values():
                for r in records:
                    origin = dict(r.headers)["x-original-topic"].decode()
                    producer.send(origin, value=r.value, key=r.key, headers=r.headers)
                done += len(records)
        producer.flush()
    consumer.close()
    producer.close()
    return timed


def ours(bootstrap: str, source: str, n: int, batch: int) -> Timed:
    scratch_django.setup("sluice-bench-kafka-")
    from dashboard.jobs import engine as jobs
    from dashboard.jobs import service as jobservice
    from dashboard.models import Broker, Destination, Job

    row = Broker.objects.create(
        name=f"bench-{uuid.uuid4().hex[:8]}",
        kind="kafka",
        options={"bootstrap_servers": bootstrap},
    )
    for name in (source, source.removesuffix(".DLT")):
        Destination.objects.create(broker=row, kind="topic", key=f"topic/{name}", name=name)
    fields = jobservice.check(
        row,
        {"action": "replay", "source": f"topic/{source}", "batch_size": batch},
    )
    job = Job.objects.create(broker=row, created_by="bench", **fields)
    with Timed() as timed:
        job = jobs.run(job.pk, jobservice.transfer_for, jobservice.router)
    if job.state != "done" or job.replayed != n:
        raise SystemExit(f"the engine did not replay every record: {job.state} {job.error}")
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--batch", type=int, default=2000, help="records per job batch (the jobs' default: 2000)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    args = parser.parse_args()
    bootstrap = args.bootstrap
    if not bootstrap:
        from dashboard import devservices

        bootstrap = devservices.kafka()["bootstrap_servers"]
    n, parts = args.messages, args.partitions
    origin, dead = "bench.orders", "bench.orders.DLT"
    runs: dict[str, list[Timed]] = {"ours": [], "reference": []}
    topics(bootstrap, [origin, dead], parts)
    fill(bootstrap, dead, origin, n, parts)
    print(f"{dead}: {n} records in {parts} partitions")
    for r in range(args.rounds):
        for name in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            topics(bootstrap, [origin], parts)
            timed = (
                ours(bootstrap, dead, n, args.batch)
                if name == "ours"
                else reference(bootstrap, dead, n, parts)
            )
            copies = count(bootstrap, origin, parts, n)
            if copies != n:
                raise SystemExit(f"{name}: {origin} holds {copies} records, expected {n}")
            print(f"round {r + 1} {name:>9}: {timed.wall:6.2f} s, {n / timed.wall:8.0f} msg/s")
            runs[name].append(timed)
    report(n, args, runs)


def report(n: int, args: Any, runs: dict[str, list[Timed]]) -> None:
    rounds = f"; medians of {args.rounds} rounds" if args.rounds > 1 else ""
    heading = f"{n} records, {args.partitions} partitions, batch {args.batch}{rounds}"
    timing.report(heading, n, runs, TARGET)


if __name__ == "__main__":
    main()
