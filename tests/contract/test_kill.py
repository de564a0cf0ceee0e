"""kill -9 of the Celery worker in the middle of a replay, then resume: nothing is lost.

Runs the whole stack (daphne and a real Celery worker, `tests/stack_fixtures.py`).
The worker is killed while a batch is out, noted as in flight: being sent, or sent
and not yet recorded. Each kind replays as many messages as it did alone before
(`Registration.kill_count`): enough that a quarter of them take a while.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests

from tests.app_fixtures import wait_for
from tests.contract.flow import mid_batch, start_job
from tests.contract.kinds import Registration


def nothing_lost(
    kind: Registration, src: Any, count: int, at_kill: Any, final: Any, what: str
) -> int:
    """Check the kill came mid-job and every message reached its destination; how many
    reached it twice."""
    assert count // 4 <= at_kill["done"] < count, f"the worker was not killed mid-{what}"
    delivered = kind.copy_bodies(src)
    lost = set(src.bodies) - set(delivered)
    twice = sum(n - 1 for n in delivered.values())
    print(
        f"\n{kind.name} {what}: killed at {at_kill['done']:,} of {count:,}; after resume "
        f"{len(delivered):,} delivered, {twice} twice (the job counted {final['duplicates']} "
        f"sent twice), {len(lost)} lost"
    )
    assert lost == set()
    assert set(delivered) <= set(src.bodies)
    return twice


@pytest.mark.timeout(600)
def test_kill_the_worker_mid_replay_then_resume_loses_nothing(stack, kind: Registration) -> None:
    kind.require("transfer")
    count = kind.kill_count
    src = kind.dead_letters(count)
    api = stack.api_client("bob", "operator")
    api.collected(kind.broker_name, src.key)
    job = start_job(api, {**kind.replay(src), "batch_size": 1000})
    wait_for(lambda: mid_batch(stack, job["id"], count // 4), timeout=120, every=0.002)

    at_kill, final = stack.kill_and_resume(api, job["id"])
    twice = nothing_lost(kind, src, count, at_kill, final, "replay")
    assert final["replayed"] >= count
    # A log's job fixes its end when created; a queue's counts what the queue holds at each run.
    assert final["total"] == count or kind.drains
    assert twice <= final["duplicates"], "every duplicate is counted by the job"
    assert twice == 0 or not kind.drops_resent_copies, "the target stored a resent copy"
    assert kind.count_source(src) == (0 if kind.drains else count)


@pytest.mark.timeout(600)
def test_kill_the_worker_mid_import_then_resume_loses_nothing(stack, kind: Registration) -> None:
    """An export imported into an origin as a job, the worker killed with a batch out."""
    kind.require("transfer")
    count = kind.kill_count // 2
    src = kind.dead_letters(count)
    api = stack.api_client("bob", "operator")
    api.collected(kind.broker_name, src.key)
    auth = {"Authorization": f"Bearer {stack.token('bob', 'operator')}"}
    base = f"{stack.url}/api/v1/brokers/{kind.broker_name}"
    exported = requests.post(
        f"{base}/dead-letters/export", json={"source": src.key}, headers=auth, timeout=300
    )
    assert exported.status_code == 200 and exported.content.count(b"\n") == count
    created = requests.post(
        f"{base}/import",
        params={**kind.import_to(src, 0), "batch_size": "1000", "name": "all.ndjson"},
        data=exported.content,
        headers={**auth, "Content-Type": "application/x-ndjson"},
        timeout=300,
    )
    assert created.status_code == 201, created.text[:300]
    job = api("POST", f"/jobs/{created.json()['id']}/start")
    wait_for(lambda: mid_batch(stack, job["id"], count // 4), timeout=120, every=0.002)

    at_kill, final = stack.kill_and_resume(api, job["id"])
    twice = nothing_lost(kind, src, count, at_kill, final, "import")
    assert final["state"] == "done" and final["replayed"] >= count
    assert twice <= final["duplicates"], "every duplicate is counted by the job"
    assert kind.source_bodies(src) == Counter(src.bodies)  # an import reads only its file
