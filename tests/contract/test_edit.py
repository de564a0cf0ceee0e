"""Edit then replay: one message, selected by its id, goes back with the body and headers the
operator gave it; the broker's own headers travel as they were; the others stay."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from typing import Any

import pytest

from dashboard.models import AuditEntry, Broker
from tests.contract.flow import collect, replay_here
from tests.contract.kinds import Registration

pytestmark = pytest.mark.django_db

EDITED = b'{"n": 1, "fixed": true}'


def test_an_edited_message_is_replayed_as_edited_and_only_it(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(3)
    collect(broker)
    chosen = src.ids[1]
    edit = {
        "id": chosen,
        "body_base64": base64.b64encode(EDITED).decode(),
        "headers": {"tenant": "acme"},
    }
    job = replay_here(api, {**kind.replay(src), "selection": {"ids": [chosen]}, "edit": edit})
    passed = 0 if kind.seeks_ids else 2  # read on the way to the chosen one
    assert [job[k] for k in ("state", "done", "replayed", "kept", "failed")] == [
        "done", 1 + passed, 1, passed, 0,
    ]  # fmt: skip

    (copy,) = kind.copies(src)
    assert (copy.origin, copy.body) == (1, EDITED)
    assert copy.headers["tenant"] == "acme"
    assert all(name in copy.headers for name in kind.own_headers), copy.headers
    assert copy.headers["sluice-replay-id"] == job["id"]
    # The original stays as it was, or (a queue) only the two not chosen stay.
    left = [src.bodies[0], src.bodies[2]] if kind.drains else src.bodies
    assert kind.source_bodies(src) == Counter(left)
    entry = AuditEntry.objects.get(action="job.replay.start")
    assert (entry.user, entry.detail["edit"]["id"]) == ("bob", chosen)
    assert entry.detail["edit"]["new_body_sha256"] == hashlib.sha256(EDITED).hexdigest()
    assert entry.detail["selection"] == {"ids": [chosen]}
