"""The message-job engine: replay, move or discard messages without losing one.

One job makes one pass over a source queue through the broker's `Transfer`:

    fetch a batch  ->  decide each message  ->  note the batch's ids on the job
    ->  send with confirmation  ->  record the outcomes  ->  settle the source

Nothing is settled (acknowledged) before its copy is confirmed. If the process
dies:
  - before the send: the held messages return to the source; nothing happened;
  - after the send, before the outcomes are recorded: the messages return to
    the source and are sent again on resume. `in_flight` names them, so those
    already sent are counted as duplicates;
  - after recording, before settling: they return too, are sent again, and are
    counted as duplicates from their recorded outcome.
So a message is never lost; at worst it is delivered twice, and counted.

Messages the job does not move (unselected, unroutable, refused, of unknown
origin) are kept: put back behind the unread ones with a `sluice-pass` header.
Meeting one's own pass header means the pass went round: the job stops there.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from brokers.base import BrokerError, Message, Outgoing, Sent, Transfer
from dashboard.auth import audit
from dashboard.jobs import deadletters
from dashboard.kinds import kind_of
from dashboard.models import Job, JobChunk

log = logging.getLogger(__name__)

# Lineage headers: not `x-`, which belongs to the broker.
REPLAY_ID = "sluice-replay-id"
REPLAYED_FROM = "sluice-replayed-from"
REPLAY_COUNT = "sluice-replay-count"
REPLAYED_BY = "sluice-replayed-by"
PASS = "sluice-pass"
KEPT_BECAUSE = "sluice-kept-because"

# Outcomes recorded per message.
REPLAYED, MOVED, DISCARDED, PUBLISHED = "replayed", "moved", "discarded", "published"
# What a message that reached its destination is recorded as, by the job's action.
SENT_AS = {"replay": REPLAYED, "move": MOVED, "import": PUBLISHED}
UNROUTABLE, FAILED, SKIPPED, NO_ORIGIN = (
    "kept: unroutable",
    "kept: failed",
    "kept: not selected",
    "kept: origin unknown",
)


class JobError(Exception):
    """The job cannot start or go on; the message is for the operator."""


def check_pace(
    data: dict[str, Any], default_batch: int, max_batch: int
) -> tuple[float | None, int]:
    """The job's rate limit (messages/s, None for none) and batch size; ValueError if bad."""
    rate = data.get("rate")
    if rate is not None and (
        not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0 or rate > 1e6
    ):
        raise ValueError("rate must be a number of messages per second above 0")
    batch = data.get("batch_size", default_batch)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= max_batch:
        raise ValueError(f"batch_size must be a whole number from 1 to {max_batch}")
    return (float(rate) if rate else None), batch


def lineage(message: Message, job: Job) -> dict[str, Any]:
    headers = {k: v for k, v in message.headers.items() if k != PASS and k != KEPT_BECAUSE}
    try:
        count = int(headers.get(REPLAY_COUNT, 0)) + 1
    except (TypeError, ValueError):
        count = 1
    headers.update(
        {
            REPLAY_ID: str(job.public_id),
            REPLAYED_FROM: f"{job.broker.name}:{job.source}",
            REPLAY_COUNT: count,
            REPLAYED_BY: job.created_by,
        }
    )
    return headers


def seen_by(message: Message, job: Job) -> bool:
    """True if this job already handled the message: the pass has gone round."""
    mark = str(job.public_id)
    return message.headers.get(PASS) == mark or message.headers.get(REPLAY_ID) == mark


