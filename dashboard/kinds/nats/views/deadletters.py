"""The NATS dead-letters page: captured advisories with their messages, dead-letter streams, replay.

Reading is open to viewers and changes nothing: advisories come from the
capture stream and each message from its stream by sequence (direct get),
never through a consumer. Replay starts as a dry run through the job engine,
like RabbitMQ and Kafka replays (dashboard.kinds.nats.jobs).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages as flash
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from brokers.base import BrokerError
from brokers.nats.client import Missing
from brokers.nats.deadletters import (
    CaptureStatus,
    NoSuchName,
    advisory_counts,
    advisory_filter,
    counted,
    ensure_capture,
    newest_advisories,
    reason_kind,
    subject_counts,
)
from brokers.nats.transfer import as_message, dead_letter
from dashboard import masking
from dashboard.auth import ADMIN, OPERATOR, VIEWER, audit, require_role
from dashboard.jobs import deadletters
from dashboard.jobs import service as jobservice
from dashboard.kinds import kind_of
from dashboard.kinds.nats import deadletters as dl
from dashboard.kinds.nats.views import common as nats_common
from dashboard.models import Broker, Job
from dashboard.views.api import error
from dashboard.views.deadletters import edit_context, selection_from_form
from dashboard.views.params import typed

# Advisory filters in the page's query string: parameter -> advisory field.
ADVISORY_FILTERS = {"s": "stream", "c": "consumer", "r": "reason"}


def get_nats_broker_or_404(name: str) -> Broker:
    return nats_common.get_nats_broker_or_404(
        name, "Dead letters of this kind are on the broker's dead-letters page."
    )


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def look(broker: Broker, query: Any) -> dict[str, Any]:
    """What the page and the API show: capture state, groups, one page of dead letters, DLQ streams.

    The groups and "how many match" are the server's counts per advisory subject
    (stream, consumer, kind), exact over the whole capture stream; rows are the
    newest advisories on the filter's subject, which the server picks.
    """
    capture_name = settings.SLUICE_NATS_CAPTURE_STREAM
    wanted = {f: str(query.get(p, ""))[:256] for p, f in ADVISORY_FILTERS.items() if query.get(p)}
    dlq = str(query.get("dlq", ""))[:256]
    out: dict[str, Any] = {
        "capture": CaptureStatus("unreachable", capture_name),
        "error": "",
        "groups": [],
        "total": 0,
        "matching": 0,
        "reasons_read": True,
        "rows": [],
        "page": None,
        "looked_at": 0,
        "wanted": wanted,
        "dlq": None,
    }
    try:
        with dl.client_for(broker) as client:
            status = ensure_capture(client, capture_name, create=False)
            out["capture"] = status
            if status.capturing:
                _advisories(client, status, wanted, query, out)
            capture = out["capture"].stream
            if dlq and dlq != capture:
                try:
                    out["dlq"] = _dead_letter_stream(client, dlq)
                except Missing:
                    out["dlq"] = {"name": dlq, "error": f"there is no stream {dlq!r}"}
    except BrokerError as exc:
        out["error"] = exc.message
    return out


def _advisories(
    client: Any, status: CaptureStatus, wanted: dict[str, str], query: Any, out: dict[str, Any]
) -> None:
    """Groups, counts and the page of rows of the capture stream into `out`."""
    limit = settings.SLUICE_PEEK_LIMIT
    counts = advisory_counts(client, status.stream)
    every = counted(counts)
    out["total"] = sum(every.values())
    out["groups"], out["reasons_read"] = _groups(client, status.stream, every, limit)
    reason = wanted.get("reason", "")
    kind = reason_kind(reason) if reason else ""
    try:
        if reason and not kind:
            raise NoSuchName(f"{reason!r} is not a reason of a dead-letter advisory")
        subject = advisory_filter(wanted.get("stream", ""), wanted.get("consumer", ""), kind)
    except NoSuchName:
        chosen: list[Any] = []
        info = client.info(status.stream, fresh=True)
    else:
        advisories, info = newest_advisories(client, status.stream, limit, subject)
        out["looked_at"] = len(advisories)
        whole = reason in ("", "max deliveries", "terminated")  # a kind, not an AckTerm reason
        chosen = [a for a in reversed(advisories) if whole or a.why == reason]
        on_subject = counted(counts, wanted.get("stream", ""), wanted.get("consumer", ""), kind)
        # Exact unless an AckTerm reason is asked, which only the advisories' bodies hold.
        out["matching"] = sum(on_subject.values()) if whole else None
    out["capture"] = CaptureStatus(status.state, status.stream, status.detail, info)
    page = Paginator(chosen, settings.SLUICE_PAGE_SIZE).get_page(query.get("page"))
    out["page"] = page
    shown = list(page.object_list)
    by_stream: dict[str, list[int]] = {}
    for a in shown:
        by_stream.setdefault(a.stream, []).append(a.stream_seq)
    found = {s: client.get_each(s, seqs) for s, seqs in by_stream.items()}
    out["rows"] = [
        {**dl.row(dead_letter(a, found[a.stream].get(a.stream_seq))), "advisory": a.seq}
        for a in shown
    ]


def _groups(
    client: Any, capture: str, every: dict[tuple[str, str, str], int], limit: int
) -> tuple[list[tuple[tuple[str, ...], int]], bool]:
    """Dead letters per (stream, consumer, reason), from the server's counts.

    Terminations split by their AckTerm reason when all of them can be read (no more
    than `limit`): the reason is in the advisory's body. Also says whether they were.
    """
    terminated = sum(n for (kind, _, _), n in every.items() if kind == "terminated")
    reasons: dict[tuple[str, str], Counter[str]] = {}
    read = terminated <= limit
    if terminated and read:
        subject = advisory_filter(kind="terminated")
        advisories, _ = newest_advisories(client, capture, limit, subject)
        for a in advisories:
            reasons.setdefault((a.stream, a.consumer), Counter())[a.why] += 1
    counts: Counter[tuple[str, ...]] = Counter()
    for (kind, stream, consumer), n in every.items():
        split = reasons.get((stream, consumer)) if kind == "terminated" else None
        if split and sum(split.values()) == n:
            for why, m in split.items():
                counts[(stream, consumer, why)] += m
        else:
            counts[
                (stream, consumer, "max deliveries" if kind != "terminated" else "terminated")
            ] += n
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), read


def _dead_letter_stream(client: Any, name: str) -> dict[str, Any]:
    """The newest messages of a dead-letter stream, with groups by subject, origin and reason."""
    info = client.info(name, fresh=True)
    limit = settings.SLUICE_PEEK_LIMIT
    start = max(info.first_seq, info.last_seq - limit + 1)
    stored, _ = client.read(name, start, limit, end=info.last_seq + 1) if info.messages else ([], 0)
    rows = [dl.row(as_message(m, m.seq)) for m in reversed(stored)]
    # Per subject, the server's counts over the whole stream (origin and reason are in
    # each message's headers: those groups are of the newest read).
    subjects = subject_counts(client, name) if info.messages else {}
    return {
        "name": name,
        "info": info,
        "subjects": sorted(subjects.items(), key=lambda kv: (-kv[1], kv[0])),
        "rows": rows[: settings.SLUICE_PAGE_SIZE],
        "looked_at": len(rows),
        "groups": dl.groups(rows, ("origin", "subject", "reason")),
    }


def masked(request: HttpRequest, broker: Broker, seen: dict[str, Any]) -> dict[str, Any]:
    """The look with its dead letters masked for the reader (dashboard.masking): an
    advisory's by the stream it died in, a dead-letter stream's by that stream."""
    maskers = masking.cached(request, broker.name)
    seen["rows"] = masking.rows(maskers, seen["rows"], lambda row: row.get("stream", ""))
    d = seen.get("dlq")
    if d and d.get("rows"):
        mask = maskers(d["name"])
        d["rows"] = masking.rows(maskers, d["rows"], lambda row: d["name"])
        d["groups"] = [(tuple(mask.shown(v) for v in values), n) for values, n in d["groups"]]
    return seen


def _capture_context(broker: Broker, status: CaptureStatus) -> dict[str, Any]:
    return {
        "status": status,
        "info": status.info,
        "last_check": dl.last_check(broker),
        "allowed": settings.SLUICE_NATS_CAPTURE_ADVISORIES,
        "how_to": dl.how_to_create(),
        "every": settings.SLUICE_NATS_CAPTURE_CHECK_MINUTES,
        "keep_days": status.info.max_age / 86400 if status.info and status.info.max_age else None,
        "first": _when(status.info.first_ts) if status.info else None,
        "last": _when(status.info.last_ts) if status.info else None,
    }


@require_GET
@require_role(VIEWER)
def index(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_nats_broker_or_404(name)
    seen = masked(request, broker, look(broker, request.GET))
    capture = seen["capture"]
    keep = {p: request.GET[p] for p in (*ADVISORY_FILTERS, "dlq") if request.GET.get(p)}
    ctx = {
        "broker": broker,
        **seen,
        "capture_ctx": _capture_context(broker, capture),
        "source": f"advisories/{capture.stream}",
        "dlqs": dl.dead_letter_streams(broker, capture.stream),
        "patterns": dl.patterns(),
        "querystring": urlencode(keep),
        "peek_limit": settings.SLUICE_PEEK_LIMIT,
        "jobs": Job.objects.filter(broker=broker).exclude(state=Job.PREVIEW)[:10],
    }
    ctx["group_links"] = [
        (values, n, urlencode(dict(zip(ADVISORY_FILTERS, values, strict=True))))
        for values, n in seen["groups"]
    ]
    return render(request, "dashboard/nats/deadletters.html", ctx)


@require_POST
@require_role(OPERATOR)
def act(request: HttpRequest, name: str) -> HttpResponse:
    """Every replay starts as a dry run; its page asks for confirmation."""
    broker = get_nats_broker_or_404(name)
    post = request.POST
    back = reverse("dashboard:nats-deadletters", args=[broker.name])
    try:
        data: dict[str, Any] = {
            "action": post.get("action", "replay"),
            "source": post.get("source"),
            "selection": selection_from_form(
                post, ("stream", "consumer", "reason", "subject", "body_contains")
            ),
            "dry_run": True,
            "batch_size": int(post.get("batch_size") or 1000),
            "delete_original": post.get("delete_original") == "on",
        }
        if post.get("rate"):
            data["rate"] = float(post["rate"])
        if post.get("to_subject", "").strip():
            data["destination"] = post["to_subject"].strip()
        if post.get("edit_id"):
            data["edit"] = deadletters.edit_from_form(typed(post, "edit_body"))
            data["selection"] = {"ids": [post["edit_id"]]}
        job = jobservice.create(request.user, broker, data)
    except (jobservice.Invalid, ValueError) as exc:
        flash.error(request, str(exc))
        source = str(post.get("source", ""))
        return redirect(f"{back}?dlq={source[7:]}" if source.startswith("stream/") else back)
    return redirect("dashboard:job-detail", job_id=job.public_id)


@require_POST
@require_role(OPERATOR)
def edit(request: HttpRequest, name: str) -> HttpResponse:
    """One dead letter whole ("<stream>:<seq>"), to edit its body and headers, then replay it."""
    broker = get_nats_broker_or_404(name)
    back = reverse("dashboard:nats-deadletters", args=[broker.name])
    source = str(request.POST.get("source", ""))
    stream, _, seq = str(request.POST.get("id", "")).rpartition(":")
    if not stream or not seq.isdigit() or not source.startswith(("advisories/", "stream/")):
        flash.error(request, "Pick a dead letter to edit (its stream and sequence).")
        return redirect(back)
    try:
        with dl.client_for(broker) as client:
            stored = client.get(stream, int(seq))
    except BrokerError as exc:
        flash.error(request, f"Could not read {stream}: {exc.message}")
        return redirect(back)
    if stored is None:
        flash.error(request, f"Message {seq} is no longer in the stream {stream!r}.")
        return redirect(back)
    message = as_message(stored, stored.seq)
    if masking.for_request(request, broker.name, stream):
        flash.error(request, masking.NO_EDIT)
        return redirect(back)
    ctx = {
        **edit_context(message),
        "broker": broker,
        "back": back
        if source.startswith("advisories/")
        else f"{back}?{urlencode({'dlq': source[7:]})}",
        "act_url": reverse("dashboard:nats-deadletters-act", args=[broker.name]),
        "hidden": {"source": source, "action": "replay"},
        "kind": kind_of(broker),
    }
    return render(request, "dashboard/deadletter_edit.html", ctx)


@require_POST
@require_role(ADMIN)
def capture(request: HttpRequest, name: str) -> HttpResponse:
    """Check the capture stream now, creating it if Sluice may."""
    broker = get_nats_broker_or_404(name)
    status = dl.check_capture(broker)
    audit(
        request.user,
        "nats.capture.check",
        broker=broker.name,
        destination=f"stream/{status.stream}",
        result=status.state,
        detail_text=status.detail,
    )
    if status.capturing:
        done = "created" if status.state == "created" else "in place"
        flash.info(request, f"The capture stream {status.stream} is {done}.")
    else:
        flash.error(request, f"Advisories are not captured: {status.detail}")
    return redirect("dashboard:nats-deadletters", name=broker.name)


# -- JSON -------------------------------------------------------------------------


def _info_json(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "name": info.name,
        "messages": info.messages,
        "first_seq": info.first_seq,
        "last_seq": info.last_seq,
        "max_age_seconds": info.max_age,
        "max_bytes": info.max_bytes,
    }


@require_GET
@require_role(VIEWER)
def api_index(request: HttpRequest, name: str) -> JsonResponse:
    """The page's content as JSON: ?s=&c=&r= filter advisories, ?dlq= shows a dead-letter stream."""
    broker = Broker.objects.filter(name=name, kind="nats").first()
    if broker is None:
        return error(f"no NATS broker named {name!r}", 404)
    seen = masked(request, broker, look(broker, request.GET))
    if seen["error"]:
        return error(seen["error"], 502)
    status: CaptureStatus = seen["capture"]
    page = seen["page"]
    listed = page.paginator.count if page else 0
    body: dict[str, Any] = {
        "capture": {
            "state": status.state,
            "stream": status.stream,
            "detail": status.detail,
            "info": _info_json(status.info),
        },
        "looked_at": seen["looked_at"],
        # Exact: the server's counts per advisory subject.
        "total": seen["total"],
        "reasons_split": seen["reasons_read"],
        "groups": [
            {"stream": s, "consumer": c, "reason": r, "count": n} for (s, c, r), n in seen["groups"]
        ],
        "dead_letters": seen["rows"],
        "page": page.number if page else None,
        "pages": page.paginator.num_pages if page else 0,
        # The server's count on the filter's subject; when an AckTerm reason is asked,
        # which only the advisories tell, those of the newest read ("matching_exact": false).
        "matching": seen["matching"] if seen["matching"] is not None else listed,
        "matching_exact": seen["matching"] is not None,
        "listed": listed,
        "dead_letter_streams": [
            {"name": d["stream"].name, "why": d["why"], "messages": d["messages"]}
            for d in dl.dead_letter_streams(broker, status.stream)
        ],
    }
    if seen["dlq"] and seen["dlq"].get("error"):
        body["dead_letter_stream"] = {"error": seen["dlq"]["error"]}
    elif seen["dlq"]:
        d = seen["dlq"]
        body["dead_letter_stream"] = {
            "info": _info_json(d["info"]),
            "messages": d["rows"],
            "groups": [
                {"origin": o, "subject": s, "reason": r, "count": n} for (o, s, r), n in d["groups"]
            ],
            # Exact over the whole stream: the server's counts per subject.
            "subjects": [{"subject": s, "count": n} for s, n in d["subjects"]],
        }
    return JsonResponse(body)


# Under /brokers/<name>/
urlpatterns: list = [
    path("nats/dead-letters/", index, name="nats-deadletters"),
    path("nats/dead-letters/act", act, name="nats-deadletters-act"),
    path("nats/dead-letters/edit", edit, name="nats-deadletters-edit"),
    path("nats/dead-letters/capture", capture, name="nats-deadletters-capture"),
]
# Under /api/v1/brokers/<name>/
api_urlpatterns: list = [
    path("nats/dead-letters", api_index, name="api-nats-deadletters"),
]
