"""A NATS server's client connections, as /connz showed them at the last collection.

The collector reads /connz on every cycle (brokers/nats/adapter.py) and stores one row
per connection with its message rates in the broker's health; these views
only sort, filter and page those rows, so viewing never calls the server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from dashboard.auth import VIEWER, require_role
from dashboard.models import Broker
from dashboard.views.api import error
from dashboard.views.pages import get_broker_or_404

# (key, heading, numeric): the page's columns, each sortable.
COLUMNS = (
    ("cid", "CID", True),
    ("name", "Name", False),
    ("lang", "Language", False),
    ("version", "Client version", False),
    ("address", "Address", False),
    ("account", "Account", False),
    ("subscriptions", "Subs", True),
    ("pending_bytes", "Pending", True),
    ("in_msgs", "Msgs in", True),
    ("out_msgs", "Msgs out", True),
    ("in_rate", "In /s", True),
    ("out_rate", "Out /s", True),
    ("idle", "Idle", True),
    ("rtt", "RTT", True),
    ("uptime", "Uptime", True),
)
NUMERIC = {key for key, _, numeric in COLUMNS if numeric}
DEFAULT_SORT = "cid"


def sorted_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Rows sorted by one column ("-" in front: descending); unknown values always last."""
    column = sort.lstrip("-")
    known = [r for r in rows if r.get(column) not in (None, "")]
    unknown = [r for r in rows if r.get(column) in (None, "")]

    def key(row: dict[str, Any]) -> Any:
        value = row[column]
        return value if column in NUMERIC else str(value).casefold()

    # Ties keep connection-id order, whichever way the column goes.
    known.sort(key=lambda r: r.get("cid") or 0)
    known.sort(key=key, reverse=sort.startswith("-"))
    return known + unknown


def connections_context(broker: Broker, params: Any) -> dict[str, Any]:
    data = (broker.health or {}).get("connections") or {}
    rows: list[dict[str, Any]] = list(data.get("rows") or [])
    sort = params.get("sort") or DEFAULT_SORT
    if sort.lstrip("-") not in {key for key, _, _ in COLUMNS}:
        sort = DEFAULT_SORT
    q = params.get("q", "").strip()[:200]
    if q:
        needle = q.casefold()
        rows = [
            r
            for r in rows
            if any(needle in str(r.get(k, "")).casefold() for k in ("name", "address", "lang"))
        ]
    rows = sorted_rows(rows, sort)
    page = Paginator(rows, settings.SLUICE_PAGE_SIZE).get_page(params.get("page", 1))

    def link(**changes: Any) -> str:
        values = {"q": q, "sort": sort, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v and v != DEFAULT_SORT})

    columns = []
    for key, heading, numeric in COLUMNS:
        # Numbers sort largest first on the first click, as the overview does.
        first = f"-{key}" if numeric else key
        if sort == first:
            first = key if first.startswith("-") else f"-{key}"
        mark = ("▼" if sort.startswith("-") else "▲") if sort.lstrip("-") == key else ""
        columns.append({"key": key, "heading": heading, "numeric": numeric,
                        "link": link(sort=first), "mark": mark})  # fmt: skip
    return {
        "broker": broker,
        "page": page,
        "rows": page.object_list,
        "columns": columns,
        "sort": sort,
        "q": q,
        "matching": len(rows),
        "total": data.get("total"),
        "stored": len(data.get("rows") or []),
        "limit": data.get("limit"),
        "at": data.get("at"),
        "collected": bool(data),
        "prev_link": link(page=page.previous_page_number()) if page.has_previous() else "",
        "next_link": link(page=page.next_page_number()) if page.has_next() else "",
    }


def _nats_broker_or_404(name: str) -> Broker:
    broker = get_broker_or_404(name)
    if broker.kind != "nats":
        raise Http404("Only NATS brokers have this page.")
    return broker


@require_GET
@require_role(VIEWER)
def connections(request: HttpRequest, name: str) -> HttpResponse:
    broker = _nats_broker_or_404(name)
    ctx = connections_context(broker, request.GET)
    template = "dashboard/nats/connections.html"
    return render(request, f"{template}#table" if request.htmx else template, ctx)


@require_GET
@require_role(VIEWER)
def api_connections(request: HttpRequest, name: str) -> JsonResponse:
    broker = Broker.objects.filter(name=name).first()
    if broker is None:
        return error(f"No broker named {name!r}.", 404)
    if broker.kind != "nats":
        return error(f"{name!r} is not a NATS broker.", 404)
    data = (broker.health or {}).get("connections") or {}
    sort = request.GET.get("sort") or DEFAULT_SORT
    if sort.lstrip("-") not in {key for key, _, _ in COLUMNS}:
        return error(f"sort must be one of {', '.join(k for k, _, _ in COLUMNS)}.", 400)
    return JsonResponse(
        {
            "broker": name,
            "total": data.get("total"),
            "at": data.get("at"),
            "sort": sort,
            "connections": sorted_rows(list(data.get("rows") or []), sort),
        }
    )


# Under /brokers/<name>/
urlpatterns: list = [
    path("nats/connections/", connections, name="nats-connections"),
]
# Under /api/v1/brokers/<name>/
api_urlpatterns: list = [
    path("nats/connections", api_connections, name="api-nats-connections"),
]
