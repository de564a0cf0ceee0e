"""Replaying Kafka records with the message-job engine (dashboard.jobs.engine).

A Kafka job reads a topic (typically a dead-letter topic) between offsets fixed
when the job is created, and produces each selected record to the topic its
origin header names, or to a topic the operator chose. Its position is the
job's own cursor (`Job.cursor`), saved only after the broker acknowledged the
copies with acks=all; no consumer group is used, so the offsets committed by
the user's own groups never change.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from kafka import KafkaConsumer

from brokers.base import BrokerError, Message
from brokers.kafka.transfer import LogTransfer, TopicSender, log_range, origin_topic, peek
from dashboard.collection.collector import adapter_for
from dashboard.jobs import deadletters
from dashboard.jobs import engine as jobs
from dashboard.jobs.guard import Invalid
from dashboard.kinds.kafka import deadletters as discovery
from dashboard.models import Broker, Destination, Job

ACTIONS = ("replay", "move")
# Records per batch: each batch costs a fetch, a produce round trip and a database
# write, so a log replay takes larger ones than a queue's.
DEFAULT_BATCH = 2000


def topic_of(broker: Broker, key: str) -> Destination:
    dest = Destination.objects.filter(broker=broker, key=key, kind="topic").first()
    if dest is None:
        raise Invalid(f"no topic {key.removeprefix('topic/')!r} on broker {broker.name!r}")
    return dest


def _ranges(data: Any) -> dict[int, tuple[int | None, int | None]]:
    """[{"partition": 0, "from": 10, "to": 20}, ...] (offsets inclusive) as {p: (first, end)}."""
    if data in (None, "", []):
        return {}
    if not isinstance(data, list):
        raise Invalid('ranges must be a list of {"partition": n, "from": offset, "to": offset}')
    out: dict[int, tuple[int | None, int | None]] = {}
    for item in data:
        if not isinstance(item, dict) or not _whole(item.get("partition")):
            raise Invalid("each range needs a partition number")
        lo, hi = item.get("from"), item.get("to")
        for bound in (lo, hi):
            if bound is not None and not _whole(bound):
                raise Invalid("range offsets must be whole numbers of 0 or more")
        if lo is not None and hi is not None and hi < lo:
            raise Invalid(f"partition {item['partition']}: 'to' ({hi}) is before 'from' ({lo})")
        out[int(item["partition"])] = (lo, None if hi is None else hi + 1)
    return out


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """The job's fields from request data, offsets fixed now; Invalid saying what is wrong."""
    action = data.get("action")
    if action == "discard":
        raise Invalid(
            "a Kafka topic keeps its records until retention removes them; "
            "records cannot be discarded one by one"
        )
    if action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise Invalid("source must name a topic (its key, e.g. 'topic/orders.DLT')")
    dest = topic_of(broker, source if source.startswith("topic/") else f"topic/{source}")
    try:
        selection, edit = deadletters.check_choice(data)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    where = data.get("destination")
    if isinstance(where, dict):
        where = where.get("topic")
    if where not in (None, "") and not isinstance(where, str):
        raise Invalid("destination must name a topic")
    if action == "move" and not where:
        raise Invalid("move needs a destination topic")
    target: dict[str, Any] = {"mode": "origin"}
    if where:
        topic_of(broker, f"topic/{where}")
        if where == dest.name:
            raise Invalid("the destination is the source topic itself")
        target = {"topic": where}
    try:
        rate, batch = jobs.check_pace(data, DEFAULT_BATCH, 10000)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    wanted = _ranges(data.get("ranges"))
    try:
        ranges = _log_range(broker, dest.name, wanted)
    except BrokerError as exc:
        raise Invalid(f"could not read {dest.name}: {exc}") from None
    if "ids" in selection:
        ranges = spans(ranges, selection["ids"])
    return {
        "action": action,
        "source": dest.key,
        "selection": selection,
        "target": target,
        "edit": edit,
        "rate": rate,
        "batch_size": batch,
        "cursor": {
            "topic": dest.name,
            "ranges": {str(p): list(r) for p, r in ranges.items()},
            "next": {},
        },
    }


