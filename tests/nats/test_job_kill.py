"""kill -9 the worker in the middle of a NATS dead-letter replay; resume; no message is lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from contextlib import closing
from typing import Any

import nats as nats_client
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from tests.app_fixtures import wait_for

COUNT = 20_000


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def dead_letters(stack, unique_name):
    """COUNT messages in KILL_<name>, each terminated by a worker: COUNT captured advisories."""
    url = stack.brokers["nats"]["url"]
    out = stack.manage("nats_capture", "--broker", "nats")
    capture = out.split()[2]  # "nats: ok SLUICE_DEAD_LETTERS"
    stream, target = f"KILL_{unique_name}", f"TGT_{unique_name}"

    async def make() -> None:
        nc = await nats_client.connect(url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
        await js.add_stream(StreamConfig(name=target, subjects=[f"{target}.>"]))
        acks = [
            await js.publish_async(f"{stream}.{n % 50}", f"m{n:06d}".encode()) for n in range(COUNT)
        ]
        await asyncio.gather(*acks)
        await js.add_consumer(stream, ConsumerConfig(durable_name="w", max_deliver=1))
        sub = await js.pull_subscribe_bind(durable="w", stream=stream)
        taken = 0
        while taken < COUNT:
            for msg in await sub.fetch(1000, timeout=5):
                await msg.term()
                taken += 1
        await nc.flush()
        await nc.close()

    _run(make())
    yield {"url": url, "capture": capture, "stream": stream, "target": target}

    async def clean() -> None:
        nc = await nats_client.connect(url)
        js = nc.jetstream()
        for name in (stream, target):
            await js.delete_stream(name)
        await nc.close()

    _run(clean())


def read_target(url: str, target: str) -> list[bytes]:
    """Every message body in `target`, read by an ephemeral consumer of the test's own."""

    async def read() -> list[bytes]:
        nc = await nats_client.connect(url)
        js = nc.jetstream()
        info = await js.stream_info(target)
        sub = await js.pull_subscribe(
            f"{target}.>", durable=None, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        bodies: list[bytes] = []
        while len(bodies) < info.state.messages:
            bodies += [m.data for m in await sub.fetch(1000, timeout=5)]
        await nc.close()
        return bodies

    result: list[bytes] = _run(read())
    return result


def mid_batch(stack: Any, job_id: str, after: int) -> bool:
    """Whether the job has replayed `after` messages and has a batch in flight (the stack's DB)."""
    path = stack.env["DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, timeout=5)) as db:
        row = db.execute(
            "SELECT replayed, in_flight FROM dashboard_job WHERE public_id = ?",
            (uuid.UUID(job_id).hex,),
        ).fetchone()
    return bool(row) and row[0] >= after and json.loads(row[1] or "[]") != []


def test_kill_the_worker_mid_nats_replay_then_resume_loses_nothing(stack, dead_letters) -> None:
    d = dead_letters
    api = stack.api_client("bob", "operator")

    job = api(
        "POST",
        "/jobs",
        {
            "broker": "nats",
            "action": "replay",
            "source": f"advisories/{d['capture']}",
            "selection": {"filter": {"stream": d["stream"]}},
            "destination": f"{d['target']}.in",
            "batch_size": 1000,
        },
    )
    # Kill it while a batch is out: noted as in flight, published, not yet recorded.
    wait_for(lambda: mid_batch(stack, job["id"], COUNT // 4), timeout=120, every=0.002)
    at_kill, final = stack.kill_and_resume(api, job["id"])
    assert at_kill["replayed"] < COUNT, "the replay finished before the kill"
    assert final["replayed"] >= COUNT

    bodies = read_target(d["url"], d["target"])
    expected = {f"m{n:06d}".encode() for n in range(COUNT)}
    lost = expected - set(bodies)
    stored_twice = len(bodies) - len(set(bodies))
    print(
        f"\nkilled at {at_kill['replayed']:,} of {COUNT:,} replayed; after resume: "
        f"{len(set(bodies)):,} delivered, {stored_twice} stored twice "
        f"(job counted {final['duplicates']} sent twice), {len(lost)} lost"
    )
    assert lost == set()
    # Sent again after the kill, the copies carry the same Nats-Msg-Id: the
    # target stream drops them within its duplicate window (2 minutes).
    assert stored_twice == 0
