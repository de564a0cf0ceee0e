"""Benchmark: how fast a whole-topic search scans, next to a plain consumer reading the topic.

Starts a private Kafka-protocol broker (Tansu, through dashboard.devservices)
unless `--bootstrap` names one, fills a topic with `--messages` JSON records
(batched producing: the search fixes its ranges from the high watermark, so
the count is right on Tansu too), a few of which carry a marker, then times,
in interleaved rounds on the same broker:

    reference  a plain kafka-python KafkaConsumer, no group, every partition
               assigned from the beginning, polled until it has every record,
               doing nothing with them;
    ours       `dashboard.kinds.kafka.search.run()`, the search runner the Celery
               task calls, on a Search row (SQLite in a temporary directory)
               with a body filter that matches the marked records: fixing the
               ranges, scanning, progress writes and results included.

and prints both rates and ours ÷ reference (target ≥ 0.8). `ours` runs twice:
with a body substring, which the scanner tries on whole record batches before
decoding any record (`brokers.kafka.scan`), and with the same text as a regex,
which rules out no batch, so every record is decoded (the worst case). The
topic is deleted at the end.

    .venv/bin/python bench/search_kafka.py [--messages 200000] [--partitions 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import scratch_django
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

TARGET = 0.8
MARKER = "needle-7f3a"


def fill(bootstrap: str, topic: str, n: int, partitions: int, marked: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024
    )
    every = max(1, n // marked)
    for i in range(n):
        note = MARKER if i % every == every // 2 else "routine"
        body = {"order": {"id": i, "customer": f"c{i % 977}"}, "note": note, "pad": "x" * 80}
        producer.send(
            topic,
            json.dumps(body).encode(),
            key=f"k{i % 5000}".encode(),
            headers=[("source", b"bench")],
        )
    producer.flush()
    producer.close()


class Timed:
    """Wall-clock and CPU seconds (all threads of this process) of a `with` block."""

    def __enter__(self) -> Timed:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def reference(bootstrap: str, topic: str, n: int) -> Timed:
    """A plain consumer reading all `n` records, timed from its creation to the last record."""
    with Timed() as timed:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen = 0
        while seen < n:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += len(records)
        consumer.close()
    return timed


def ours(bootstrap: str, topic: str, n: int, marked: int, mode: str = "substring") -> Timed:
    """The search runner from start to done (adapter, ranges, scan, progress); checks what it found."""
    scratch_django.setup("sluice-bench-search-")
    from dashboard.kinds.kafka import search as kafka_search
    from dashboard.models import Broker

    broker = Broker.objects.create(
        name=f"bench-{uuid.uuid4().hex[:8]}", kind="kafka", options={"bootstrap_servers": bootstrap}
    )
    search = kafka_search.create(
        "bench", broker, topic, {"body": MARKER, "mode": mode}, enqueue=False
    )
    with Timed() as timed:
        search = kafka_search.run(search.pk)
    if search.state != "done" or search.scanned != n or search.matched != marked:
        raise SystemExit(
            f"the search went wrong: {search.state} {search.error} "
            f"scanned {search.scanned}/{n}, matched {search.matched}/{marked}"
        )
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--marked", type=int, default=5, help="records the filter matches")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    args = parser.parse_args()
    bootstrap = args.bootstrap
    if not bootstrap:
        from dashboard import devservices

        bootstrap = devservices.kafka()["bootstrap_servers"]
    n, topic = args.messages, f"sluice-bench-search-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    fill(bootstrap, topic, n, args.partitions, args.marked)
    print(
        f"{topic}: {n:,} records in {args.partitions} partitions ({time.perf_counter() - started:.1f} s to produce)"
    )
    runs: dict[str, list[Timed]] = {"reference": [], "ours": [], "ours-regex": []}
    try:
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                if name == "reference":
                    took = reference(bootstrap, topic, n)
                else:
                    mode = "regex" if name == "ours-regex" else "substring"
                    took = ours(bootstrap, topic, n, args.marked, mode)
                runs[name].append(took)
                print(
                    f"round {r + 1} {name:>10}: {took.wall:6.2f} s, {n / took.wall:8.0f} msg/s"
                    f" ({took.cpu:.2f} s CPU)"
                )
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics([topic])
        admin.close()
    ref = statistics.median(t.wall for t in runs["reference"])
    rounds = len(runs["reference"])
    print(f"reference (plain consumer):   {n / ref:9.0f} msg/s (median of {rounds})")
    for name, label in (
        ("ours", "search, body contains"),
        ("ours-regex", "search, body regex"),
    ):
        our = statistics.median(t.wall for t in runs[name])
        cpu = statistics.median(t.cpu for t in runs[name])
        ref_cpu = statistics.median(t.cpu for t in runs["reference"])
        ratio = ref / our
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(
            f"{label + ':':29}{n / our:9.0f} msg/s, {ratio:5.2f} × the reference "
            f"(target ≥ {TARGET}) {verdict}; CPU {ref_cpu / cpu:.2f} ×"
        )


if __name__ == "__main__":
    main()