class Plan:
    """What to do with each message of a batch."""

    def __init__(self, job: Job, route: Callable[[Message], tuple[str, str] | None]) -> None:
        self.job = job
        self.route = route
        self.selected = deadletters.selector(job.selection, kind_of(job.broker).death_info)
        self.send: list[Outgoing] = []
        self.send_index: list[int] = []  # each Outgoing's place in the batch
        self.settle: list[Message] = []
        self.keep: list[tuple[Message, str]] = []
        self.outcomes: dict[int, list[Any]] = {}  # index in batch -> [id, outcome, where, note]

    def decide(self, index: int, message: Message) -> None:
        job = self.job
        if not self.selected(message):
            self.keep.append((message, "not selected"))
            self.outcomes[index] = [message.id, SKIPPED, "", ""]
            return
        if job.action == "discard":
            self.settle.append(message)
            self.outcomes[index] = [message.id, DISCARDED, "", ""]
            return
        where = self.route(message)
        if where is None:
            self.keep.append((message, "origin unknown"))
            self.outcomes[index] = [
                message.id,
                NO_ORIGIN,
                "",
                "no header names where it came from",
            ]
            return
        body = None
        headers = lineage(message, job)
        if job.edit and job.edit.get("id") == message.id:
            body, headers = deadletters.apply_edit(job.edit, message, headers)
        self.send.append(Outgoing(message, where[0], where[1], headers, body))
        self.send_index.append(index)
        self.outcomes[index] = [
            message.id,
            None,
            f"{where[0]}/{where[1]}" if where[1] else where[0],
            "",
        ]


def run(
    job_id: int,
    transfer_for: Callable[[Job], Transfer],
    route_for: Callable[[Job], Callable[[Message], tuple[str, str] | None]],
    on_progress: Callable[[Job], None] | None = None,
) -> Job:
    """Run (or resume) a job until the pass is over, it is cancelled, or it fails."""
    token = uuid.uuid4().hex
    claimed = Job.objects.filter(pk=job_id, state=Job.QUEUED).update(
        state=Job.RUNNING, run_token=token, heartbeat=timezone.now()
    )
    job = Job.objects.select_related("broker").get(pk=job_id)
    if not claimed:
        return job  # someone else runs it, or it is not to be run
    if job.started_at is None:
        Job.objects.filter(pk=job.pk).update(started_at=timezone.now())
        job.refresh_from_db()
    try:
        transfer = transfer_for(job)
    except BrokerError as exc:
        return _finish(job, token, Job.FAILED, f"could not open the source: {exc}")
    route = route_for(job)
    previous = _previous_outcomes(job)
    chunk = job.chunks.count()
    interval = 1.0 / job.rate if job.rate else 0.0
    # With a rate limit, no batch is larger than one second's worth: a batch
    # goes out at full speed, so a large one would be a burst over the limit.
    batch_size = min(job.batch_size, max(1, int(job.rate))) if job.rate else job.batch_size
    state, error = Job.DONE, ""
    # Messages chosen by id: once each has been dealt with, nothing further is read.
    chosen = set(map(str, job.selection.get("ids") or ()))
    try:
        while job.done < job.total:
            job.refresh_from_db(fields=["state", "run_token"])
            if job.run_token != token:
                log.warning("job %s was taken over by another run; stopping this one", job.pk)
                return job
            if job.state in (Job.CANCELLING, Job.CANCELLED):
                state = Job.CANCELLED
                break
            started = time.monotonic()
            batch = transfer.fetch(min(batch_size, job.total - job.done), timeout=2.0)
            if not batch:
                break  # the source is empty
            round_trip = next((i for i, m in enumerate(batch) if seen_by(m, job)), None)
            if round_trip is not None:
                transfer.release(batch[round_trip:])
                batch = batch[:round_trip]
            acted = 0
            if batch:
                chunk += 1
                acted = _one_batch(job, transfer, Plan(job, route), batch, chunk, previous)
                if on_progress:
                    on_progress(job)
            if round_trip is not None:
                break
            if chosen and all(previous.get(i) not in (None, SKIPPED, "in flight") for i in chosen):
                # Every chosen message was dealt with: the rest of the source is not read.
                Job.objects.filter(pk=job.pk).update(total=F("done"))
                job.refresh_from_db()
                break
            if interval:
                # The rate limit is on the messages acted on: a batch acting on n takes at
                # least n / rate seconds; those read and not selected pass at once.
                time.sleep(max(0.0, acted * interval - (time.monotonic() - started)))
    except BrokerError as exc:
        state, error = (
            Job.FAILED,
            f"stopped: {exc}. Nothing unconfirmed was removed; resume to go on.",
        )
    finally:
        transfer.close()
    return _finish(job, token, state, error)


