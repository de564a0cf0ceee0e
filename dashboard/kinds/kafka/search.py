"""Searching a whole Kafka topic in the background: start, run, cancel, describe.

A search fixes each partition's offset range when it starts (so messages
produced meanwhile are not chased), then reads every record in those ranges
with a consumer that has no group, keeping the first RESULT_LIMIT matches in
the Search row. Progress, heartbeat and cancellation go through the row, so
that any viewer can follow the page and a dead worker shows as interrupted.

Reading changes nothing, so viewers may search; every start is audited.
`run()` is a plain function: the Celery task and the tests call it alike.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from brokers.base import BrokerError, Message
from brokers.kafka.adapter import Kafka
from brokers.kafka.browse import Record, TopicReader
from brokers.kafka.filters import FilterError, compile_filters
from brokers.kafka.transfer import LogTransfer
from dashboard.auth import audit
from dashboard.celery import app as celery_app
from dashboard.collection.collector import adapter_for
from dashboard.jobs.export import Export
from dashboard.masking import NONE, Masker
from dashboard.models import Broker, Search
from dashboard.views.messageview import shown_bytes

RUN_SEARCH = "dashboard.tasks.run_search"  # the task's name, kept from when it lived there

log = logging.getLogger(__name__)

# Apache Kafka's rule for topic names (kafka.common.internals.Topic).
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
RESULT_LIMIT = 500  # matches kept and shown; the count goes on past it
PREVIEW = 200  # characters of a value kept with each result
REPORT_EVERY = 0.5  # seconds between progress writes (and cancellation checks)
# Bytes fetched per partition per request: large fetches keep the client busy
# decoding instead of waiting on round trips.
PARTITION_FETCH_BYTES = 8 * 1024 * 1024


class Invalid(ValueError):
    """Bad input for a search; nothing was started."""


def kafka_adapter(broker: Broker) -> Kafka:
    """The cached adapter of a Kafka broker (BrokerError if it cannot be made)."""
    adapter = adapter_for(broker)
    if not isinstance(adapter, Kafka):
        raise BrokerError(f"{broker.name} is not a Kafka broker", retryable=False)
    return adapter


def create(user: Any, broker: Broker, topic: str, data: Any, enqueue: bool = True) -> Search:
    """Check the filters, record the search, audit it and queue it for a worker.

    `user` is a user or a name; `enqueue=False` leaves running it to the caller.
    """
    if broker.kind != "kafka":
        raise Invalid("searching a whole topic is for Kafka topics")
    if not TOPIC_NAME.fullmatch(topic):
        raise Invalid(f"{topic[:80]!r} is not a Kafka topic name")
    try:
        matcher = compile_filters(data)
    except FilterError as exc:
        raise Invalid(str(exc)) from None
    by = user if isinstance(user, str) else user.get_username()
    search = Search.objects.create(broker=broker, topic=topic, filters=matcher.spec, created_by=by)
    audit(
        user,
        "search.start",
        broker=broker.name,
        destination=f"topic/{topic}",
        search=str(search.public_id),
        filters=matcher.spec,
    )
    if enqueue:
        # By name: the worker runs it (dashboard/kinds/kafka/tasks.py).
        celery_app.send_task(RUN_SEARCH, args=[search.pk])
    return search


def cancel(user: Any, search: Search) -> Search:
    """Ask a queued or running search to stop; it stops within a second."""
    changed = Search.objects.filter(pk=search.pk, state__in=[Search.QUEUED, Search.RUNNING]).update(
        state=Search.CANCELLING
    )
    search.refresh_from_db()
    if not changed:
        raise Invalid(f"this search is {search.state}; it cannot be cancelled")
    if search.started_at is None or stalled(search):
        # No worker runs it to notice.
        _finish(search, Search.CANCELLED, "")
    audit(
        user,
        "search.cancel",
        broker=search.broker.name,
        destination=f"topic/{search.topic}",
        count=search.scanned,
        search=str(search.public_id),
    )
    return search


def describe(filters: dict[str, str]) -> str:
    """A search's filters in words."""
    try:
        return compile_filters(filters).describe()
    except FilterError:
        return str(filters)


def stalled(search: Search) -> bool:
    """Running, but silent for a while: its worker died."""
    if search.state not in (Search.RUNNING, Search.CANCELLING) or search.heartbeat is None:
        return False
    silent = (timezone.now() - search.heartbeat).total_seconds()
    return silent > settings.SLUICE_JOB_STALL_SECONDS


