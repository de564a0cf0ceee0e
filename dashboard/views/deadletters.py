"""The dead-letters page: every dead-letter source of a broker, what is in it, and what to do with it.

The page is one for every kind that has one; what differs (which sources are
dead-letter ones, how to look at them, the action form's fields, the words)
comes from the kind's `DeadLetterPage`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from django.conf import settings
from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from brokers.base import BrokerError, Message
from dashboard import decoding, masking
from dashboard.auth import OPERATOR, VIEWER, has_role, require_role
from dashboard.jobs import deadletters
from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.jobs.deadletters import DeathInfo
from dashboard.kinds import kind_of
from dashboard.models import Broker, Destination, Job
from dashboard.views import messageview
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import typed


class DeadLetterPage(Protocol):
    """What the page asks of a kind (dashboard/kinds/<kind>/views/deadletters.py)."""

    about_template: ClassVar[str]  # what counts as a dead-letter source here
    note_template: ClassVar[str]  # what looking at and replaying a source does
    form_template: ClassVar[str]  # the action form's fields
    terms: ClassVar[dict[str, str]]  # the words for its sources and columns
    group_names: ClassVar[dict[str, str]]  # what a look's messages may be grouped by
    gone: ClassVar[str]  # where a message to edit was looked for

    def about(self) -> dict[str, Any]:
        """What about_template shows: the patterns and headers discovery goes by."""
        ...

    def find(self, broker: Broker, scans: dict[str, Any]) -> list[dict[str, Any]]: ...

    def count(self, dest: Destination) -> int | None: ...

    def look(self, dest: Destination, can_operate: bool) -> str: ...

    def scan(self, request: HttpRequest, broker: Broker, key: str) -> HttpResponse: ...

    def job_fields(self, post: Any, data: dict[str, Any]) -> None: ...

    def to_edit(
        self, request: HttpRequest, broker: Broker
    ) -> tuple[Destination, Message | None]: ...

    def edit_hidden(self, message: Message) -> dict[str, str]: ...


def _page(broker: Broker) -> DeadLetterPage | None:
    page: DeadLetterPage | None = kind_of(broker).dead_letters()
    return page


def _elsewhere(broker: Broker) -> HttpResponse:
    """A kind whose dead letters have a page of their own."""
    return redirect(kind_of(broker).dead_letters_page, name=broker.name)


@require_GET
@require_role(VIEWER)
def index(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    page = _page(broker)
    if page is None:
        return _elsewhere(broker)
    by = request.GET.get("by", "reason")
    if by not in (*page.group_names, "header"):
        by = "reason"
    header = request.GET.get("header", "").strip()[:128]
    scans = deadletters.latest_scans(broker)
    can_operate = has_role(request.user, OPERATOR)
    maskers = masking.cached(request, broker.name)
    rows = [
        _row(page, found, scans, by, header, can_operate, maskers(found["queue"].name))
        for found in page.find(broker, scans)
    ]
    selected = request.GET.get("queue")
    current = next(
        (r for r in rows if r["queue"].key == selected), rows[0] if len(rows) == 1 else None
    )
    # "Act on this group": a value of the grouping shown, which a filter can select by.
    group = request.GET.get("group")
    counts = dict(current["groups"]) if current else {}
    chosen = (
        {"by": by, "header": header, "value": group, "n": counts[group]}
        if group in counts and group != "(none)"
        else None
    )
    ctx = {
        "broker": broker,
        "dl": page,
        "about": page.about(),
        "rows": rows,
        "by": by,
        "header": header,
        "current": current,
        "chosen_group": chosen,
        "jobs": Job.objects.filter(broker=broker).exclude(state=Job.PREVIEW)[:10],
        # While a job of this broker runs, the page follows it (it polls itself).
        "following": Job.objects.filter(
            broker=broker, state__in=(Job.QUEUED, Job.RUNNING, Job.CANCELLING)
        ).exists(),
        "peek_limit": settings.SLUICE_PEEK_LIMIT,
        # What downloading the source does to it: when something, only operators may.
        "export_effect": kind_of(broker).export_effect(broker, current["queue"].key)
        if current
        else "",
    }
    return render(request, "dashboard/deadletters.html", ctx)


def _row(
    page: DeadLetterPage,
    found: dict[str, Any],
    scans: dict[str, Any],
    by: str,
    header: str,
    can_operate: bool,
    masker: masking.Masker = masking.NONE,
) -> dict[str, Any]:
    queue = found["queue"]
    scan = scans.get(queue.key)
    # As the reader may see them: the groups are of what is shown.
    msgs = masking.rows(lambda _: masker, scan.messages, lambda _: queue.name) if scan else []
    # What jobs took off the queue since the look is not there any more.
    taken, by_jobs = jobs.taken_since(queue.broker, queue.key, scan.at) if scan else (set(), [])
    if taken:
        msgs = [m for m in msgs if str(m.get("id")) not in taken]
    # Times out of range (a scan stores what the broker said) show on their own row.
    moments = [t for m in msgs if isinstance(t := deadletters.when(m.get("time")), datetime)]
    return {
        "queue": queue,
        "why": found["why"],
        "scan": scan,
        "messages": msgs,
        "taken": len(scan.messages) - len(msgs) if scan else 0,
        "taken_by": by_jobs,
        "count": page.count(queue),
        "look": page.look(queue, can_operate),
        "oldest": min(moments, default=None),
        "newest": max(moments, default=None),
        "groups": deadletters.groups(msgs, by, header) if msgs else [],
    }


@require_POST
@require_role(VIEWER)
def scan(request: HttpRequest, name: str) -> HttpResponse:
    """Look at a dead-letter source and keep a summary for grouping and picking."""
    broker = get_broker_or_404(name)
    page = _page(broker)
    if page is None:
        return _elsewhere(broker)
    return page.scan(request, broker, request.POST.get("queue", ""))


def selection_from_form(post: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The selection a dead-letters form posts: the ticked ids, one group of the page's
    (a value of one of `fields` or of a header), a filter on `fields` (plus a header,
    and since/until as a UTC date and time or Unix seconds where the form has them),
    or all."""
    how = post.get("select", "all")
    if how == "ids":
        # An edited message's form names it as `edit_id`.
        ids = post.getlist("id") or ([post["edit_id"]] if post.get("edit_id") else [])
        if not ids:
            raise jobservice.Invalid("tick the messages to act on, or choose another option")
        return {"ids": ids}
    if how == "group":
        by, value = post.get("g_by", ""), post.get("g_value", "")
        if by == "header" and post.get("g_header") and value:
            return {"filter": {"header": {"name": post["g_header"], "value": value}}}
        if by in fields and value:
            return {"filter": {by: value}}
        raise jobservice.Invalid("that group has no value to select by: tick its messages")
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
                rule[bound] = _moment(post[f"f_{bound}"], bound)
        return {"filter": rule}
    return {"all": True}


