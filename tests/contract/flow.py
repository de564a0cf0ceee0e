"""Registration-neutral steps the contract tests share: start a job from its preview, run it, look
inside the stack's database.

`api(method, path, body=None)` is a call to /api/v1 that asserts success and
returns the JSON: the in-process `api` fixture, or the stack's `api_client`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

Api = Callable[..., Any]


def collect(broker: Any) -> Any:
    """One collection of the Broker row, as the worker runs it; the row as it stands then."""
    from dashboard.tasks import collect_broker

    collect_broker(broker.pk)
    broker.refresh_from_db()
    return broker


def start_job(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """Create the job as a preview, then start it, confirming the preview when it must be."""
    preview = api("POST", "/jobs", {**body, "dry_run": True})
    assert preview["state"] == "preview", preview
    confirm = (preview["preview"] or {}).get("confirm")
    started = api("POST", f"/jobs/{preview['id']}/start", {"confirm": confirm} if confirm else None)
    assert started["state"] == "queued", started
    return dict(started)


def run_here(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """Run a queued job in this process, as a worker would; the job as the API shows it then."""
    from dashboard.models import Job
    from dashboard.tasks import run_job

    run_job(Job.objects.get(public_id=job["id"]).pk)
    return dict(api("GET", f"/jobs/{job['id']}"))


def replay_here(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    return run_here(api, start_job(api, body))


def _stack_db(stack: Any) -> sqlite3.Connection:
    return sqlite3.connect(stack.env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=5)


def mid_batch(stack: Any, job_id: str, after: int) -> bool:
    """Whether the stack's job has done `after` messages and has a batch out: noted as in
    flight (about to be sent, or sent and not yet recorded)."""
    with closing(_stack_db(stack)) as db:
        row = db.execute(
            "SELECT done, in_flight FROM dashboard_job WHERE public_id = ?",
            (uuid.UUID(job_id).hex,),
        ).fetchone()
    return bool(row) and row[0] >= after and json.loads(row[1] or "[]") != []


def batch_sizes(stack: Any, job_id: str) -> list[int]:
    """How many messages each recorded batch of the stack's job held, in order."""
    with closing(_stack_db(stack)) as db:
        rows = db.execute(
            "SELECT c.items FROM dashboard_jobchunk c JOIN dashboard_job j ON c.job_id = j.id"
            " WHERE j.public_id = ? ORDER BY c.n",
            (uuid.UUID(job_id).hex,),
        ).fetchall()
    return [len(json.loads(items)) for (items,) in rows]
