"""Kafka on the dead-letters page: dead-letter topics, read from their newest records.

A log is read without side effects, so anyone may look; a replay copies and
the topic keeps its records (dashboard/kinds/kafka/jobs.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST
from kafka import KafkaConsumer

from brokers.base import BrokerError, Message
from brokers.kafka.browse import NotFound
from brokers.kafka.transfer import as_message, log_range, newest_headers
from brokers.kafka.transfer import peek as peek_log
from dashboard.auth import VIEWER, require_role
from dashboard.collection.collector import adapter_for
from dashboard.jobs import deadletters
from dashboard.jobs.guard import Invalid
from dashboard.kinds.kafka import deadletters as discovery
from dashboard.kinds.kafka import jobs as kafka_jobs
from dashboard.kinds.kafka.views.messages import open_reader
from dashboard.models import Broker, DeadLetterScan, Destination
from dashboard.views.pages import get_broker_or_404


class KafkaDeadLetters:
    """What the dead-letters page (dashboard/views/deadletters.py) asks of Kafka."""

    # Templates under dashboard/kafka/deadletters/: what counts as a dead-letter
    # topic, what a replay does, and the action form's fields.
    about_template = "dashboard/kafka/deadletters/about.html"
    note_template = "dashboard/kafka/deadletters/note.html"
    form_template = "dashboard/kafka/deadletters/form.html"
    # Words the page uses for this kind's sources and messages.
    terms = {
        "source": "topic",
        "Source": "Topic",
        "scanned": "newest",
        "length_in": "topic",
        "id_column": "Record",
        "key_column": "Key",
        "id_field": "id",
    }
    group_names = {"reason": "reason", "queue": "original topic", "routing_key": "key"}

    def about(self) -> dict[str, Any]:
        return {
            "patterns": discovery.kafka_patterns(),
            "origin_headers": discovery.origin_headers(),
        }

    def find(self, broker: Broker, scans: dict[str, Any]) -> list[dict[str, Any]]:
        return discovery.find(broker, scans)

    def count(self, dest: Destination) -> int | None:
        """Records in the topic, as of the last collection."""
        messages: int | None = ((dest.details or {}).get("extra") or {}).get("messages")
        return messages

    def look(self, dest: Destination, can_operate: bool) -> str:
        """The Look button's title; "" when this user may not look."""
        return f"Read up to {settings.SLUICE_PEEK_LIMIT} of the newest records"

    def scan(self, request: HttpRequest, broker: Broker, key: str) -> HttpResponse:
        """Read the newest records of a topic: a log is read without side effects."""
        back = f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={key}"
        try:
            dest = kafka_jobs.topic_of(broker, key)
            adapter = adapter_for(broker)
            consumer = adapter.client(KafkaConsumer, group_id=None, enable_auto_commit=False)  # type: ignore[attr-defined]
            try:
                ranges = log_range(consumer, dest.name)
            finally:
                consumer.close()
            per = max(1, settings.SLUICE_PEEK_LIMIT // max(1, len(ranges)))
            newest = {p: (max(lo, hi - per), hi) for p, (lo, hi) in ranges.items()}
            got = peek_log(adapter, dest.name, newest, settings.SLUICE_PEEK_LIMIT)
        except (Invalid, BrokerError) as exc:
            flash.error(request, f"Could not read {key.removeprefix('topic/')}: {exc}")
            return redirect(back)
        DeadLetterScan.objects.create(
            broker=broker,
            queue=dest.key,
            by=request.user.get_username(),
            length=sum(hi - lo for lo, hi in ranges.values()),
            messages=[deadletters.summary(m, discovery.death_info) for m in got],
        )
        return redirect(back)

    def job_fields(self, post: Any, data: dict[str, Any]) -> None:
        """The form's Kafka fields: one partition's offset range, a topic to copy to."""
        data["ranges"] = _ranges(post)
        if post.get("to_topic"):
            data["destination"] = post["to_topic"]

    def to_edit(self, request: HttpRequest, broker: Broker) -> tuple[Destination, Message | None]:
        dest = kafka_jobs.topic_of(broker, request.POST.get("queue", ""))
        return dest, _record(broker, dest.name, request.POST.get("id", ""))

    def edit_hidden(self, message: Message) -> dict[str, str]:
        """The job reads this one record, not the whole topic."""
        partition, offset = message.id.split(":")
        return {"r_partition": partition, "r_from": offset, "r_to": offset}

    gone = "in the topic"


def _ranges(post: Any) -> list[dict[str, int]]:
    """One partition's offset range from the form (offsets inclusive), or none."""
    if post.get("r_partition", "") == "":
        return []
    try:
        item = {"partition": int(post["r_partition"])}
        for field in ("from", "to"):
            if post.get(f"r_{field}", "") != "":
                item[field] = int(post[f"r_{field}"])
    except ValueError:
        raise Invalid("partition and offsets must be whole numbers") from None
    return [item]


def _record(broker: Any, topic: str, record_id: str) -> Message | None:
    """The record "partition:offset" of `topic` as a Message, or None if the log no longer holds it."""
    try:
        partition, offset = (int(part) for part in record_id.split(":"))
    except ValueError:
        raise Invalid(f"{record_id[:40]!r} is not a record (partition:offset)") from None
    try:
        with open_reader(broker, topic) as reader:
            reader.check_partition(partition)
            record = reader.record(partition, offset)
    except NotFound:
        return None
    return as_message(record) if record is not None else None


@require_POST
@require_role(VIEWER)
def check_headers(request: HttpRequest, name: str) -> HttpResponse:
    """Look at the newest record of every Kafka topic for an origin-topic header."""
    broker = get_broker_or_404(name)
    back = redirect("dashboard:deadletters", name=broker.name)
    if broker.kind != "kafka":
        flash.error(request, "Header checks are for Kafka topics.")
        return back
    names = list(
        Destination.objects.filter(broker=broker, kind="topic", gone_since__isnull=True)
        .order_by("name")
        .values_list("name", flat=True)[:2000]
    )
    try:
        found = newest_headers(adapter_for(broker), names, discovery.origin_headers())
    except BrokerError as exc:
        flash.error(request, f"Could not check the topics: {exc}")
        return back
    cache.set(discovery.header_check_key(broker), found, 24 * 3600)
    flash.info(
        request,
        f"Checked the newest records of {len(names)} topics: {len(found)} carry an origin header.",
    )
    return back
