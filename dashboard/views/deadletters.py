"""The dead-letters page: every dead-letter queue of a broker, what is in it, and what to do with it."""

from __future__ import annotations

import base64
import json
from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from brokers.base import BrokerError
from dashboard import deadletters, jobservice, messageview
from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, require_role
from dashboard.models import DeadLetterScan, Job
from dashboard.views.messages import find, peek
from dashboard.views.pages import get_broker_or_404


def _latest_scans(broker: Any) -> dict[str, DeadLetterScan]:
    scans: dict[str, DeadLetterScan] = {}
    for scan in DeadLetterScan.objects.filter(broker=broker).order_by("-at")[:500]:
        scans.setdefault(scan.queue, scan)
    return scans


@require_GET
@require_role(VIEWER)
def index(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    by = request.GET.get("by", "reason")
    if by not in (*deadletters.GROUPS, "header"):
        by = "reason"
    header = request.GET.get("header", "").strip()[:128]
    scans = _latest_scans(broker)
    rows = []
    for found in deadletters.find_dlqs(broker):
        queue = found["queue"]
        scan = scans.get(queue.key)
        msgs = scan.messages if scan else []
        times = [m["time"] for m in msgs if m.get("time")]
        rows.append(
            {
                "queue": queue,
                "why": found["why"],
                "scan": scan,
                "oldest": deadletters.when(min(times)) if times else None,
                "newest": deadletters.when(max(times)) if times else None,
                "groups": deadletters.groups(msgs, by, header) if msgs else [],
            }
        )
    selected = request.GET.get("queue")
    current = next(
        (r for r in rows if r["queue"].key == selected), rows[0] if len(rows) == 1 else None
    )
    ctx = {
        "broker": broker,
        "rows": rows,
        "by": by,
        "header": header,
        "group_names": deadletters.GROUPS,
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


def _selection(post: Any) -> dict[str, Any]:
    how = post.get("select", "all")
    if how == "ids":
        return {"ids": post.getlist("id")}
    if how == "filter":
        rule: dict[str, Any] = {}
        for field in ("reason", "queue", "exchange", "routing_key", "body_contains"):
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
            "selection": _selection(post),
            "mode": post.get("mode", "auto"),
            "dry_run": True,
            "batch_size": int(post.get("batch_size") or 500),
        }
        if post.get("rate"):
            data["rate"] = float(post["rate"])
        if data["action"] == "move":
            if post.get("to_queue"):
                data["destination"] = {"queue": post["to_queue"]}
            else:
                data["destination"] = {
                    "exchange": post.get("to_exchange", ""),
                    "routing_key": post.get("to_routing_key", ""),
                }
        if post.get("edit_id"):
            edit: dict[str, Any] = {"id": post["edit_id"]}
            if "edit_body" in post:
                edit["body_base64"] = base64.b64encode(post["edit_body"].encode()).decode()
            if post.get("edit_headers", "").strip():
                edit["headers"] = json.loads(post["edit_headers"])
            data["edit"] = edit
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
    try:
        dest = jobservice.source_of(broker, request.POST.get("queue", ""))
        message = find(
            request.user, broker, dest, request.POST.get("id", ""), None, "deadletters.edit"
        )
    except (jobservice.Invalid, BrokerError) as exc:
        flash.error(request, str(exc))
        return redirect("dashboard:deadletters", name=broker.name)
    if message is None:
        flash.error(request, "That message is no longer among the first messages of the queue.")
        return redirect(f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={dest.key}")
    shown = messageview.shown(message)
    editable = {
        k: v for k, v in message.headers.items() if not k.lower().startswith(("x-", "sluice-"))
    }
    ctx = {
        "broker": broker,
        "dest": dest,
        "s": shown,
        "editable_headers": json.dumps(editable, indent=2, default=str),
        "body_text": shown["text"],
    }
    return render(request, "dashboard/deadletter_edit.html", ctx)