def run(search_id: int) -> Search:
    """Run a queued search to its end, until cancelled, or until the broker fails."""
    token = uuid.uuid4().hex
    claimed = Search.objects.filter(pk=search_id, state=Search.QUEUED).update(
        state=Search.RUNNING, run_token=token, heartbeat=timezone.now(), started_at=timezone.now()
    )
    search = Search.objects.select_related("broker").get(pk=search_id)
    if not claimed:
        return search  # another run has it, or it was cancelled before it began
    try:
        matcher = compile_filters(search.filters)
    except FilterError as exc:
        return _finish(search, Search.FAILED, str(exc))
    try:
        with TopicReader(
            kafka_adapter(search.broker),
            search.topic,
            body_limit=settings.SLUICE_BODY_LIMIT,
            partition_fetch_bytes=PARTITION_FETCH_BYTES,
        ) as reader:
            ranges = reader.bounds()
            total = sum(end - start for start, end in ranges.values())
            Search.objects.filter(pk=search.pk).update(
                partitions={str(p): [s, e] for p, (s, e) in ranges.items()}, total=total
            )
            progress = _Progress(search, token)
            reader.scan(ranges, matcher, progress.report, keep=RESULT_LIMIT, every=REPORT_EVERY)
    except BrokerError as exc:
        return _finish(search, Search.FAILED, f"stopped: {exc}")
    if progress.stopped_by == "token":
        search.refresh_from_db()
        return search
    state = Search.CANCELLED if progress.stopped_by == "cancel" else Search.DONE
    return _finish(search, state, "")


class _Progress:
    """Writes progress to the row as the scan reports it, and says when to stop."""

    def __init__(self, search: Search, token: str) -> None:
        self.search = search
        self.token = token
        self.scanned = 0
        self.matched = 0
        self.results: list[dict[str, Any]] = []
        self.stopped_by = ""

    def report(self, scanned: int, matched: int, new: list[Record]) -> bool:
        self.scanned += scanned
        self.matched += matched
        self.results.extend(result_of(r) for r in new)
        fields: dict[str, Any] = {
            "scanned": self.scanned,
            "matched": self.matched,
            "heartbeat": timezone.now(),
        }
        if new:
            fields["results"] = self.results
        Search.objects.filter(pk=self.search.pk, run_token=self.token).update(**fields)
        row = Search.objects.filter(pk=self.search.pk).values("state", "run_token").first()
        if row is None or row["run_token"] != self.token:
            self.stopped_by = "token"
            return False
        if row["state"] == Search.CANCELLING:
            self.stopped_by = "cancel"
            return False
        return True


def _finish(search: Search, state: str, error: str) -> Search:
    Search.objects.filter(pk=search.pk).update(
        state=state, error=error, finished_at=timezone.now(), heartbeat=timezone.now()
    )
    search.refresh_from_db()
    return search


def result_of(record: Record) -> dict[str, Any]:
    """A match as kept in Search.results: plain JSON, previews only."""
    return {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": shown_bytes(record.key, 100),
        "headers": [[k, shown_bytes(v, 100)] for k, v in record.headers],
        "preview": shown_bytes(record.value, PREVIEW),
        "size": record.size,
    }


def as_json(search: Search) -> dict[str, Any]:
    state = "interrupted" if stalled(search) else search.state
    return {
        "id": str(search.public_id),
        "broker": search.broker.name,
        "topic": search.topic,
        "filters": search.filters,
        "state": state,
        "error": search.error,
        "partitions": search.partitions,
        "total": search.total,
        "scanned": search.scanned,
        "matched": search.matched,
        "progress": round(search.progress, 4),
        "created_by": search.created_by,
        "created_at": search.created_at.isoformat(),
        "started_at": search.started_at.isoformat() if search.started_at else None,
        "finished_at": search.finished_at.isoformat() if search.finished_at else None,
        "results": search.results,
    }


class _Record:
    """What the search's filters read of a record (brokers.kafka.filters.RecordLike), from
    a message as `brokers.kafka.transfer.as_message` made it."""

    __slots__ = ("headers", "key", "value")

    def __init__(self, message: Message) -> None:
        _, _, self.key, self.headers, self.value = message.handle


def export(user: Any, search: Search, masker: Masker = NONE) -> Export:
    """Every match of `search` as an export: the ranges it scanned read again through the
    same filters, so the file holds all of them, not only the RESULT_LIMIT kept."""
    if not search.partitions:
        raise Invalid("this search has not fixed its offsets yet: export it once it runs")
    matcher = compile_filters(search.filters)
    ranges = {int(p): (int(s), int(e)) for p, (s, e) in search.partitions.items()}
    broker = search.broker

    def reader() -> LogTransfer:
        return LogTransfer(kafka_adapter(broker), search.topic, ranges, {}, lambda _: None)

    return Export(
        user,
        broker,
        f"topic/{search.topic}",
        {"search": str(search.public_id), "filters": search.filters},
        lambda message: matcher.matches(_Record(message)),
        reader,
        masker=masker,
    )
