"""Starting, previewing, cancelling and resuming message jobs, for the pages and the API alike."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from brokers.base import BrokerError, Transfer
from dashboard.auth import audit
from dashboard.celery import app as celery_app
from dashboard.jobs import engine as jobs
from dashboard.jobs import guard as jobguard
from dashboard.jobs import imports
from dashboard.jobs.guard import Invalid, NeedsConfirmation  # callers say jobservice.Invalid
from dashboard.kinds import kind_of
from dashboard.models import Broker, Job

RUN_JOB = "dashboard.tasks.run_job"
# What a job's preview looks at again when it starts (Job fields).
JOB_FIELDS = ("action", "source", "selection", "target", "edit", "rate", "batch_size", "cursor")


def router(job: Job) -> Any:
    """The function that says where each message of `job` goes, or None for "keep it"."""
    if job.action == imports.ACTION:
        return imports.router(job)
    return kind_of(job.broker).router(job)


def transfer_for(job: Job) -> Transfer:
    """The broker session `job` reads its source through (an import: its file)."""
    if job.action == imports.ACTION:
        return imports.transfer_for(job)
    return kind_of(job.broker).transfer_for(job)


def check(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """The job's fields from request data, or Invalid saying what is wrong."""
    return kind_of(broker).check_job(broker, data)


def preview(broker: Broker, fields: dict[str, Any]) -> dict[str, Any]:
    """How many messages the job would take, and where they would go, from a look at the source."""
    return kind_of(broker).preview(broker, fields)


def create(user: Any, broker: Broker, data: dict[str, Any]) -> Job:
    """Check, then either preview (dry_run) or queue the job. Audited either way.

    A job that removes messages from its source is only ever previewed here
    (jobguard); NeedsConfirmation if asked to run at once.
    """
    fields = check(broker, data)
    jobguard.check_role(user, broker, fields)
    destructive = jobguard.removes_originals(broker, fields)
    dry_run = bool(data.get("dry_run"))
    if destructive and not dry_run:
        raise jobguard.must_preview(fields)
    job = Job(broker=broker, created_by=user.get_username(), **fields)
    if dry_run:
        job.preview = _look(broker, fields, destructive)
        job.state = Job.PREVIEW
        job.save()
        _audit(user, job, "preview", count=job.preview["estimate"])
        return job
    job.save()
    _enqueue(job)
    _audit(user, job, "start", **_start_detail(job))
    return job


def _look(broker: Broker, fields: dict[str, Any], destructive: bool) -> dict[str, Any]:
    """The preview of a job, with the text that confirms it when the job is destructive."""
    try:
        seen = preview(broker, fields)
    except BrokerError as exc:
        raise Invalid(f"could not look at {fields['source']}: {exc}") from None
    if destructive:
        seen["confirm"] = jobguard.confirm_text(fields, seen)
    return seen


def _start_detail(job: Job) -> dict[str, Any]:
    """What a job's "start" audit record says it will do, whether or not a preview came first."""
    edit = {"edit": _describe_edit(job.edit)} if job.edit else {}
    return {"selection": job.selection, "target": job.target, "rate": job.rate, **edit}


def _describe_edit(edit: dict[str, Any]) -> dict[str, Any]:
    import base64
    import hashlib

    out: dict[str, Any] = {"id": edit["id"]}
    if "body_base64" in edit:
        out["new_body_sha256"] = hashlib.sha256(base64.b64decode(edit["body_base64"])).hexdigest()
    if "headers" in edit:
        out["headers"] = edit["headers"]
    return out


