"""The dead-letters page: every dead-letter queue of a broker, what is in it, and what to do with it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from kafka import KafkaConsumer

from brokers.base import BrokerError
from brokers.kafka.browse import NotFound
from brokers.kafka.transfer import as_message, log_range, newest_headers
from brokers.kafka.transfer import peek as peek_log
from dashboard import deadletters, jobservice, messageview
from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, require_role
from dashboard.collector import adapter_for
from dashboard.kinds.kafka import jobs as kafka_jobs
from dashboard.kinds.kafka.views.messages import open_reader
from dashboard.models import DeadLetterScan, Destination, Job
from dashboard.views.messages import find, peek
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import typed


@require_GET
@require_role(VIEWER)
def index(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    by = request.GET.get("by", "reason")
    if by not in (*deadletters.GROUPS, "header"):
        by = "reason"
    header = request.GET.get("header", "").strip()[:128]
    scans = deadletters.latest_scans(broker)
    rows = []
    for found in deadletters.find_dlqs(broker, scans):
        queue = found["queue"]
        scan = scans.get(queue.key)
        msgs = scan.messages if scan else []
        # Times out of range (a scan stores what the broker said) show on their own row.
        moments = [t for m in msgs if isinstance(t := deadletters.when(m.get("time")), datetime)]
        rows.append(
            {
                "queue": queue,
                "why": found["why"],
                "scan": scan,
                "oldest": min(moments, default=None),
                "newest": max(moments, default=None),
                "groups": deadletters.groups(msgs, by, header) if msgs else [],
            }
        )
    selected = request.GET.get("queue")
    current = next(
        (r for r in rows if r["queue"].key == selected), rows[0] if len(rows) == 1 else None
    )
    if broker.kind == "kafka":
        for r in rows:
            r["records"] = ((r["queue"].details or {}).get("extra") or {}).get("messages")
    ctx = {
        "broker": broker,
        "kafka": broker.kind == "kafka",
        "kafka_patterns": deadletters.kafka_patterns(),
        "origin_headers": deadletters.origin_headers(),
        "rows": rows,
        "by": by,
        "header": header,
        "group_names": deadletters.GROUPS
        if broker.kind != "kafka"
        else {"reason": "reason", "queue": "original topic", "routing_key": "key"},
        "current": current,
        "patterns": deadletters.patterns(),
        "jobs": Job.objects.filter(broker=broker).exclude(state=Job.PREVIEW)[:10],
        "peek_limit": settings.SLUICE_PEEK_LIMIT,
    }
    return render(request, "dashboard/deadletters.html", ctx)


@require_POST
@require_role(VIEWER)
def scan(request: HttpRequest, name: str) -> HttpResponse:
    """Look at a dead-letter queue's head and keep a summary for grouping and picking."""
    broker = get_broker_or_404(name)
    key = request.POST.get("queue", "")
    if broker.kind == "kafka":
        return _scan_topic(request, broker, key)
    try:
        dest = jobservice.source_of(broker, key)
    except jobservice.Invalid as exc:
        flash.error(request, str(exc))
        return redirect("dashboard:deadletters", name=broker.name)
    if dest.type != "stream" and not has_role(request.user, OPERATOR):
        return forbidden(request, OPERATOR)
    try:
        offset = 0 if dest.type == "stream" else None
        got = peek(
            request.user, broker, dest, settings.SLUICE_PEEK_LIMIT, offset, 4096, "deadletters.scan"
        )
    except BrokerError as exc:
        flash.error(request, f"Could not read {dest.name}: {exc}")
        return redirect(f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={key}")
    DeadLetterScan.objects.create(
        broker=broker,
        queue=dest.key,
        by=request.user.get_username(),
        length=dest.backlog,
        messages=[deadletters.summary(m) for m in got],
    )
    return redirect(f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={key}")


def _scan_topic(request: HttpRequest, broker: Any, key: str) -> HttpResponse:
    """Read the newest records of a Kafka topic: a log is read without side effects."""
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
    except (kafka_jobs.Invalid, BrokerError) as exc:
        flash.error(request, f"Could not read {key.removeprefix('topic/')}: {exc}")
        return redirect(back)
    DeadLetterScan.objects.create(
        broker=broker,
        queue=dest.key,
        by=request.user.get_username(),
        length=sum(hi - lo for lo, hi in ranges.values()),
        messages=[deadletters.summary(m) for m in got],
    )
    return redirect(back)


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
        found = newest_headers(adapter_for(broker), names, deadletters.origin_headers())
    except BrokerError as exc:
        flash.error(request, f"Could not check the topics: {exc}")
        return back
    cache.set(deadletters.header_check_key(broker), found, 24 * 3600)
    flash.info(
        request,
        f"Checked the newest records of {len(names)} topics: {len(found)} carry an origin header.",
    )
    return back


def _kafka_ranges(post: Any) -> list[dict[str, int]]:
    """One partition's offset range from the form (offsets inclusive), or none."""
    if post.get("r_partition", "") == "":
        return []
    try:
        item = {"partition": int(post["r_partition"])}
        for field in ("from", "to"):
            if post.get(f"r_{field}", "") != "":
                item[field] = int(post[f"r_{field}"])
    except ValueError:
        raise jobservice.Invalid("partition and offsets must be whole numbers") from None
    return [item]


def selection_from_form(post: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The selection a dead-letters form posts: the ticked ids, a filter on `fields`
    (plus a header, and since/until in Unix seconds where the form has them), or all."""
    how = post.get("select", "all")
    if how == "ids":
        return {"ids": post.getlist("id")}
    if how == "filter":
        rule: dict[str, Any] = {}
        for field in fields:
            if post.get(f"f_{field}"):
                rule[field] = post[f"f_{field}"]
        if post.get("f_header_name"):
            rule["header"] = {
                "name": post["f_header_name"],
                "value": post.get("f_header_value", ""),
            }
        for bound in ("since", "until"):
            if post.get(f"f_{bound}"):
                try:
                    rule[bound] = int(post[f"f_{bound}"])
                except ValueError:
                    raise jobservice.Invalid(f"{bound} must be Unix seconds") from None
        return {"filter": rule}
    return {"all": True}


@require_POST
@require_role(OPERATOR)
def act(request: HttpRequest, name: str) -> HttpResponse:
    """Every action starts as a dry run; its page asks for confirmation."""
    broker = get_broker_or_404(name)
    post = request.POST
    try:
        data: dict[str, Any] = {
            "action": post.get("action"),
            "source": post.get("queue"),
            "selection": selection_from_form(
                post, ("reason", "queue", "exchange", "routing_key", "body_contains")
            ),
            "mode": post.get("mode", "auto"),
            "dry_run": True,
            "batch_size": int(post.get("batch_size") or 500),
        }
        if post.get("rate"):
            data["rate"] = float(post["rate"])
        if broker.kind == "kafka":
            data["ranges"] = _kafka_ranges(post)
            if post.get("to_topic"):
                data["destination"] = post["to_topic"]
        elif data["action"] == "move":
            if post.get("to_queue"):
                data["destination"] = {"queue": post["to_queue"]}
            else:
                data["destination"] = {
                    "exchange": post.get("to_exchange", ""),
                    "routing_key": post.get("to_routing_key", ""),
                }
        if post.get("edit_id"):
            data["edit"] = deadletters.edit_from_form(typed(post, "edit_body"))
            data["selection"] = {"ids": [post["edit_id"]]}
        job = jobservice.create(request.user, broker, data)
    except (jobservice.Invalid, ValueError) as exc:
        flash.error(request, str(exc))
        return redirect(
            f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={post.get('queue', '')}"
        )
    return redirect("dashboard:job-detail", job_id=job.public_id)


@require_POST
@require_role(OPERATOR)
def edit(request: HttpRequest, name: str) -> HttpResponse:
    """Fetch one dead letter whole, to edit its body and headers before replaying it."""
    broker = get_broker_or_404(name)
    back = f"{reverse('dashboard:deadletters', args=[broker.name])}?queue="
    try:
        if broker.kind == "kafka":
            dest = kafka_jobs.topic_of(broker, request.POST.get("queue", ""))
            message = _kafka_record(broker, dest.name, request.POST.get("id", ""))
        else:
            dest = jobservice.source_of(broker, request.POST.get("queue", ""))
            message = find(
                request.user, broker, dest, request.POST.get("id", ""), None, "deadletters.edit"
            )
    except (jobservice.Invalid, kafka_jobs.Invalid, BrokerError) as exc:
        flash.error(request, str(exc))
        return redirect("dashboard:deadletters", name=broker.name)
    if message is None:
        where = (
            "in the topic" if broker.kind == "kafka" else "among the first messages of the queue"
        )
        flash.error(request, f"That message is no longer {where}.")
        return redirect(back + dest.key)
    ctx = {
        **edit_context(message),
        "broker": broker,
        "back": back + dest.key,
        "act_url": reverse("dashboard:deadletters-act", args=[broker.name]),
        "hidden": {"queue": dest.key, "action": "replay"},
        "kafka": broker.kind == "kafka",
    }
    if broker.kind == "kafka":
        # The job reads this one record, not the whole topic.
        partition, offset = message.id.split(":")
        ctx["hidden"].update(r_partition=partition, r_from=offset, r_to=offset)
    return render(request, "dashboard/deadletter_edit.html", ctx)


def edit_context(message: Any) -> dict[str, Any]:
    """What the edit form shows of a message, on any broker (templates/dashboard/deadletter_edit.html)."""
    shown = messageview.shown(message)
    # Text and JSON values only: a binary value (bytes) could not come back from a
    # textarea unchanged, so it is kept as it is (deadletters.apply_edit).
    editable = {
        k: v
        for k, v in message.headers.items()
        if not k.lower().startswith(("x-", "sluice-")) and not isinstance(v, bytes)
    }
    return {
        "s": shown,
        "editable_headers": json.dumps(editable, indent=2, default=str),
        "binary_headers": sorted(k for k, v in message.headers.items() if isinstance(v, bytes)),
        "body_text": shown["text"],
        "crlf": "\r\n" in (shown["text"] or ""),
    }


def _kafka_record(broker: Any, topic: str, record_id: str) -> Any:
    """The record "partition:offset" of `topic` as a Message, or None if the log no longer holds it."""
    try:
        partition, offset = (int(part) for part in record_id.split(":"))
    except ValueError:
        raise jobservice.Invalid(f"{record_id[:40]!r} is not a record (partition:offset)") from None
    try:
        with open_reader(broker, topic) as reader:
            reader.check_partition(partition)
            record = reader.record(partition, offset)
    except NotFound:
        return None
    return as_message(record) if record is not None else None
