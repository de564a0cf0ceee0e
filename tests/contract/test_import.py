"""Importing NDJSON on every kind: export, change a line with a script, import it back to any
destination as a job (dry run, confirmed writes, an outcome per line), and nothing of a bad file."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import pytest

from dashboard.models import AuditEntry, Broker, Job
from tests.contract.flow import collect, run_here
from tests.contract.kinds import Registration

pytestmark = pytest.mark.django_db


def exported(api: Any, broker: Broker, source: str) -> bytes:
    response = api.raw("POST", f"/brokers/{broker.name}/dead-letters/export", {"source": source})
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def import_file(api: Any, broker: Broker, data: bytes, query: dict[str, str]) -> Any:
    path = f"/brokers/{broker.name}/import?{urlencode({**query, 'name': 'fixed.ndjson'})}"
    return api.raw("POST", path, data.decode("ascii"))


def test_an_export_fixed_by_a_script_imports_back_to_any_destination(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(6)
    collect(broker)
    lines = exported(api, broker, src.key).splitlines()
    # The script: fix the third message's body, keep everything else as exported.
    fixed = json.loads(lines[2])
    was = fixed["body"].encode()
    fixed["body"] = '{"fixed": true}'
    lines[2] = json.dumps(fixed).encode()
    data = b"\n".join(lines) + b"\n"

    response = import_file(api, broker, data, kind.import_to(src, 0))
    assert response.status_code == 201, response.content[:300]
    job = response.json()
    assert (job["state"], job["action"], job["total"]) == ("preview", "import", 6)
    assert job["preview"]["selected"] == 6 and sum(n for _, n in job["preview"]["targets"]) == 6
    assert kind.copies(src) == []  # a dry run publishes nothing

    api("POST", f"/jobs/{job['id']}/start")
    done = run_here(api, job)
    assert [done[k] for k in ("state", "total", "done", "replayed", "failed")] == [
        "done", 6, 6, 6, 0,
    ]  # fmt: skip
    copies = kind.copies(src)
    assert {c.origin for c in copies} == {0}
    assert Counter(c.body for c in copies) == Counter(src.bodies) - Counter([was]) + Counter(
        [b'{"fixed": true}']
    )
    assert all(c.headers.get("sluice-replay-id") == job["id"] for c in copies)
    outcomes = api("GET", f"/jobs/{job['id']}?outcomes=all")["outcomes"]
    assert sorted(o[0] for o in outcomes) == [f"line {n}" for n in range(1, 7)]
    assert {o[1] for o in outcomes} == {"published"}
    assert kind.source_bodies(src) == Counter(src.bodies)  # the source is not touched
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"job.import.preview", "job.import.start", "job.import.finish"} <= actions


def test_a_file_with_a_bad_line_is_refused_whole_and_nothing_is_stored(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("transfer")
    src = kind.dead_letters(2)
    collect(broker)
    good = exported(api, broker, src.key).splitlines()
    bad = [good[0], b'{"body": 5}', good[1], b"[1, 2]", b'{"body_base64": "%%%"}', b"{nope"]
    response = import_file(api, broker, b"\n".join(bad), kind.import_to(src, 0))
    assert response.status_code == 400
    error = response.json()["error"]
    for words in ('line 2: "body" must be text', "line 4: not a JSON object", "line 5", "line 6"):
        assert words in error, error
    empty = import_file(api, broker, b"\n\n", kind.import_to(src, 0))
    assert empty.status_code == 400 and "no messages" in empty.json()["error"]
    # A destination that is not there: refused before any line is stored.
    nowhere = {k: "sluice-no-such-place" for k in kind.import_to(src, 0)}
    response = import_file(api, broker, good[0] + b"\n", nowhere)
    assert response.status_code == 400, response.content[:300]
    assert not Job.objects.filter(action="import").exists()
    assert kind.copies(src) == []