def start(user: Any, job: Job, confirm: Any = None) -> Job:
    """Run a previewed job; a destructive one needs its preview's `confirm` text, still true."""
    if job.state != Job.PREVIEW:
        raise Invalid(f"this job is {job.state}; only a previewed job can be started")
    fields = {name: getattr(job, name) for name in JOB_FIELDS}
    jobguard.check_role(user, job.broker, fields)
    detail: dict[str, Any] = {}
    if jobguard.removes_originals(job.broker, fields):
        jobguard.check_confirmation(job, confirm)
        fresh = _look(job.broker, fields, destructive=True)
        change = jobguard.compare(job, fresh)
        # Only an exact count can go stale: beyond the peek limit, unless the server
        # counted them, both counts are estimates from the last collection's queue
        # length, which moves on its own.
        exact = all(p.get("complete") or p.get("counted") is not None for p in (job.preview, fresh))
        if exact and fresh["estimate"] > job.preview["estimate"]:
            # It would take more than was confirmed: show the new count, ask again.
            Job.objects.filter(pk=job.pk, state=Job.PREVIEW).update(preview=fresh)
            job.refresh_from_db()
            raise NeedsConfirmation(
                f"not started: {change}. Check the new preview and confirm it with "
                f'{{"confirm": "{fresh["confirm"]}"}}'
            )
        if change:
            detail["preview_changed"] = change
            job.preview = {**job.preview, "at_start": change}
    if (
        Job.objects.filter(pk=job.pk, state=Job.PREVIEW).update(
            state=Job.QUEUED, preview=job.preview
        )
        == 0
    ):
        job.refresh_from_db()
        raise Invalid(f"this job is {job.state}; only a previewed job can be started")
    job.refresh_from_db()
    _enqueue(job)
    _audit(user, job, "start", **_start_detail(job), **detail)
    return job


def cancel(user: Any, job: Job) -> Job:
    changed = Job.objects.filter(
        pk=job.pk, state__in=[Job.QUEUED, Job.RUNNING, Job.PREVIEW]
    ).update(state=Job.CANCELLING)
    job.refresh_from_db()
    if not changed:
        raise Invalid(f"this job is {job.state}; it cannot be cancelled")
    if job.stalled or job.started_at is None:
        # Nobody runs it to notice; it can be marked at once, and this is its end.
        with transaction.atomic():
            if Job.objects.filter(pk=job.pk, state=Job.CANCELLING).update(
                state=Job.CANCELLED, finished_at=timezone.now()
            ):
                job.refresh_from_db()
                jobs.record_completion(job)
        job.refresh_from_db()
    _audit(user, job, "cancel", count=job.done)
    return job


def resume(user: Any, job: Job) -> Job:
    """Go on with a cancelled, failed or interrupted job from where it stopped."""
    resumable = [Job.CANCELLED, Job.FAILED]
    if job.stalled:
        resumable += [Job.RUNNING, Job.CANCELLING]
    if job.done >= job.total and job.total and job.state != Job.RUNNING:
        raise Invalid("this job has taken every message it was to take")
    if (
        Job.objects.filter(pk=job.pk, state__in=resumable).update(
            state=Job.QUEUED, error="", finished_at=None
        )
        == 0
    ):
        raise Invalid(
            f"this job is {job.state}; only a cancelled, failed or interrupted job can be resumed"
        )
    job.refresh_from_db()
    _enqueue(job)
    _audit(user, job, "resume", count=job.done)
    return job


def _audit(user: Any, job: Job, verb: str, **detail: Any) -> None:
    audit(
        user,
        f"job.{job.action}.{verb}",
        broker=job.broker.name,
        destination=job.source,
        job=str(job.public_id),
        **detail,
    )


def _enqueue(job: Job) -> None:
    # By name: the worker runs it (dashboard/tasks.py), and the job engine
    # need not import the tasks that drive it.
    celery_app.send_task(RUN_JOB, args=[job.pk])


def as_json(job: Job) -> dict[str, Any]:
    return {
        "id": str(job.public_id),
        "broker": job.broker.name,
        "action": job.action,
        "source": job.source,
        "selection": job.selection,
        "target": job.target,
        "rate": job.rate,
        "batch_size": job.batch_size,
        "state": "interrupted" if job.stalled else job.state,
        "error": job.error,
        "preview": job.preview or None,
        "total": job.total,
        "done": job.done,
        "replayed": job.replayed,
        "discarded": job.discarded,
        "kept": job.kept,
        # Of those kept: read on the way and not selected; the rest were kept for a reason.
        "passed_over": job.passed_over,
        "kept_for_a_reason": job.kept - job.passed_over,
        # A job over messages chosen by id: how many were chosen, and dealt with so far.
        "chosen": len(job.selection.get("ids") or ()) or None,
        "chosen_done": job.replayed + job.discarded + job.failed + job.kept - job.passed_over,
        "failed": job.failed,
        "duplicates": job.duplicates,
        "progress": round(job.progress, 4),
        "rate_now": round(job.speed, 1) if job.speed else None,
        "eta_seconds": round(job.eta) if job.eta is not None else None,
        "created_by": job.created_by,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
