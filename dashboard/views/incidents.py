"""Incidents: the overview's On fire section, their history and page, acknowledge and snooze, the API."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from dashboard import auth
from dashboard.auth import OPERATOR, VIEWER, require_role
from dashboard.collection import queries
from dashboard.kinds import kind_of
from dashboard.live import fragments
from dashboard.models import Broker, Destination, Incident
from dashboard.triage.findings import duration
from dashboard.triage.ranking import RULE
from dashboard.views import charts
from dashboard.views.params import BadInput, json_object

# How long a snooze may last, in minutes, and the choices the page offers.
SNOOZE_MAX = 7 * 24 * 60
SNOOZE_CHOICES = ((15, "15 min"), (60, "1 h"), (240, "4 h"), (1440, "1 day"))
LABELS = {
    "open": "Open",
    "browse": "Browse",
    "deadletters": "Dead letters → replay",
    "reset": "Reset offsets",
    "broker": "Broker",
}


# What reverse() leaves as it is in a path segment (Django's RFC3986_SUBDELIMS + "/~:@").
SEGMENT_SAFE = "!$&'()*+,;=/~:@"


class Urls:
    """URLs for many rows: each pattern is reversed once, then completed per row.

    A reverse() costs about 0.1 ms, and a section of 50 incidents needed 800 of them.
    """

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], list[str]] = {}

    def __call__(self, name: str, *segments: str) -> str:
        """`name`'s URL with these path segments, each already quoted (see `segment`)."""
        parts = self._parts.get((name, len(segments)))
        if parts is None:
            marks = [f"sluiceurlarg{n}" for n in range(len(segments))]
            url = reverse(name, args=marks)
            parts = self._parts[name, len(segments)] = _split(url, marks)
        out = [parts[0]]
        for text, rest in zip(segments, parts[1:], strict=True):
            out += [text, rest]
        return "".join(out)


def _split(url: str, marks: list[str]) -> list[str]:
    parts = []
    for mark in marks:
        head, found, url = url.partition(mark)
        assert found, f"{mark} not in the reversed URL"
        parts.append(head)
    return [*parts, url]


def segment(text: object) -> str:
    """`text` as reverse() would put it in a path segment."""
    return quote(str(text), safe=SEGMENT_SAFE)


def links(incident: Incident, urls: Urls | None = None) -> list[tuple[str, str]]:
    """The incident's actions as (label, URL), in the order its detector gave them."""
    urls = urls or Urls()
    broker = incident.broker
    dest = incident.destination
    kind = kind_of(broker)
    name = segment(broker.name)
    found: dict[str, str] = {"broker": urls("dashboard:broker-detail", name)}
    if dest is not None:
        found["open"] = urls("dashboard:destination-detail", name, segment_key(dest.key))
        found["deadletters"] = urls(kind.dead_letters_page, name)
        found.update(kind.links(dest))
    return [(LABELS.get(a, a), found[a]) for a in incident.actions if a in found]


def segment_key(key: str) -> str:
    """A destination's key as one path segment: '/' in names is escaped too."""
    return quote(key, safe="")


def on_fire(broker: str = "") -> dict[str, Any]:
    """What the On fire section shows: open incidents, most urgent first, and what is being watched."""
    # A disabled broker is not watched: its last incidents are history, not fire.
    # Not the broker's topology nor a destination's details: the section shows neither, and
    # decoding them per row (a 5,000-queue broker's topology is ~700 kB) made most of its cost.
    live = (
        Incident.objects.filter(state=Incident.OPEN, broker__enabled=True)
        .select_related("broker", "destination")
        .defer(*queries.UNSHOWN_BROKER, "destination__details", "destination__recent")
    )
    if broker:
        live = live.filter(broker__name=broker)
    now = timezone.now()
    quiet = Q(acknowledged_at__isnull=False) | Q(snoozed_until__gt=now)
    shown = list(live.exclude(quiet).order_by("-urgency", "-started_at")[:50])
    sparks = queries.sparklines([i.destination_id for i in shown if i.destination_id])
    recurrences = _recurrences(shown)
    urls = Urls()
    rows = [
        {
            "incident": i,
            "url": urls("dashboard:incident-detail", segment(i.public_id)),
            "ack": urls("dashboard:incident-ack", segment(i.public_id)),
            "snooze": urls("dashboard:incident-snooze", segment(i.public_id)),
            "since": i.started_at,
            "for": duration((now - i.started_at).total_seconds()),
            "spark": charts.sparkline(sparks.get(i.destination_id or 0, []), width=90, height=20),
            "links": links(i, urls),
            "times": recurrences.get((i.broker_id, i.cause, i.key), 1),
        }
        for i in shown
    ]
    watched = Broker.objects.filter(enabled=True)
    if broker:
        watched = watched.filter(name=broker)
    # One query for each count pair: the section is on every overview rendering.
    tally = live.order_by().aggregate(total=Count("id"), quiet=Count("id", filter=quiet))
    brokers = watched.aggregate(
        all=Count("id"), down=Count("id", filter=Q(status=Broker.STATUS_DOWN))
    )
    return {
        "fire": rows,
        "fire_quiet": tally["quiet"],
        "fire_total": tally["total"],
        "fire_rule": RULE,
        "fire_watched": {
            "brokers": brokers["all"],
            "down": brokers["down"],
            "destinations": Destination.objects.filter(
                broker__in=watched, gone_since__isnull=True
            ).count(),
        },
        "snooze_choices": SNOOZE_CHOICES,
        "fire_back": urls("dashboard:overview"),
    }


