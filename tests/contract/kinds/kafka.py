"""Kafka's registration: a dead-letter topic whose records name their origin topic."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.contract.kinds.base import BULK, Copy, Registration, Source, text


class Kafka(Registration):
    """A dead-letter topic `<name>.DLT` whose records name their origin topic in a header."""

    name = "kafka"
    broker_name = "kafka"
    service = "kafka"
    drains = False
    refused = "kept: failed"
    own_headers = ("x-original-topic", "x-exception-message")
    kill_count = 60_000
    seeks_ids = True
    cannot = {
        "remove originals": "a Kafka topic keeps its records until retention removes them: "
        "no job takes one off it",
    }

    def __init__(self, services: dict[str, str], unique: str) -> None:
        super().__init__(services, unique)
        self.servers = services["bootstrap_servers"]
        self.admin = KafkaAdminClient(bootstrap_servers=self.servers)
        self.topics: list[str] = []

    def options(self) -> dict[str, str]:
        return {"bootstrap_servers": self.servers}

    def unreachable_options(self, port: int) -> dict[str, str]:
        return {"bootstrap_servers": f"127.0.0.1:{port}"}

    def _topic(self, name: str, partitions: int = 1) -> None:
        self.admin.create_topics([NewTopic(name, partitions, 1)])
        self.topics.append(name)

    def dead_letters(self, count: int, closed: Iterable[int] = ()) -> Source:
        u = self.fresh()
        dlt, origins = f"c-{u}.DLT", [f"c-{u}-a", f"c-{u}-b"]
        partitions = 4 if count > BULK else 2
        self._topic(dlt, partitions)
        for i in set(range(2)) - set(closed):
            self._topic(origins[i])
        bodies = self.make_bodies(u, count)
        # One record per batch for small sources: Tansu 0.6 undercounts batched records'
        # end offsets (tests/kafka_fixtures.py). The job reads the high watermark anyway.
        batching = {"linger_ms": 5} if count > BULK else {"batch_size": 1}
        producer = KafkaProducer(bootstrap_servers=self.servers, acks="all", **batching)
        sent = [
            producer.send(
                dlt,
                body,
                key=f"k{n}".encode(),
                partition=n % partitions,
                headers=[
                    ("x-original-topic", origins[n % 2].encode()),
                    ("x-exception-message", b"boom"),
                ],
            )
            for n, body in enumerate(bodies)
        ]
        producer.flush()
        producer.close()
        ids = [f"{r.partition}:{r.offset}" for r in (f.get(timeout=30) for f in sent)]
        opened = {i for i in range(2) if i not in set(closed)}
        return Source(f"topic/{dlt}", bodies, ids, {"dlt": dlt, "origins": origins, "open": opened})

    def collected_count(self, dest: Any) -> int:
        # A topic's backlog is its groups' lag; what it holds is counted aside.
        return int(dest.details["extra"]["messages"])

    def open(self, src: Source, origin: int) -> None:
        self._topic(src.names["origins"][origin])
        src.names["open"].add(origin)

    def _records(self, topic: str) -> list[Any]:
        """Every record of `topic`, read without a group up to each partition's high watermark."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.servers, enable_auto_commit=False, allow_auto_create_topics=False
        )
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            out: list[Any] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for records in consumer.poll(200, max_records=10_000).values():
                    out.extend(records)
                marks = [consumer.highwater(tp) for tp in tps]
                if all(
                    m is not None and consumer.position(tp) >= m
                    for tp, m in zip(tps, marks, strict=True)
                ):
                    break
            return out
        finally:
            consumer.close()

    def count_source(self, src: Source) -> int:
        return len(self._records(src.names["dlt"]))

    def _held(self, origin: int, topic: str) -> list[Copy]:
        return [
            Copy(origin, r.value, {k: text(v) for k, v in r.headers}) for r in self._records(topic)
        ]

    def source_messages(self, src: Source) -> list[Copy]:
        return self._held(-1, src.names["dlt"])

    def copies(self, src: Source) -> list[Copy]:
        origins = enumerate(src.names["origins"])
        return [m for i, t in origins if i in src.names["open"] for m in self._held(i, t)]

    def publish_request(self, src: Source, body: str, headers: dict[str, str]) -> dict[str, Any]:
        return {"topic": src.names["dlt"], "key": "contract", "body": body, "headers": headers}

    def import_to(self, src: Source, origin: int) -> dict[str, str]:
        return {"topic": src.names["origins"][origin]}

    def bad_requests(self, src: Source) -> list[tuple[dict[str, Any], str]]:
        dlt = src.names["dlt"]
        return [
            ({"action": "discard"}, "cannot be discarded"),
            ({"source": "topic/nope"}, "no topic 'nope'"),
            ({"destination": "missing-topic"}, "no topic 'missing-topic'"),
            ({"destination": dlt}, "source topic itself"),
            ({"ranges": [{"partition": 7, "from": 0}]}, "no partition 7"),
            ({"ranges": [{"partition": 0, "from": 500}]}, "500 is out of range"),
            ({"ranges": [{"partition": 0, "from": 5, "to": 2}]}, "before"),
            ({"ranges": [{"partition": 0, "from": -1}]}, "whole numbers"),
        ]

    def close(self) -> None:
        # Cleanup of a shared broker: a failure here must not hide the test's result.
        with contextlib.suppress(Exception):
            self.admin.delete_topics(self.topics)
        self.admin.close()
