"""Benchmark: replaying NATS dead letters with Sluice's job engine next to a plain nats-py loop.

Starts a private nats-server with JetStream (through dashboard.devservices,
unless `--url` names one) and times two scenarios, each with `--messages`
~250-byte messages carrying two headers:

    advisories  the messages sit in `BENCH_ORDERS` (allow_direct), a worker
                terminated every one of them, so the capture stream holds one
                MSG_TERMINATED advisory per message; the replay reads the
                advisories and, for each, the message it points at;
    stream      the messages sit in the dead-letter stream `BENCH_DLQ`, each
                naming its origin in an `x-original-subject` header.

Every replay publishes one copy of each message to `bench.retry.*`, stored by
`BENCH_RETRY`, which is made afresh before each run and counted afterwards: a
run fails unless every copy is there. Alternately, for `--rounds` rounds:

    ours       Sluice's job engine (`dashboard.jobs.engine.run`, the NATS
               `SequenceTransfer`, a scratch SQLite database): per message the
               selection and routing decision, the lineage headers and the
               Nats-Msg-Id, a JetStream publish, the outcome recorded and the
               job's cursor saved per batch, only after every PubAck of the
               batch. Reads are batched direct gets (`{"seq": n, "batch": m}`,
               nats-server 2.11+), publishes pipelined.
    reference  the natural nats-py loop: for each sequence, `get_msg(...,
               direct=True)` (advisories: the advisory, then the message it
               names), then `js.publish(subject, data, headers)`, awaiting its
               PubAck before going on. No lineage, no bookkeeping.

It prints both rates, ours ÷ reference (target ≥ 1.0) and this process's CPU
time per message.

    .venv/bin/python bench/replay_nats.py [--messages 100000] [--batch 1000]
        [--rounds 1] [--scenario both|advisories|stream] [--url nats://HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import nats
import scratch_django
import timing
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError
from timing import Timed

TARGET = 1.0
CAPTURE = "BENCH_DEAD_LETTERS"
ORDERS, DLQ, RETRY = "BENCH_ORDERS", "BENCH_DLQ", "BENCH_RETRY"
BODY = b'{"order": %d, "lines": [' + b'{"sku": "A-1", "qty": 2}, ' * 7 + b'{"note": "x"}]}'


async def _drop(js: Any, *names: str) -> None:
    for name in names:
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass


async def prepare(url: str, n: int) -> None:
    """BENCH_ORDERS with n terminated messages (n advisories), BENCH_DLQ with n dead letters."""
    from brokers.nats.deadletters import CAPTURE_SUBJECTS, capture_config

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=20000)
    await _drop(js, CAPTURE, ORDERS, DLQ, RETRY)
    names = json.loads(
        (
            await nc.request(
                "$JS.API.STREAM.NAMES", json.dumps({"subject": CAPTURE_SUBJECTS[0]}).encode()
            )
        ).data
    ).get("streams")
    if names:
        raise SystemExit(
            f"stream {names[0]} already captures advisories here: use a private server"
        )
    answer = await nc.request(
        f"$JS.API.STREAM.CREATE.{CAPTURE}", json.dumps(capture_config(CAPTURE, 1, 2**30)).encode()
    )
    if b'"error"' in answer.data:
        raise SystemExit(f"cannot create {CAPTURE}: {answer.data.decode()}")
    await js.add_stream(StreamConfig(name=ORDERS, subjects=["bench.orders.>"], allow_direct=True))
    await js.add_stream(StreamConfig(name=DLQ, subjects=["bench.dlq"], allow_direct=True))
    headers = {"trace-id": "abc123", "x-exception-message": "timeout talking to payments"}
    for start in range(0, n, 10000):
        acks = []
        for i in range(start, min(n, start + 10000)):
            acks.append(await js.publish_async(f"bench.orders.{i % 16}", BODY % i, headers=headers))
            dlq_headers = {**headers, "x-original-subject": f"bench.retry.{i % 16}"}
            acks.append(await js.publish_async("bench.dlq", BODY % i, headers=dlq_headers))
        await asyncio.gather(*acks)
    await js.add_consumer(ORDERS, ConsumerConfig(durable_name="worker", max_deliver=1))
    sub = await js.pull_subscribe_bind(durable="worker", stream=ORDERS)
    taken = 0
    while taken < n:
        for msg in await sub.fetch(1000, timeout=5):
            await msg.term()
            taken += 1
    await nc.flush()
    deadline = time.monotonic() + 30
    while (await js.stream_info(CAPTURE)).state.messages < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    got = (await js.stream_info(CAPTURE)).state.messages
    await nc.close()
    if got != n:
        raise SystemExit(f"{CAPTURE} holds {got} advisories, expected {n}")


async def fresh_target(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _drop(js, RETRY)
    await js.add_stream(StreamConfig(name=RETRY, subjects=["bench.retry.>"]))
    await nc.close()


async def copies(url: str) -> int:
    nc = await nats.connect(url)
    count = int((await nc.jetstream().stream_info(RETRY)).state.messages)
    await nc.close()
    return count


async def reference(url: str, scenario: str, n: int) -> Timed:
    nc = await nats.connect(url)
    js = nc.jetstream()
    source = CAPTURE if scenario == "advisories" else DLQ
    info = await js.stream_info(source)
    with Timed() as timed:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(source, seq, direct=True)
            if scenario == "advisories":
                advisory = json.loads(msg.data or b"")
                msg = await js.get_msg(advisory["stream"], advisory["stream_seq"], direct=True)
                subject = "bench.retry.x"
            else:
                subject = (msg.headers or {})["x-original-subject"]
            headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
            # nats-py may give None for a message stored without a payload.
            await js.publish(subject, msg.data or b"", headers=headers)
    await nc.close()
    return timed


def ours(url: str, scenario: str, n: int, batch: int) -> Timed:
    scratch_django.setup("sluice-bench-nats-")
    from dashboard.jobs import engine as jobs
    from dashboard.jobs import service as jobservice
    from dashboard.models import Broker, Job

    row = Broker.objects.create(
        name=f"bench-{uuid.uuid4().hex[:8]}",
        kind="nats",
        options={"url": url, "monitoring_url": "http://127.0.0.1:1"},
    )
    data: dict[str, Any] = {"action": "replay", "batch_size": batch}
    if scenario == "advisories":
        data.update(source=f"advisories/{CAPTURE}", destination="bench.retry.x")
    else:
        data.update(source=f"stream/{DLQ}")  # to the subject each message's header names
    job = Job.objects.create(broker=row, created_by="bench", **jobservice.check(row, data))
    with Timed() as timed:
        job = jobs.run(job.pk, jobservice.transfer_for, jobservice.router)
    if job.state != "done" or job.replayed != n:
        raise SystemExit(f"the engine did not replay every message: {job.state} {job.error}")
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="messages per job batch")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scenario", choices=("both", "advisories", "stream"), default="both")
    parser.add_argument("--url", help="an existing nats-server with JetStream (default: start one)")
    args = parser.parse_args()
    url = args.url
    if not url:
        from dashboard import devservices

        url = devservices.nats()["url"]
    n = args.messages
    asyncio.run(prepare(url, n))
    print(f"{n} messages in {ORDERS} (each terminated: {n} advisories in {CAPTURE}) and in {DLQ}")
    scenarios = ("advisories", "stream") if args.scenario == "both" else (args.scenario,)
    results: dict[str, dict[str, list[Timed]]] = {}
    for scenario in scenarios:
        runs: dict[str, list[Timed]] = {"ours": [], "reference": []}
        for r in range(args.rounds):
            for name in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
                asyncio.run(fresh_target(url))
                timed = (
                    ours(url, scenario, n, args.batch)
                    if name == "ours"
                    else asyncio.run(reference(url, scenario, n))
                )
                stored = asyncio.run(copies(url))
                if stored != n:
                    raise SystemExit(f"{scenario} {name}: {RETRY} holds {stored}, expected {n}")
                print(
                    f"{scenario:>10} round {r + 1} {name:>9}: {timed.wall:6.2f} s, "
                    f"{n / timed.wall:8.0f} msg/s"
                )
                runs[name].append(timed)
        results[scenario] = runs
    for scenario, runs in results.items():
        report(scenario, n, args, runs)


def report(scenario: str, n: int, args: Any, runs: dict[str, list[Timed]]) -> None:
    rounds = f"; medians of {args.rounds} rounds" if args.rounds > 1 else ""
    timing.report(f"{scenario}: {n} messages, batch {args.batch}{rounds}", n, runs, TARGET)


if __name__ == "__main__":
    main()