def _recurrences(shown: list[Incident]) -> dict[tuple[int, str, str], int]:
    """How many times each shown incident's cause started at its place in the last 12 h."""
    if not shown:
        return {}
    since = timezone.now() - timedelta(hours=12)
    places = {(i.broker_id, i.cause, i.key) for i in shown}
    # Three IN lists, then the exact places in Python: an OR of 50 (broker, cause, key)
    # conditions cost more to build in the ORM than the query took to run.
    rows = (
        Incident.objects.filter(
            started_at__gte=since,
            broker_id__in={p[0] for p in places},
            cause__in={p[1] for p in places},
            key__in={p[2] for p in places},
        )
        .exclude(state=Incident.PENDING)
        .values_list("broker_id", "cause", "key")
    )
    return dict(Counter(place for place in rows if place in places))


def flagged(dest_ids: list[int]) -> dict[int, Incident]:
    """The most urgent open incident of each of these destinations, for the listing's flags."""
    out: dict[int, Incident] = {}
    for incident in Incident.objects.filter(
        state=Incident.OPEN, destination_id__in=dest_ids
    ).order_by("urgency"):
        out[incident.destination_id or 0] = incident
    return out


def get_incident_or_404(public_id: str) -> Incident:
    try:
        return Incident.objects.select_related("broker", "destination").get(public_id=public_id)
    except (Incident.DoesNotExist, ValueError, ValidationError):  # not found, or not a UUID
        raise Http404("No such incident.") from None


# -- pages -----------------------------------------------------------------------------


@require_GET
@require_role(VIEWER)
def incident_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    rows = Incident.objects.exclude(state=Incident.PENDING).select_related("broker")
    if state in (Incident.OPEN, Incident.RESOLVED):
        rows = rows.filter(state=state)
    return render(
        request,
        "dashboard/incidents.html",
        {"incidents": rows.order_by("-started_at")[:200], "state": state},
    )


@require_GET
@require_role(VIEWER)
def incident_detail(request: HttpRequest, incident_id: str) -> HttpResponse:
    incident = get_incident_or_404(incident_id)
    earlier = (
        Incident.objects.filter(broker=incident.broker, cause=incident.cause, key=incident.key)
        .exclude(pk=incident.pk)
        .exclude(state=Incident.PENDING)
        .order_by("-started_at")[:20]
    )
    return render(
        request,
        "dashboard/incident.html",
        {
            "incident": incident,
            "links": links(incident),
            "earlier": earlier,
            "times": incident.recurrences(),
            "snooze_choices": SNOOZE_CHOICES,
        },
    )


def _back(request: HttpRequest, incident: Incident) -> HttpResponse:
    if request.htmx:  # from the On fire section: the section, without what just left it
        return render(request, "dashboard/_on_fire.html", on_fire())
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
        target = reverse("dashboard:incident-detail", args=[incident.public_id])
    return redirect(target or reverse("dashboard:overview"))


@require_POST
@require_role(OPERATOR)
def incident_ack(request: HttpRequest, incident_id: str) -> HttpResponse:
    incident = get_incident_or_404(incident_id)
    acknowledge(request.user, incident)
    fragments.saw(request, incident.broker.name)  # their next page shows it, whatever is stored
    return _back(request, incident)


