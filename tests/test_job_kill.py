"""kill -9 the worker in the middle of a 100,000-message replay; resume; nothing is lost."""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import pika
import pytest
import requests

from tests.app_fixtures import wait_for

COUNT = 100_000


@pytest.fixture
def hundred_thousand_dead_letters(stack, unique_name):
    rabbit = stack.brokers["rabbitmq"]
    auth = (rabbit["username"], rabbit["password"])
    api = rabbit["management_url"]
    ex, dlx, dlq = f"kill-{unique_name}", f"kill-dlx-{unique_name}", f"kill-{unique_name}.dlq"
    originals = [f"kill-orig-{unique_name}-{i}" for i in range(4)]
    connection = pika.BlockingConnection(pika.URLParameters(rabbit["amqp_url"]))
    ch = connection.channel()
    ch.exchange_declare(ex, "direct")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    for i, q in enumerate(originals):
        ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
        ch.queue_bind(q, ex, str(i))
    # While filling, the originals expire everything at once into the DLQ.
    policy = f"{api}/api/policies/%2F/{quote('kill-' + unique_name, safe='')}"
    requests.put(
        policy,
        auth=auth,
        timeout=10,
        json={
            "pattern": f"^kill-orig-{unique_name}-",
            "definition": {"message-ttl": 0},
            "apply-to": "queues",
        },
    ).raise_for_status()
    body = b"x" * 200
    for n in range(COUNT):
        ch.basic_publish(
            ex, str(n % 4), body, pika.BasicProperties(message_id=f"k{n:06d}", delivery_mode=2)
        )
    wait_for(
        lambda: ch.queue_declare(dlq, passive=True).method.message_count == COUNT,
        timeout=120,
        every=1,
    )
    requests.delete(policy, auth=auth, timeout=10).raise_for_status()
    yield {"dlq": dlq, "originals": originals, "channel": ch}
    for q in [dlq, *originals]:
        ch.queue_delete(q)
    ch.exchange_delete(ex)
    ch.exchange_delete(dlx)
    connection.close()


def ids_in(ch, queue: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for method, props, _ in ch.consume(queue, inactivity_timeout=2, auto_ack=True):
        if method is None:
            break
        seen[props.message_id] += 1
    ch.cancel()
    return seen


def test_kill_the_worker_mid_replay_then_resume_loses_nothing(stack, hundred_thousand_dead_letters):
    q = hundred_thousand_dead_letters
    api = stack.api_client("bob", "operator")

    key = f"//{q['dlq']}"
    api.collected("rabbit", key)
    preview = api(
        "POST",
        "/jobs",
        {
            "broker": "rabbit",
            "action": "replay",
            "source": key,
            "selection": {"all": True},
            "batch_size": 1000,
            "dry_run": True,  # a replay takes each original off the DLQ: preview, then confirm
        },
    )
    job = api("POST", f"/jobs/{preview['id']}/start", {"confirm": preview["preview"]["confirm"]})
    wait_for(lambda: api("GET", f"/jobs/{job['id']}")["done"] >= COUNT // 4, timeout=120, every=0.2)

    at_kill, final = stack.kill_and_resume(api, job["id"])
    assert at_kill["done"] < COUNT, "the replay finished before the kill"

    ch = q["channel"]
    delivered: Counter[str] = Counter()
    for original in q["originals"]:
        delivered.update(ids_in(ch, original))
    left = ids_in(ch, q["dlq"])
    everything = set(delivered) | set(left)
    lost = {f"k{n:06d}" for n in range(COUNT)} - everything
    duplicates = sum(n - 1 for n in delivered.values() if n > 1)
    print(
        f"\nkilled at {at_kill['done']:,} of {COUNT:,}; after resume: delivered {len(delivered):,} "
        f"ids, {duplicates} delivered twice (job reported {final['duplicates']}), {len(left)} left, {len(lost)} lost"
    )
    assert lost == set()
    assert len(left) == 0
    assert final["replayed"] >= COUNT
    assert duplicates <= final["duplicates"], "every duplicate is counted by the job"
