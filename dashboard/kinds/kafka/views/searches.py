"""Whole-topic searches: start one, follow its progress bar, share its results, cancel it.

Searching reads without a group and changes nothing, so viewers may search;
every start is audited. The page polls its progress fragment with htmx while
the search runs (one small query per viewer per second) and stops polling
when it is over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages as flash
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brokers import readable
from brokers.readable import Unreadable
from dashboard import masking
from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, require_role
from dashboard.jobs import guard as jobguard
from dashboard.kinds.kafka import search as kafka_search
from dashboard.models import Broker, Destination, Search
from dashboard.views.api import error
from dashboard.views.export import download
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import BadInput, json_object

RECENT = 20  # searches of a topic listed on its search page


def get_search_or_404(search_id: str) -> Search:
    try:
        return get_object_or_404(Search.objects.select_related("broker"), public_id=search_id)
    except ValidationError:  # not a UUID
        raise Http404("No such search.") from None


def search_context(search: Search, user: Any = None, request: Any = None) -> dict[str, Any]:
    data = masked(request, search, kafka_search.as_json(search))
    return {
        "search": search,
        "data": data,
        "results": [{**m, "when": when(m["timestamp"])} for m in data["results"]],
        "can_cancel": _may_cancel(user, search),
        "running": data["state"] in (Search.QUEUED, Search.RUNNING, Search.CANCELLING),
        "filter_text": kafka_search.describe(search.filters),
    }


def masked(request: Any, search: Search, data: dict[str, Any]) -> dict[str, Any]:
    """The search's JSON with its results masked for the reader (dashboard.masking);
    with no request to say who reads, every rule applies."""
    if request is None:
        masker = masking.masker(None, search.broker.name, search.topic)
    else:
        masker = masking.for_request(request, search.broker.name, search.topic)
    if masker:
        data["results"] = [_masked_result(masker, r) for r in data["results"]]
    return data


def _masked_result(masker: masking.Masker, result: dict[str, Any]) -> dict[str, Any]:
    """One kept match, masked: its headers are [name, preview] pairs, masked by name too."""
    out: dict[str, Any] = masker.shown({k: v for k, v in result.items() if k != "headers"})
    headers = []
    for name, preview in result.get("headers") or []:
        if str(name).lower() in masker.headers and isinstance(preview, dict):
            preview = {k: masking.MASK if isinstance(v, str) else v for k, v in preview.items()}
        headers.append([name, masker.value(str(name), preview)])
    out["headers"] = headers
    return out


def _may_cancel(user: Any, search: Search) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return search.created_by == user.get_username() or has_role(user, OPERATOR)


def when(timestamp_ms: Any) -> datetime | Unreadable | None:
    """A Kafka record timestamp (ms) in UTC; None for none (-1); Unreadable out of range."""
    if isinstance(timestamp_ms, int) and timestamp_ms < 0:
        return None
    return readable.utc_time(timestamp_ms, 1000)


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def search(request: HttpRequest, name: str, topic: str) -> HttpResponse:
    """GET: the form and this topic's recent searches. POST: start one."""
    broker = get_broker_or_404(name)
    if broker.kind != "kafka":
        raise Http404(f"{name} is not a Kafka broker: it has no topics.")
    form = request.POST if request.method == "POST" else request.GET
    ctx: dict[str, Any] = {
        "broker": broker,
        "topic": topic,
        "form": form,
        "dest": Destination.objects.filter(broker=broker, key=f"topic/{topic}").first(),
    }
    status = 200
    if request.method == "POST":
        try:
            found = kafka_search.create(request.user, broker, topic, request.POST)
        except kafka_search.Invalid as exc:
            ctx["error"], status = str(exc), 400
        else:
            return redirect("dashboard:search-detail", search_id=found.public_id)
    ctx["recent"] = Search.objects.filter(broker=broker, topic=topic)[:RECENT]
    return render(request, "dashboard/kafka/search.html", ctx, status=status)


@require_GET
@require_role(VIEWER)
def search_detail(request: HttpRequest, search_id: str) -> HttpResponse:
    """A search's page, shareable with any viewer; htmx polls its #search-progress part."""
    found = get_search_or_404(search_id)
    ctx = search_context(found, request.user, request)
    if request.htmx:
        return render(request, "dashboard/kafka/search_detail.html#progress", ctx)
    return render(request, "dashboard/kafka/search_detail.html", ctx)


@require_POST
@require_role(VIEWER)
def search_cancel(request: HttpRequest, search_id: str) -> HttpResponse:
    """Whoever started a search may stop it, and so may operators."""
    found = get_search_or_404(search_id)
    if not _may_cancel(request.user, found):
        return forbidden(request, OPERATOR)
    try:
        kafka_search.cancel(request.user, found)
    except kafka_search.Invalid as exc:
        flash.error(request, str(exc))
    return redirect("dashboard:search-detail", search_id=found.public_id)


@require_POST
@require_role(VIEWER)
def search_export(request: HttpRequest, search_id: str) -> HttpResponse:
    """Every match of the search as NDJSON, read again over the offsets it scanned."""
    found = get_search_or_404(search_id)
    try:
        masker = masking.for_request(request, found.broker.name, found.topic)
        export = kafka_search.export(request.user, found, masker).open()
    except (kafka_search.Invalid, jobguard.Invalid) as exc:
        flash.error(request, f"Not exported: {exc}")
        return redirect("dashboard:search-detail", search_id=found.public_id)
    return download(request, export)


# /api/v1/brokers/<name>/...


@require_POST
@require_role(VIEWER)
def api_start(request: HttpRequest, name: str, topic: str) -> JsonResponse:
    """POST {"key", "key_mode", "header", "header_value", "body", "mode"} -> the search, 201."""
    broker = Broker.objects.filter(name=name).first()
    if broker is None:
        return error(f"No broker named {name!r}.", 404)
    try:
        data = json_object(request)
    except BadInput as exc:
        return error(str(exc), 400)
    try:
        found = kafka_search.create(request.user, broker, topic, data)
    except kafka_search.Invalid as exc:
        return error(str(exc), 400)
    return JsonResponse(kafka_search.as_json(found), status=201)


@require_GET
@require_role(VIEWER)
def api_detail(request: HttpRequest, name: str, search_id: str) -> JsonResponse:
    found = get_search_or_404(search_id)
    if found.broker.name != name:
        return error("No such search on this broker.", 404)
    return JsonResponse(masked(request, found, kafka_search.as_json(found)))


@require_POST
@require_role(VIEWER)
def api_export(request: HttpRequest, name: str, search_id: str) -> HttpResponse:
    """Every match of the search as NDJSON (as the page's download)."""
    found = get_search_or_404(search_id)
    if found.broker.name != name:
        return error("No such search on this broker.", 404)
    try:
        masker = masking.for_request(request, found.broker.name, found.topic)
        export = kafka_search.export(request.user, found, masker).open()
    except (kafka_search.Invalid, jobguard.Invalid) as exc:
        return error(str(exc), 400)
    return download(request, export)
