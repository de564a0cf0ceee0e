"""Resetting a Kafka consumer group's committed offsets: the pages and the JSON API.

The work (dry run, apply, undo, audit) is in `dashboard.kinds.kafka.resets`; these
views parse the request, check the role and show the outcome.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from brokers.base import BrokerError
from brokers.kafka import offsets as ko
from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, require_role
from dashboard.kinds.kafka import resets as kafka_resets
from dashboard.models import Broker, Destination, OffsetReset
from dashboard.views.api import error
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import BadInput, json_object

HISTORY_LIMIT = 50  # past resets listed per group


# -- look-ups -------------------------------------------------------------------


def _kafka_broker(name: str) -> Broker:
    broker = get_broker_or_404(name)
    if broker.kind != "kafka":
        raise Http404("Offsets can only be reset on Kafka brokers.")
    return broker


def _reset_or_404(broker: Broker, reset_id: str) -> OffsetReset:
    try:
        found = OffsetReset.objects.filter(broker=broker, public_id=reset_id).first()
    except ValidationError:  # not a UUID
        found = None
    if found is None:
        raise Http404("No such offset reset.")
    return found


# -- pages ------------------------------------------------------------------------


def _page_context(broker: Broker, group: str) -> dict[str, Any]:
    past = list(
        OffsetReset.objects.filter(broker=broker, group=group).select_related("undoes")[
            :HISTORY_LIMIT
        ]
    )
    latest = kafka_resets.latest_applied(broker, group)
    return {
        "broker": broker,
        "group": group,
        "dest": Destination.objects.filter(broker=broker, key=f"group/{group}").first(),
        "resets": [(r, kafka_resets.describe(r)) for r in past],
        "undoable": latest.pk if latest else None,
        "kinds": ko.KINDS,
        "form": {},
    }


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def reset_page(request: HttpRequest, name: str, group: str) -> HttpResponse:
    """The group's offsets, the reset form (operators) and its past resets."""
    broker = _kafka_broker(name)
    ctx = _page_context(broker, group)
    status = 200
    if request.method == "POST":
        if not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        ctx["form"] = request.POST
        try:
            spec = ko.parse_spec(
                request.POST.get("to"),
                request.POST.get("value"),
                request.POST.get("topic"),
                request.POST.get("partitions"),
            )
            reset, _ = kafka_resets.preview(request.user, broker, group, spec)
            return redirect("dashboard:reset-detail", name=broker.name, reset_id=reset.public_id)
        except ko.InvalidReset as exc:
            ctx["error"], status = exc.message, 400
        except BrokerError as exc:
            ctx["error"], status = f"{broker.name}: {exc}", 502
    else:
        ctx["form"] = request.GET
    try:
        ctx["info"] = ko.describe_group(kafka_resets.adapter(broker), group)
    except ko.UnknownGroup as exc:
        ctx["info_error"] = exc.message
        status = 404 if status == 200 and not ctx["resets"] else status
    except BrokerError as exc:
        ctx["info_error"] = f"Cannot read the group from {broker.name}: {exc}"
    return render(request, "dashboard/kafka/reset.html", ctx, status=status)


@require_http_methods(["GET"])
@require_role(VIEWER)
def reset_detail(request: HttpRequest, name: str, reset_id: str) -> HttpResponse:
    """One reset: its table of changes, and Apply or Undo for operators."""
    broker = _kafka_broker(name)
    reset = _reset_or_404(broker, reset_id)
    latest = kafka_resets.latest_applied(broker, reset.group)
    ctx: dict[str, Any] = {
        "broker": broker,
        "reset": reset,
        "group": reset.group,
        "description": kafka_resets.describe(reset),
        "skipped": kafka_resets.skipped(reset),
        "can_apply": reset.state in (OffsetReset.PREVIEW, OffsetReset.REFUSED),
        "can_undo": reset.state == OffsetReset.APPLIED
        and latest is not None
        and latest.pk == reset.pk,
        "undone_by": reset.undone_by.filter(state=OffsetReset.APPLIED).first(),
    }
    if ctx["can_apply"]:
        # Warn before the operator clicks, though apply checks again.
        try:
            ctx["group_state"] = ko.group_state(kafka_resets.adapter(broker), reset.group)
        except BrokerError as exc:
            ctx["state_error"] = str(exc)
    return render(request, "dashboard/kafka/reset_detail.html", ctx)


VERBS = {"apply": kafka_resets.apply_reset, "undo": kafka_resets.undo}


