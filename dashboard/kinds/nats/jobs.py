"""Replaying NATS dead letters with the message-job engine (dashboard.jobs.engine).

A job's source is either the advisory capture stream, `advisories/<stream>`
(each advisory points at a message in its stream), or a dead-letter stream,
`stream/<name>`. Sequences are fixed when the job is created, so one job is
one pass; its position is the job's own cursor (`Job.cursor`), saved only
after JetStream acknowledged the copies (brokers.nats.transfer). Each copy
goes to its original subject (the stored subject, or for a dead-letter stream
the subject an origin header names) or to a subject the operator chose.
`delete_original` also deletes each original after its copy's PubAck.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import F

from brokers.base import BrokerError, Message
from brokers.nats.client import BadSubject, Missing, check_subject
from brokers.nats.deadletters import (
    ADVISORY_PREFIX,
    Advisory,
    NoSuchName,
    advisory_filter,
    count_below,
    count_between,
    reason_kind,
)
from brokers.nats.pipeline import DeadLetterClient
from brokers.nats.transfer import (
    SequenceTransfer,
    SubjectSender,
    origin_subject,
    read_dead_letters,
)
from brokers.nats.wire import STREAM_NAME, header_problem
from dashboard.jobs import deadletters
from dashboard.jobs import engine as jobs
from dashboard.jobs.guard import Invalid
from dashboard.kinds.nats.deadletters import client_for, death_info
from dashboard.models import Broker, Job

ACTIONS = ("replay", "move")
# A subject no advisory is published on: a selection no advisory can match.
NOTHING = f"{ADVISORY_PREFIX}NONE.none.none"
KINDS = {"advisories": "advisories", "stream": "stream"}
# The page and API speak of streams, consumers and subjects; the job engine's
# filter (dashboard.jobs.deadletters.matches) of queues, exchanges and routing keys.
FILTER_NAMES = {"stream": "queue", "consumer": "exchange", "subject": "routing_key"}


def parse_source(source: Any) -> tuple[str, str]:
    """("advisories" | "stream", stream name) from a job's source key."""
    if not isinstance(source, str) or "/" not in source:
        raise Invalid(
            "source must be 'advisories/<capture stream>' or 'stream/<dead-letter stream>'"
        )
    kind, _, name = source.partition("/")
    if kind not in KINDS or not STREAM_NAME.fullmatch(name):
        raise Invalid(
            "source must be 'advisories/<capture stream>' or 'stream/<dead-letter stream>'"
        )
    return kind, name


def nats_selection(selection: Any) -> dict[str, Any]:
    """The selection with NATS filter names turned into the engine's; ValueError if malformed."""
    if isinstance(selection, dict) and isinstance(selection.get("filter"), dict):
        rule = {FILTER_NAMES.get(k, k): v for k, v in selection["filter"].items()}
        selection = {"filter": rule}
    return deadletters.check_selection(selection)


