"""The JSON API (reads). Same queries as the pages, so the two never disagree."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from dashboard.auth import VIEWER, require_role
from dashboard.collection import queries
from dashboard.models import Broker, Destination
from dashboard.views import params


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
@require_role(VIEWER)
def brokers(request: HttpRequest) -> JsonResponse:
    rows = [queries.broker_json(b) for b in Broker.objects.filter(enabled=True)]
    return JsonResponse({"brokers": rows})


@require_GET
@require_role(VIEWER)
def broker_destinations(request: HttpRequest, name: str) -> JsonResponse:
    if not Broker.objects.filter(name=name).exists():
        return error(f"No broker named {name!r}.", 404)
    listing = queries.Listing.from_params(request.GET, broker=name)
    qs = queries.destinations(listing)
    try:
        offset, limit = params.slice_bounds(request.GET)
    except params.BadInput as exc:
        return error(f"{exc}.", 400)
    total = qs.count()
    rows = qs[offset : offset + limit] if limit else qs[offset:]
    return JsonResponse(
        {
            "broker": name,
            "total": total,
            "sort": listing.sort,
            "destinations": [queries.as_json(d) for d in queries.shown(rows)],
        }
    )


def _destination(name: str, key: str) -> Destination | None:
    return (
        Destination.objects.select_related("broker")
        .defer(*queries.UNSHOWN_BROKER)
        .filter(broker__name=name, key=key)
        .first()
    )


@require_GET
@require_role(VIEWER)
def destination(request: HttpRequest, name: str, key: str) -> JsonResponse:
    dest = _destination(name, key)
    if dest is None:
        return error(f"No destination {key!r} on broker {name!r}.", 404)
    body = queries.as_json(dest)
    body["details"] = dest.details
    return JsonResponse(body)


@require_GET
@require_role(VIEWER)
def destination_history(request: HttpRequest, name: str, key: str) -> JsonResponse:
    dest = _destination(name, key)
    if dest is None:
        return error(f"No destination {key!r} on broker {name!r}.", 404)
    window = request.GET.get("window", "1h")
    if window not in queries.WINDOWS:
        return error(f"window must be one of {', '.join(queries.WINDOWS)}.", 400)
    return JsonResponse({"broker": name, "destination": key, **queries.history(dest.pk, window)})