def _moment(text: str, bound: str) -> int:
    """Unix seconds from a date-time picker's "YYYY-MM-DDTHH:MM[:SS]" (UTC) or Unix seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise jobservice.Invalid(
            f"{bound} must be a date and time (UTC), e.g. 2026-12-03T04:05, or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@require_POST
@require_role(OPERATOR)
def act(request: HttpRequest, name: str) -> HttpResponse:
    """Every action starts as a dry run; its page asks for confirmation."""
    broker = get_broker_or_404(name)
    page = _page(broker)
    if page is None:
        return _elsewhere(broker)
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
        page.job_fields(post, data)
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
    page = _page(broker)
    if page is None:
        return _elsewhere(broker)
    back = f"{reverse('dashboard:deadletters', args=[broker.name])}?queue="
    try:
        dest, message = page.to_edit(request, broker)
    except (jobservice.Invalid, BrokerError) as exc:
        flash.error(request, str(exc))
        return redirect("dashboard:deadletters", name=broker.name)
    if masking.for_request(request, broker.name, dest.name):
        flash.error(request, masking.NO_EDIT)
        return redirect(back + dest.key)
    if message is None:
        flash.error(request, f"That message is no longer {page.gone}.")
        return redirect(back + dest.key)
    ctx = {
        **edit_context(message, kind_of(broker).death_info, dest.name),
        "broker": broker,
        "kind": kind_of(broker),
        "back": back + dest.key,
        "act_url": reverse("dashboard:deadletters-act", args=[broker.name]),
        "hidden": {"queue": dest.key, "action": "replay", **page.edit_hidden(message)},
    }
    return render(request, "dashboard/deadletter_edit.html", ctx)


def edit_context(
    message: Any, death_info: DeathInfo | None = None, destination: str = ""
) -> dict[str, Any]:
    """What the edit form shows of a message, on any broker (templates/dashboard/deadletter_edit.html)."""
    shown = messageview.shown(message, death_info, destination, decoding.schemas())
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
