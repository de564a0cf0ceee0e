"""Cancel and resume, on the whole stack: a cancelled replay stops between batches with
every message either copied or still in its source; resumed, it takes the rest, once each."""

from __future__ import annotations

from collections import Counter

from tests.app_fixtures import wait_for
from tests.contract.flow import batch_sizes, start_job
from tests.contract.kinds import Registration

COUNT, BATCH, RATE = 50, 5, 20  # ten batches, a quarter of a second each


def test_a_cancelled_replay_stops_between_batches_and_resuming_finishes_it(
    stack, kind: Registration
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(COUNT)
    api = stack.api_client("bob", "operator")
    api.collected(kind.broker_name, src.key)
    job = start_job(api, {**kind.replay(src), "batch_size": BATCH, "rate": RATE})
    path = f"/jobs/{job['id']}"
    wait_for(lambda: api("GET", path)["done"] >= BATCH, timeout=60, every=0.05)
    api("POST", f"{path}/cancel")
    stopped = wait_for(lambda: (j := api("GET", path))["state"] == "cancelled" and j, timeout=30)

    done = stopped["done"]
    assert 0 < done < COUNT and done % BATCH == 0, stopped
    assert stopped["replayed"] == done
    copied = kind.copy_bodies(src)
    assert sum(copied.values()) == len(copied) == done
    held = COUNT - done if kind.drains else COUNT
    wait_for(lambda: kind.count_source(src) == held, timeout=10, every=0.2)

    api("POST", f"{path}/resume")
    final = wait_for(lambda: (j := api("GET", path))["state"] in ("done", "failed") and j)
    assert [final[k] for k in ("state", "done", "replayed", "duplicates")] == [
        "done", COUNT, COUNT, 0,
    ]  # fmt: skip
    assert kind.copy_bodies(src) == Counter(src.bodies)
    assert kind.count_source(src) == (0 if kind.drains else COUNT)
    sizes = batch_sizes(stack, job["id"])
    assert sum(sizes) == COUNT and max(sizes) <= BATCH  # batches no larger than asked