def spans(ranges: dict[int, tuple[int, int]], ids: list[str]) -> dict[int, tuple[int, int]]:
    """`ranges` cut to the offsets where the chosen records ("partition:offset") lie: a job
    over ticked records reads from the first of them to the last in each partition, and
    nothing of a partition that holds none."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for chosen in ids:
        p, _, o = str(chosen).partition(":")
        if p.isdigit() and o.isdigit():
            part, offset = int(p), int(o)
            first[part] = min(first.get(part, offset), offset)
            last[part] = max(last.get(part, offset), offset)
    out: dict[int, tuple[int, int]] = {}
    for part, (start, end) in ranges.items():
        if part not in first:
            out[part] = (start, start)
            continue
        lo = min(max(start, first[part]), end)
        out[part] = (lo, max(lo, min(end, last[part] + 1)))
    return out


def _log_range(
    broker: Broker, topic: str, wanted: dict[int, tuple[int | None, int | None]]
) -> dict[int, tuple[int, int]]:
    consumer = adapter_for(broker).client(  # type: ignore[attr-defined]
        KafkaConsumer, group_id=None, enable_auto_commit=False
    )
    try:
        return log_range(consumer, topic, wanted or None)
    finally:
        consumer.close()


def ranges_of(job: Job) -> dict[int, tuple[int, int]]:
    return {int(p): (int(r[0]), int(r[1])) for p, r in job.cursor.get("ranges", {}).items()}


def transfer_for(job: Job) -> LogTransfer:
    def save(next_offsets: dict[int, int]) -> None:
        cursor = dict(job.cursor, next={str(p): o for p, o in next_offsets.items()})
        Job.objects.filter(pk=job.pk).update(cursor=cursor)
        job.cursor = cursor

    saved = {int(p): int(o) for p, o in job.cursor.get("next", {}).items()}
    transfer = LogTransfer(
        adapter_for(job.broker), job.cursor["topic"], ranges_of(job), saved, save
    )
    # The records left are exactly those between the cursor and the fixed ends.
    total = job.done + (transfer.pending() or 0)
    Job.objects.filter(pk=job.pk).update(total=total)
    job.total = total
    return transfer


def router(job: Job) -> Any:
    """(topic, "") for each record: the chosen topic, or the one its origin header names."""
    fixed = job.target.get("topic")
    if fixed:
        return lambda message: (fixed, "")
    names = discovery.origin_headers()

    def route(message: Message) -> tuple[str, str] | None:
        origin = origin_topic(message, names)
        return (origin, "") if origin else None

    return route


def preview(broker: Broker, fields: dict[str, Any]) -> dict[str, Any]:
    """How many records the job would take and where they would go, from its first records."""
    cursor = fields["cursor"]
    ranges = {int(p): (int(r[0]), int(r[1])) for p, r in cursor["ranges"].items()}
    size = sum(hi - lo for lo, hi in ranges.values())
    limit = settings.SLUICE_PEEK_LIMIT
    messages: list[Message] = peek(adapter_for(broker), cursor["topic"], ranges, limit)
    route = router(Job(broker=broker, target=fields["target"], action=fields["action"]))
    selected = deadletters.selector(fields["selection"], discovery.death_info)
    chosen = [m for m in messages if selected(m)]
    targets: Counter[str] = Counter()
    unknown = 0
    for m in chosen:
        where = route(m)
        if where is None:
            unknown += 1
        else:
            targets[f"topic {where[0]}"] += 1
    complete = len(messages) >= size
    return {
        "queue_length": size,
        "looked_at": len(messages),
        "complete": complete,
        "selected": len(chosen),
        "estimate": len(chosen)
        if complete or not messages
        else round(len(chosen) * size / len(messages)),
        "targets": targets.most_common(20),
        "origin_unknown": unknown,
        "ranges": {p: list(r) for p, r in sorted(ranges.items())},
    }


# -- imports (dashboard.jobs.imports) ---------------------------------------------------


def import_target(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """{"topic"}: a topic the last collection saw; each record keyed as in the file."""
    topic = data.get("topic")
    if not isinstance(topic, str) or not topic:
        raise Invalid('say which "topic" to produce to')
    return {"topic": topic_of(broker, f"topic/{topic.removeprefix('topic/')}").name}


def import_route(target: dict[str, Any]) -> Any:
    topic = target["topic"]
    return lambda message: (topic, message.routing_key)


def import_sender(broker: Broker, target: dict[str, Any], job: Job) -> TopicSender:
    return TopicSender(adapter_for(broker))


def import_label(target: dict[str, Any]) -> str:
    return f"topic {target['topic']!r}, each record with the key the file gives it"