@require_POST
@require_role(OPERATOR)
def incident_snooze(request: HttpRequest, incident_id: str) -> HttpResponse:
    incident = get_incident_or_404(incident_id)
    try:
        minutes = _minutes(request.POST.get("minutes"))
    except BadInput as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    snooze(request.user, incident, minutes)
    fragments.saw(request, incident.broker.name)
    return _back(request, incident)


# -- the changes, audited ----------------------------------------------------------------


def acknowledge(user: Any, incident: Incident) -> None:
    incident.acknowledged_at = timezone.now()
    incident.acknowledged_by = user.get_username()
    incident.save(update_fields=["acknowledged_at", "acknowledged_by"])
    auth.audit(
        user,
        "incident.acknowledge",
        broker=incident.broker.name,
        destination=incident.key,
        cause=incident.cause,
        incident=str(incident.public_id),
    )


def snooze(user: Any, incident: Incident, minutes: int) -> None:
    incident.snoozed_until = timezone.now() + timedelta(minutes=minutes)
    incident.snoozed_by = user.get_username()
    incident.save(update_fields=["snoozed_until", "snoozed_by"])
    auth.audit(
        user,
        "incident.snooze",
        broker=incident.broker.name,
        destination=incident.key,
        cause=incident.cause,
        incident=str(incident.public_id),
        minutes=minutes,
    )


def _minutes(raw: Any) -> int:
    try:
        minutes = int(raw)
    except (TypeError, ValueError):
        raise BadInput(f"minutes must be a whole number from 1 to {SNOOZE_MAX}") from None
    if not 1 <= minutes <= SNOOZE_MAX:
        raise BadInput(f"minutes must be a whole number from 1 to {SNOOZE_MAX}, not {minutes}")
    return minutes


# -- JSON API ------------------------------------------------------------------------------


def as_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": str(incident.public_id),
        "broker": incident.broker.name,
        "kind": incident.broker.kind,
        "destination": incident.key or None,
        "name": incident.name or None,
        "cause": incident.cause,
        "severity": incident.severity,
        "state": incident.state,
        "summary": incident.summary,
        "rule": incident.rule,
        "evidence": incident.evidence,
        "actions": [{"label": label, "url": url} for label, url in links(incident)],
        "impact_seconds": incident.impact_seconds,
        "urgency": incident.urgency,
        "started_at": incident.started_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "acknowledged_at": (
            incident.acknowledged_at.isoformat() if incident.acknowledged_at else None
        ),
        "acknowledged_by": incident.acknowledged_by or None,
        "snoozed_until": incident.snoozed_until.isoformat() if incident.snoozed_until else None,
        "url": reverse("dashboard:incident-detail", args=[incident.public_id]),
    }


@require_GET
@require_role(VIEWER)
def api_incidents(request: HttpRequest) -> JsonResponse:
    state = request.GET.get("state", "open")
    rows = Incident.objects.exclude(state=Incident.PENDING).select_related("broker", "destination")
    if state in (Incident.OPEN, Incident.RESOLVED):
        rows = rows.filter(state=state)
    elif state != "all":
        return JsonResponse({"error": "state must be open, resolved or all"}, status=400)
    if request.GET.get("broker"):
        rows = rows.filter(broker__name=request.GET["broker"])
    ordered = rows.order_by("-urgency", "-started_at")[:500]
    return JsonResponse({"incidents": [as_json(i) for i in ordered]})


@require_GET
@require_role(VIEWER)
def api_incident(request: HttpRequest, incident_id: str) -> JsonResponse:
    return JsonResponse(as_json(get_incident_or_404(incident_id)))


@require_POST
@require_role(OPERATOR)
def api_incident_ack(request: HttpRequest, incident_id: str) -> JsonResponse:
    incident = get_incident_or_404(incident_id)
    acknowledge(request.user, incident)
    return JsonResponse(as_json(incident))


@require_POST
@require_role(OPERATOR)
def api_incident_snooze(request: HttpRequest, incident_id: str) -> JsonResponse:
    incident = get_incident_or_404(incident_id)
    try:
        body = json_object(request) if request.body else {}
        minutes = _minutes(body.get("minutes", 60))
    except BadInput as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    snooze(request.user, incident, minutes)
    return JsonResponse(as_json(incident))