def _one_batch(
    job: Job, transfer: Transfer, plan: Plan, batch: list[Message], n: int, previous: dict[str, str]
) -> int:
    """Send, record and settle one batch; how many of it were acted on (not passed over)."""
    for index, message in enumerate(batch):
        plan.decide(index, message)
    ids = [o.message.id for o in plan.send]
    # Step 1: say what is about to be sent, so an interruption can count duplicates.
    Job.objects.filter(pk=job.pk).update(in_flight=ids, heartbeat=timezone.now())
    # Step 2: send, and wait for every confirm.
    results: list[Sent] = transfer.send(plan.send) if plan.send else []
    duplicates = sum(1 for i in ids if previous.get(i) in (*SENT_AS.values(), "in flight"))
    sent_ok: list[Message] = []
    for index, outgoing, result in zip(plan.send_index, plan.send, results, strict=True):
        if result.confirmed and result.routed:
            sent_ok.append(outgoing.message)
            plan.outcomes[index][1] = SENT_AS[job.action]
            plan.outcomes[index][3] = result.error  # a remark, e.g. "already there (duplicate)"
        elif result.confirmed:
            plan.keep.append((outgoing.message, "unroutable"))
            plan.outcomes[index][1] = UNROUTABLE
            plan.outcomes[index][3] = "no queue is bound for it"
        else:
            plan.keep.append((outgoing.message, "refused"))
            plan.outcomes[index][1] = FAILED
            plan.outcomes[index][3] = result.error or "not confirmed"
    items = [plan.outcomes[i] for i in range(len(batch))]
    counts = _count(items)
    # Step 3: record the outcomes (and clear in_flight) in one transaction.
    with transaction.atomic():
        JobChunk.objects.create(job=job, n=n, items=items)
        Job.objects.filter(pk=job.pk).update(
            done=F("done") + len(batch),
            replayed=F("replayed") + counts["sent"],
            discarded=F("discarded") + counts["discarded"],
            kept=F("kept") + counts["kept"],
            passed_over=F("passed_over") + counts["passed_over"],
            failed=F("failed") + counts["failed"],
            duplicates=F("duplicates") + duplicates,
            in_flight=[],
            heartbeat=timezone.now(),
        )
    for item in items:
        previous[item[0]] = item[1]
    # Step 4: only now touch the source. Kept messages go behind the unread
    # ones, marked with this pass; then the sent and discarded ones are removed.
    for reason in sorted({r for _, r in plan.keep}):
        group = [m for m, r in plan.keep if r == reason]
        transfer.keep(group, {PASS: str(job.public_id), KEPT_BECAUSE: reason})
    transfer.settle(sent_ok + plan.settle)
    job.refresh_from_db()
    return len(batch) - counts["passed_over"]


def _count(items: list[list[Any]]) -> dict[str, int]:
    counts = {"sent": 0, "discarded": 0, "kept": 0, "failed": 0, "passed_over": 0}
    for _, outcome, _, _ in items:
        if outcome in SENT_AS.values():
            counts["sent"] += 1
        elif outcome == DISCARDED:
            counts["discarded"] += 1
        elif outcome == FAILED:
            counts["failed"] += 1
        else:
            counts["kept"] += 1
            counts["passed_over"] += outcome == SKIPPED
    return counts


def _previous_outcomes(job: Job) -> dict[str, str]:
    """Outcomes from earlier runs of this job, and what was in flight when one stopped."""
    seen: dict[str, str] = {}
    for chunk in job.chunks.all().iterator():
        for item in chunk.items:
            seen[item[0]] = item[1]
    for message_id in job.in_flight or []:
        seen.setdefault(message_id, "in flight")
    return seen


