"""A million dead letters exported from a real JetStream stream, in bounded memory, through
the ASGI path the server uses, every message once and the digest that of the bytes sent."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from nats.js.api import StorageType

from dashboard.models import AuditEntry
from tests.app_fixtures import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MILLION = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def fill(js: Any, subject: str, count: int) -> None:
    """`count` messages "n=<n>" on `subject`, published without waiting for each ack."""

    async def main(nc: Any) -> None:
        for n in range(count):
            await nc.publish(subject, b"n=%07d" % n + b"." * 80)
            if n % 20000 == 19999:
                await nc.flush(timeout=30)
        await nc.flush(timeout=30)

    nc = js.connect()
    js.run(main(nc), timeout=600)


def stream_messages(js: Any, name: str) -> int:
    async def work(ctx: Any) -> int:
        return int((await ctx.stream_info(name)).state.messages)

    count: int = js(work)
    return count


def test_a_million_dead_letters_export_in_bounded_memory(
    nats_broker: Any, js: Any, unique_name: str, token_for: Any
) -> None:
    name = f"{unique_name}_DLQ"
    subject = f"{unique_name}.dead"
    # allow_direct, as `nats stream add` sets it: the export reads batches of direct gets.
    js.add_stream(name, [subject], storage=StorageType.MEMORY, allow_direct=True)
    fill(js, subject, MILLION)
    wait_for(lambda: stream_messages(js, name) == MILLION, timeout=120)

    client = AsyncClient()
    token = token_for("carol")

    async def download() -> tuple[int, int, int, str, int, int]:
        response = await client.post(
            "/api/v1/brokers/nats/dead-letters/export",
            data=json.dumps({"source": f"stream/{name}"}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert response.is_async  # streamed as read, not gathered first
        digest = hashlib.sha256()
        lines = size = 0
        start = peak = resident()
        expected = 0
        async for chunk in response.streaming_content:
            digest.update(chunk)
            size += len(chunk)
            # Every line counted; the first and last of each batch read whole, in order.
            batch = chunk.splitlines()
            for n in (0, len(batch) - 1):
                obj = json.loads(batch[n])
                assert obj["body"].startswith(f"n={expected + n:07d}"), obj["body"][:10]
                assert obj["position"] == expected + n + 1
            expected += len(batch)
            lines += len(batch)
            peak = max(peak, resident())
        return lines, size, peak - start, digest.hexdigest(), start, expected

    lines, size, grew, digest, start, _ = async_to_sync(download)()
    print(
        f"\nexported {lines:,} messages, {size / 2**20:.0f} MiB; resident grew {grew / 2**20:.1f} MiB"
    )
    assert lines == MILLION
    assert size > 100 * MILLION  # over 100 MB went out...
    assert grew < 64 * 1024 * 1024, f"resident memory grew by {grew / 2**20:.0f} MiB"  # ...in this
    entry = AuditEntry.objects.get(action="messages.export")
    assert (entry.count, entry.result, entry.detail["sha256"]) == (MILLION, "ok", digest)