def check(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """The job's fields from request data, sequences fixed now; Invalid saying what is wrong."""
    action = data.get("action")
    if action == "discard":
        raise Invalid(
            "NATS dead letters are not discarded one by one here; "
            "replay with delete_original, or set the stream's limits"
        )
    if action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
    kind, name = parse_source(data.get("source"))
    try:
        selection, edit = deadletters.check_choice(
            data, nats_selection(data.get("selection", {"all": True}))
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    for header, value in (edit.get("headers") or {}).items():
        # An edited header goes into the copy's header block as written.
        problem = header_problem(header, value)
        if problem:
            raise Invalid(f"edit: {problem}")
    where = _destination(data.get("destination"))
    if action == "move" and not where:
        raise Invalid("move needs a destination subject")
    delete = data.get("delete_original", False)
    if not isinstance(delete, bool):
        raise Invalid("delete_original must be true or false")
    try:
        rate, batch = jobs.check_pace(data, 1000, 10000)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    try:
        with client_for(broker, "sluice-job-check") as client:
            info = _source_info(client, kind, name)
            if where and not client.streams_for(where):
                raise Invalid(
                    f"no stream stores subject {where!r}: JetStream would refuse every copy"
                )
    except BrokerError as exc:
        raise Invalid(f"could not read {name}: {exc}") from None
    target: dict[str, Any] = {"subject": where} if where else {"mode": "original subject"}
    if delete:
        target["delete_original"] = True
    return {
        "action": action,
        "source": f"{kind}/{name}",
        "selection": selection,
        "target": target,
        "edit": edit,
        "rate": rate,
        "batch_size": batch,
        "cursor": {
            "kind": kind,
            "stream": name,
            "first": info.first_seq,
            "end": info.last_seq + 1 if info.messages else info.first_seq,
            "next": info.first_seq,
            "delete": [],
        },
    }


def _destination(where: Any) -> str:
    """The subject copies go to ("" for each message's own), or Invalid."""
    if isinstance(where, dict):
        where = where.get("subject")
    if where in (None, ""):
        return ""
    if not isinstance(where, str):
        raise Invalid("destination must be a subject, e.g. orders.retry")
    try:
        check_subject(where, wildcards=False)
    except BadSubject as exc:
        raise Invalid(f"destination: {exc}") from None
    return where


def _source_info(client: DeadLetterClient, kind: str, name: str) -> Any:
    try:
        return client.info(name, fresh=True)
    except Missing as exc:
        if kind == "advisories":
            raise BrokerError(f"{exc}: the advisory capture stream is not there") from None
        raise


def transfer_for(job: Job) -> SequenceTransfer:
    cursor = job.cursor

    def save(next_seq: int, deletes: list[list[Any]]) -> None:
        job.cursor = dict(job.cursor, next=next_seq, delete=deletes)
        Job.objects.filter(pk=job.pk).update(cursor=job.cursor)

    def skipped(n: int) -> None:
        # Sequences with nothing to replay (removed, or not an advisory) are
        # taken off the total as they are met, so the pass ends at 100 %.
        Job.objects.filter(pk=job.pk).update(total=F("total") - n)
        job.total -= n

    client = client_for(job.broker, "sluice-job")
    subject = advisory_subject_for(job.selection) if cursor["kind"] == "advisories" else None
    try:
        # Progress counts the advisories the job can take: on the subject the server
        # filters on, counted now; otherwise the range, less what is met without any.
        counted = None
        if subject is not None:
            counted = count_between(
                client, cursor["stream"], subject, int(cursor["next"]), int(cursor["end"])
            )
        transfer = SequenceTransfer(
            client,
            cursor["kind"],
            cursor["stream"],
            end=int(cursor["end"]),
            next_seq=int(cursor["next"]),
            save=save,
            skipped=skipped if counted is None else None,
            delete_after=bool(job.target.get("delete_original")),
            pending_deletes=cursor.get("delete") or [],
            publish_timeout=max(10.0, settings.SLUICE_BROKER_TIMEOUT * 3),
            wanted=advisory_prefilter(job.selection),
            subject=subject,
        )
    except BaseException:
        client.close()
        raise
    total = job.done + (transfer.pending() or 0 if counted is None else counted)
    Job.objects.filter(pk=job.pk).update(total=total)
    job.total = total
    return transfer


def advisory_subject_for(selection: dict[str, Any]) -> str | None:
    """The advisory subject the server can filter the selection's advisories on; None: all.

    From the filter's stream, consumer and reason (its kind), or the one stream all
    chosen ids are in. A name no stream or consumer can have takes no advisory at all.
    """
    if "ids" in selection:
        streams = {str(i).rpartition(":")[0] for i in selection["ids"]}
        wanted = {"stream": streams.pop()} if len(streams) == 1 else {}
    else:
        rule = selection.get("filter") or {}
        wanted = {
            "stream": str(rule.get("queue") or ""),
            "consumer": str(rule.get("exchange") or ""),
            "kind": reason_kind(str(rule.get("reason") or "")),
        }
        if rule.get("reason") not in (None, "") and not wanted["kind"]:
            return NOTHING
    try:
        return advisory_filter(**wanted)
    except NoSuchName:
        return NOTHING


def advisory_prefilter(selection: dict[str, Any]) -> Callable[[Advisory], bool] | None:
    """Which advisories the selection can take, judged from the advisory alone.

    The messages of the others are not read: a job replaying one stream's dead
    letters out of a large capture stream reads only that stream's messages.
    Must agree with the job's selector (deadletters.selector with death_info).
    """
    if "ids" in selection:
        ids = frozenset(selection["ids"])
        return lambda a: f"{a.stream}:{a.stream_seq}" in ids
    rule = selection.get("filter") or {}
    fields = {"queue": "stream", "exchange": "consumer"}
    checks = {fields[k]: str(v) for k, v in rule.items() if k in fields and v not in (None, "")}
    reason = rule.get("reason")
    if not checks and reason in (None, ""):
        return None

    def take(a: Advisory) -> bool:
        if reason not in (None, "") and a.why != str(reason):
            return False
        return all(getattr(a, f) == v for f, v in checks.items())

    return take


def router(job: Job) -> Any:
    """(subject, "") for each message: the chosen subject, or where it came from.

    A message its stream no longer holds goes nowhere: the transfer reports it.
    """
    fixed = job.target.get("subject")

    def route(message: Message) -> tuple[str, str] | None:
        if not message.properties.get("present", True):
            return (fixed or "", "")
        if fixed:
            return (fixed, "")
        origin = origin_subject(message)
        return (origin, "") if origin else None

    return route


def preview(broker: Broker, fields: dict[str, Any]) -> dict[str, Any]:
    """How many dead letters the job would take and where they would go, from its first ones."""
    cursor = fields["cursor"]
    size = max(0, int(cursor["end"]) - int(cursor["next"]))
    limit = settings.SLUICE_PEEK_LIMIT
    route = router(Job(broker=broker, target=fields["target"], action=fields["action"]))
    selected = deadletters.selector(fields["selection"], death_info)
    advisories = cursor["kind"] == "advisories"
    subject = advisory_subject_for(fields["selection"]) if advisories else None
    with client_for(broker, "sluice-job-preview") as client:
        messages, next_seq, gaps = read_dead_letters(
            client,
            cursor["kind"],
            cursor["stream"],
            int(cursor["next"]),
            limit,
            int(cursor["end"]),
            advisory_prefilter(fields["selection"]),
            subject,
        )
        # Past the first `limit`, how many the job takes is still exact where the server
        # can count the selection: it is all on the advisory subject it filters on.
        counted = None
        if advisories and next_seq < int(cursor["end"]) and _on_subject(fields["selection"]):
            counted = count_below(client, cursor["stream"], subject, int(cursor["end"]))
        chosen = [m for m in messages if selected(m)]
        targets: Counter[str] = Counter()
        unknown = gone = 0
        for m in chosen:
            where = route(m)
            if not m.properties.get("present", True):
                gone += 1
            elif where is None:
                unknown += 1
            else:
                targets[where[0]] += 1
        warnings, windows = _check_targets(client, [t for t, _ in targets.most_common(50)])
    looked = next_seq - int(cursor["next"])
    complete = next_seq >= int(cursor["end"])
    if complete or counted is not None:
        # Exact: all were read, or the server counted them.
        estimate = len(chosen) if counted is None else counted
    else:
        estimate = round(len(chosen) * size / looked) if looked else 0
    return {
        "queue_length": size - (gaps if complete else 0) if counted is None else counted,
        "looked_at": len(messages),
        "complete": complete,
        "counted": counted,
        "subject": subject,
        "selected": len(chosen),
        "estimate": estimate,
        "targets": [(f"subject {t}{windows.get(t, '')}", n) for t, n in targets.most_common(20)],
        "origin_unknown": unknown,
        "gone": gone,
        "warnings": warnings,
        "sequences": [int(cursor["next"]), int(cursor["end"]) - 1],
    }


def _on_subject(selection: dict[str, Any]) -> bool:
    """Whether the advisory subject alone decides the selection (all, or a filter on
    stream, consumer and the kind of reason only)."""
    if "all" in selection:
        return True
    rule = selection.get("filter")
    if not isinstance(rule, dict) or set(rule) - {"queue", "exchange", "reason"}:
        return False
    return rule.get("reason") in (None, "", "max deliveries", "terminated")


def _check_targets(
    client: DeadLetterClient, subjects: list[str]
) -> tuple[list[str], dict[str, str]]:
    """Warnings for subjects no stream stores; each stored subject's duplicate window."""
    warnings: list[str] = []
    windows: dict[str, str] = {}
    for subject in subjects:
        streams = client.streams_for(subject)
        if not streams:
            warnings.append(f"no stream stores subject {subject!r}: those copies would fail")
            continue
        info = client.info(streams[0])
        windows[subject] = (
            f" (stream {info.name}; a repeat within {info.duplicate_window:g} s is dropped)"
        )
    return warnings, windows


# -- imports (dashboard.jobs.imports) ---------------------------------------------------


def import_target(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """{"subject"}: one subject a stream stores, or {} for each message's own subject."""
    subject = _destination(data.get("subject"))
    if subject:
        try:
            with client_for(broker, "sluice-import-check") as client:
                if not client.streams_for(subject):
                    raise Invalid(
                        f"no stream stores subject {subject!r}: JetStream would refuse every copy"
                    )
        except BrokerError as exc:
            raise Invalid(f"could not reach {broker.name}: {exc}") from None
        return {"subject": subject}
    return {}


def import_route(target: dict[str, Any]) -> Any:
    fixed = target.get("subject")
    return lambda message: (fixed or message.routing_key or message.exchange, "")


def import_sender(broker: Broker, target: dict[str, Any], job: Job) -> SubjectSender:
    return SubjectSender(
        client_for(broker, "sluice-import"),
        lambda out: f"sluice-import:{job.public_id}:{out.message.position}",
    )


def import_label(target: dict[str, Any]) -> str:
    if target.get("subject"):
        return f"subject {target['subject']!r}"
    return "each message's own subject"
