"""The HTML pages. Each view and its htmx fragment share one template and one context builder."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from dashboard.auth import ADMIN, VIEWER, require_role, role_context
from dashboard.collection import queries
from dashboard.kinds import destination_kinds, kind_of
from dashboard.live import fragments, watch
from dashboard.models import AuditEntry, Broker, Destination
from dashboard.triage.outlook import outlook
from dashboard.views import charts, incidents


def get_broker_or_404(name: str) -> Broker:
    return get_object_or_404(Broker, name=name)


def listing_context(listing: queries.Listing) -> dict[str, Any]:
    """What the overview and broker pages show, for the page and for the live push alike."""
    page = queries.page_of(listing)
    rows = queries.shown(page.object_list)
    sparks = queries.sparklines([d.pk for d in rows])
    brokers = queries.brokers_shown()
    if listing.broker:
        brokers = brokers.filter(name=listing.broker)
    flagged = incidents.flagged([d.pk for d in rows])
    urls = incidents.Urls()

    def row_urls(d: Destination) -> dict[str, str]:
        name = incidents.segment(d.broker.name)
        found = {
            "page": urls("dashboard:destination-detail", name, incidents.segment_key(d.key)),
            "broker": urls("dashboard:broker-detail", name),
        }
        if d.pk in flagged:
            found["incident"] = urls(
                "dashboard:incident-detail", incidents.segment(flagged[d.pk].public_id)
            )
        return found

    return {
        **incidents.on_fire(listing.broker),
        "flagged": flagged,
        "listing": listing,
        "page": page,
        "rows": [(d, charts.sparkline(sparks.get(d.pk, [])), row_urls(d)) for d in rows],
        "brokers": list(brokers),
        "broker_names": list(Broker.objects.filter(enabled=True).values_list("name", flat=True)),
        "view": listing_view(listing),
        "kinds": destination_kinds(),
        "generated": timezone.now(),
    }


def listing_view(listing: queries.Listing) -> watch.View:
    return watch.View("broker" if listing.broker else "overview", listing, broker=listing.broker)


DEFAULT_OVERVIEW = queries.Listing.from_params({})  # the home page, rendered after every change


def render_live(listing: queries.Listing) -> str:
    """The live part of the overview or a broker page, rendered now, as every viewer shares it."""
    return render_to_string(
        "dashboard/overview.html#live",
        {**listing_context(listing), "csrf_token": fragments.CSRF_MARK},
    )


def live_fragment(listing: queries.Listing, at_least: int = 0) -> str:
    """The live part as stored, rendered if nothing stored is current (fragments.shared)."""
    return fragments.shared(listing_view(listing), lambda: render_live(listing), at_least)


# Where the page around the live part has the signed-in user's name. Markup, never
# the escaped form of any text, so nothing a user types can stand in for it.
USER_MARK = mark_safe("<!--sluice-user-->")  # noqa: S308
LIVE_MARK = mark_safe("<!--sluice-live-->")  # noqa: S308
FRAMES = 64  # pages kept per process: (rendering, page, listing, role)
_frames = fragments.Recent(FRAMES)


class _SignedIn:
    """Whom a kept frame is rendered for: anyone signed in, their name a mark."""

    is_authenticated = True

    def get_username(self) -> str:
        return USER_MARK


class _Place:
    """What a kept frame may read of the request: where it is, never who asks."""

    def __init__(self, request: HttpRequest) -> None:
        self.path = request.path
        self.resolver_match = request.resolver_match


def _frame(
    request: HttpRequest,
    listing: queries.Listing,
    template: str,
    roles: dict[str, Any],
    ctx: dict[str, Any],
) -> tuple[str, str]:
    """The page around the live part, before and after it, with marks for the user's own bits.

    Rendered with no user's data: the name and the CSRF token are marks filled in per
    request, and what the role shows comes from the role alone (the key holds it).
    """
    frame = render_to_string(
        template,
        {
            **roles,
            "user": _SignedIn(),
            "request": _Place(request),
            "csrf_token": fragments.CSRF_MARK,
            "listing": listing,
            "view": listing_view(listing),
            "kinds": destination_kinds(),
            "broker_names": list(
                Broker.objects.filter(enabled=True).values_list("name", flat=True)
            ),
            "live_html": LIVE_MARK,
            **ctx,
        },
    )
    before, found, after = frame.partition(LIVE_MARK)
    assert found, f"{template} does not show live_html"
    return before, after


def _listing_page(
    request: HttpRequest, listing: queries.Listing, template: str, **ctx: Any
) -> HttpResponse:
    """The page around the shared live fragment: only what the frame needs is computed here.

    The frame is kept per stored rendering of the live part: it is rendered again when
    the live part is (anything it shows moves the same generation), and for each role.
    """
    view = listing_view(listing)
    live = fragments.current(
        view, lambda: render_live(listing), at_least=fragments.seen(request, view)
    )
    if request.htmx:
        return HttpResponse(fragments.for_request(live.html, request))
    roles = role_context(request)
    key = (live.id, template, request.path, listing, tuple(sorted(roles.items())))
    frame = _frames.get(key) if live.id else None
    if frame is None:
        frame = _frame(request, listing, template, roles, ctx)
        if live.id:
            _frames.put(key, frame)
    name = escape(request.user.get_username())
    before, after = (part.replace(USER_MARK, name) for part in frame)
    return HttpResponse(fragments.for_request("".join((before, live.html, after)), request))


@require_GET
@require_role(VIEWER)
def overview(request: HttpRequest) -> HttpResponse:
    return _listing_page(
        request, queries.Listing.from_params(request.GET), "dashboard/overview.html"
    )


@require_GET
@require_role(VIEWER)
def broker_detail(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    listing = queries.Listing.from_params(request.GET, broker=broker.name)
    return _listing_page(
        request, listing, "dashboard/broker.html", broker=broker, kind=kind_of(broker)
    )


def destination_context(dest_id: int, window: str = "1h") -> dict[str, Any] | None:
    dest = Destination.objects.select_related("broker").filter(pk=dest_id).first()
    if dest is None:
        return None
    hist = queries.history(dest.pk, window)
    pts = hist["points"]
    backlog_chart = charts.line_chart(
        [
            ("backlog", "s-backlog", [(p["ts"], p["backlog"]) for p in pts]),
            ("in flight", "s-inflight", [(p["ts"], p["in_flight"]) for p in pts]),
        ],
        hist["since"],
        hist["until"],
    )
    rate_chart = charts.line_chart(
        [
            ("in", "s-in", [(p["ts"], p["in_rate"]) for p in pts]),
            ("out", "s-out", [(p["ts"], p["out_rate"]) for p in pts]),
        ],
        hist["since"],
        hist["until"],
    )
    details = dest.details or {}
    kind = kind_of(dest.broker)
    return {
        "dest": dest,
        "broker": dest.broker,
        "window": window,
        "windows": list(queries.WINDOWS),
        "history": hist,
        "backlog_chart": backlog_chart,
        "rate_chart": rate_chart,
        "details": details,
        "limits": (details.get("extra") or {}).get("limits", {}),
        "view": watch.View("destination", broker=dest.broker.name, destination_id=dest.pk),
        # The kind's parts of the page (Kind.*_template) and what its panel shows.
        "kind": kind,
        "panel": kind.panel(dest),
        "outlook": outlook(dest),
        "incidents": [
            (i, incidents.links(i))
            for i in dest.incidents.filter(state="open").select_related("broker", "destination")
        ],
    }


@require_GET
@require_role(VIEWER)
def destination_detail(request: HttpRequest, name: str, key: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    dest = get_object_or_404(Destination, broker=broker, key=key)
    window = request.GET.get("window", "1h")
    if window not in queries.WINDOWS:
        window = "1h"
    ctx = destination_context(dest.pk, window)
    if request.htmx and request.GET.get("part") == "charts":
        return render(request, "dashboard/destination.html#charts", ctx)
    return render(request, "dashboard/destination.html", ctx)


@require_GET
@require_role(VIEWER)
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.all()
    if request.GET.get("action"):
        entries = entries.filter(action=request.GET["action"])
    if request.GET.get("user"):
        entries = entries.filter(user=request.GET["user"])
    ctx = {"entries": entries[:500], "filters": request.GET}
    return render(request, "dashboard/audit.html", ctx)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@require_role(ADMIN)
def audit_export(request: HttpRequest) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    header = ["at", "user", "action", "broker", "destination", "count", "result", "detail"]

    def rows() -> Iterator[str]:
        yield writer.writerow(header)
        for e in AuditEntry.objects.order_by("at").iterator():
            cells = [
                e.at.isoformat(),
                e.user,
                e.action,
                e.broker,
                e.destination,
                e.count,
                e.result,
                e.detail,
            ]
            yield writer.writerow([_inert(c) for c in cells])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="sluice-audit.csv"'
    return response


# A cell starting with one of these is run as a formula by a spreadsheet; a
# spreadsheet skips a leading tab or CR and reads the formula behind it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