def _finish(job: Job, token: str, state: str, error: str) -> Job:
    """End this run and write the job's completion record, both or neither.

    Only the run that owns the job ends it: one taken over by a resumed run
    writes nothing. A worker killed before this point leaves the job running,
    with no record; the run that resumes it writes the one record.
    """
    with transaction.atomic():
        ended = Job.objects.filter(
            pk=job.pk, run_token=token, state__in=(Job.RUNNING, Job.CANCELLING)
        ).update(state=state, error=error, finished_at=timezone.now(), heartbeat=timezone.now())
        job.refresh_from_db()
        if ended:
            record_completion(job)
    return job


def tally(job: Job) -> Counter[str]:
    """How many messages ended with each outcome: the last recorded one of each message,
    so that one sent again after an interruption is counted once."""
    last: dict[str, str] = {}
    for chunk in job.chunks.order_by("n").iterator():
        for item in chunk.items:
            last[item[0]] = item[1]
    return Counter(last.values())


def record_completion(job: Job) -> None:
    """The audit record of how a finished job ended ("job.<action>.finish").

    Its result is "ok" only if every selected message went where it was to go;
    "failed" if the job failed or none did; "partial" if some did.
    """
    counts = tally(job)
    delivered = sum(counts[outcome] for outcome in SENT_AS.values()) + counts[DISCARDED]
    undelivered = counts[FAILED] + counts[UNROUTABLE] + counts[NO_ORIGIN]
    if job.state == Job.CANCELLED:
        result = "cancelled"
    elif job.state == Job.FAILED or (undelivered and not delivered):
        result = "failed"
    else:
        result = "partial" if undelivered else "ok"
    audit(
        job.created_by,
        f"job.{job.action}.finish",
        broker=job.broker.name,
        destination=job.source,
        count=job.discarded if job.action == "discard" else job.replayed,
        result=result,
        job=str(job.public_id),
        state=job.state,
        total=job.total,
        done=job.done,
        replayed=job.replayed,
        discarded=job.discarded,
        kept=job.kept,
        failed=job.failed,
        not_delivered=undelivered,
        duplicates=job.duplicates,
        **({"error": job.error} if job.error else {}),
    )


def taken_since(broker: Any, source: str, since: Any) -> tuple[set[str], list[Job]]:
    """The messages jobs have taken off `source` for good since `since`, by id, and the jobs.

    Jobs that ran (or run) after that moment, and that remove what they act on (a
    RabbitMQ queue's replay, move or discard; a NATS replay deleting its originals):
    a look taken before them still lists those messages.
    """
    ids: set[str] = set()
    jobs: list[Job] = []
    recent = Job.objects.filter(broker=broker, source=source, started_at__isnull=False).exclude(
        finished_at__lte=since
    )
    for job in recent.order_by("started_at"):
        fields = {"action": job.action, "source": job.source, "target": job.target}
        if not kind_of(broker).removes_originals(broker, fields):
            continue
        jobs.append(job)
        for chunk in job.chunks.iterator():
            ids.update(str(i[0]) for i in chunk.items if i[1] in (REPLAYED, MOVED, DISCARDED))
    return ids, jobs


# Which outcomes a listing shows: every one, those left in the source, or what the job
# did (each message acted on, then each kept for a reason: all but the passed over).
OUTCOME_VIEWS = ("all", "kept", "done")


def outcomes(job: Job, which: str = "all", limit: int = 500) -> list[list[Any]]:
    """The per-message outcomes of `which` (OUTCOME_VIEWS), newest batch first.

    "done" leads with the messages acted on (replayed, moved, discarded), then those
    kept for a reason (failed, unroutable, origin unknown); the messages read and not
    selected are left out, however many there were.
    """
    if which not in OUTCOME_VIEWS:
        raise ValueError(f"outcomes are one of {', '.join(OUTCOME_VIEWS)}")
    acted: list[list[Any]] = []
    kept: list[list[Any]] = []
    for chunk in job.chunks.order_by("-n").iterator():
        for item in chunk.items:
            outcome = str(item[1])
            if which == "all":
                acted.append(item)
            elif which == "kept" and outcome.startswith("kept"):
                acted.append(item)
            elif which == "done" and outcome != SKIPPED:
                (kept if outcome.startswith("kept") else acted).append(item)
            if len(acted) >= limit:
                return acted
    return (acted + kept)[:limit]