@require_POST
@require_role(OPERATOR)
def reset_control(request: HttpRequest, name: str, reset_id: str, verb: str) -> HttpResponse:
    """POST apply or undo; back to the reset page (the new one, after an undo)."""
    broker = _kafka_broker(name)
    reset = _reset_or_404(broker, reset_id)
    if verb not in VERBS:
        raise Http404("No such action.")
    shown = reset
    try:
        shown = VERBS[verb](request.user, reset)
        count = len(shown.changes)
        done = "Undone: restored" if verb == "undo" else "Applied: changed"
        flash.success(
            request, f"{done} {count} partition offset{'s' if count != 1 else ''} of {shown.group}."
        )
    except (kafka_resets.Conflict, ko.InvalidReset) as exc:
        flash.error(request, str(exc))
    except ko.GroupActive:
        # The refused reset's page shows why; no need to say it twice.
        if verb == "undo":
            shown = OffsetReset.objects.filter(undoes=reset).order_by("-id").first() or reset
    except BrokerError as exc:
        flash.error(request, f"{broker.name}: {exc}")
    return redirect("dashboard:reset-detail", name=broker.name, reset_id=shown.public_id)


# -- JSON API ------------------------------------------------------------------------


def _api_broker(name: str) -> Broker | None:
    return Broker.objects.filter(name=name, kind="kafka").first()


def _api_failure(exc: Exception) -> JsonResponse:
    if isinstance(exc, kafka_resets.Conflict):
        return error(str(exc), 409)
    if isinstance(exc, ko.GroupActive):
        return JsonResponse(
            {"error": exc.message, "group_state": kafka_resets.state_json(exc.state)}, status=409
        )
    if isinstance(exc, ko.UnknownGroup):
        return error(exc.message, 404)
    if isinstance(exc, ko.InvalidReset):
        return error(exc.message, 400)
    assert isinstance(exc, BrokerError)
    return error(str(exc), 502)


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def api_group_resets(request: HttpRequest, name: str, group: str) -> HttpResponse:
    """GET: this group's past resets. POST {"to", "value", "topic", "partitions", "dry_run"}."""
    broker = _api_broker(name)
    if broker is None:
        return error(f"No Kafka broker named {name!r}.", 404)
    if request.method == "GET":
        past = OffsetReset.objects.filter(broker=broker, group=group).select_related(
            "broker", "undoes"
        )[:HISTORY_LIMIT]
        return JsonResponse(
            {"broker": name, "group": group, "resets": [kafka_resets.reset_json(r) for r in past]}
        )
    if not has_role(request.user, OPERATOR):
        return forbidden(request, OPERATOR)
    try:
        data = json_object(request)
    except BadInput as exc:
        return error(str(exc), 400)
    dry_run = data.get("dry_run", True)
    if not isinstance(dry_run, bool):
        return error("dry_run must be true or false.", 400)
    try:
        spec = ko.parse_spec(
            data.get("to"), data.get("value"), data.get("topic"), data.get("partitions")
        )
        reset, plan = kafka_resets.preview(request.user, broker, group, spec)
        if not dry_run:
            kafka_resets.apply_reset(request.user, reset, plan)
    except (kafka_resets.Conflict, BrokerError) as exc:
        return _api_failure(exc)
    return JsonResponse(
        {**kafka_resets.reset_json(reset), "group_state": kafka_resets.state_json(plan.state)}
    )


@require_http_methods(["GET"])
@require_role(VIEWER)
def api_reset(request: HttpRequest, name: str, reset_id: str) -> HttpResponse:
    broker = _api_broker(name)
    if broker is None:
        return error(f"No Kafka broker named {name!r}.", 404)
    try:
        reset = _reset_or_404(broker, reset_id)
    except Http404:
        return error("No such offset reset.", 404)
    return JsonResponse(kafka_resets.reset_json(reset))


@require_POST
@require_role(OPERATOR)
def api_reset_control(request: HttpRequest, name: str, reset_id: str, verb: str) -> HttpResponse:
    """POST apply (a dry run) or undo (an applied reset); returns the reset that was applied."""
    broker = _api_broker(name)
    if broker is None:
        return error(f"No Kafka broker named {name!r}.", 404)
    if verb not in VERBS:
        return error(f"Unknown action {verb!r}: use apply or undo.", 404)
    try:
        reset = _reset_or_404(broker, reset_id)
    except Http404:
        return error("No such offset reset.", 404)
    try:
        done = VERBS[verb](request.user, reset)
    except (kafka_resets.Conflict, BrokerError) as exc:
        return _api_failure(exc)
    return JsonResponse(kafka_resets.reset_json(done))


# Under /brokers/<name>/
urlpatterns: list = [
    path("groups/<path:group>/reset", reset_page, name="kafka-reset"),
    path("resets/<str:reset_id>/", reset_detail, name="reset-detail"),
    path("resets/<str:reset_id>/<str:verb>", reset_control, name="reset-control"),
]

# Under /api/v1/brokers/<name>/
api_urlpatterns: list = [
    path("groups/<path:group>/reset", api_group_resets, name="api-kafka-reset"),
    path("resets/<str:reset_id>", api_reset, name="api-reset"),
    path("resets/<str:reset_id>/<str:verb>", api_reset_control, name="api-reset-control"),
]
