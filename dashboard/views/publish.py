"""Publishing one message, on any broker kind: the page and the JSON API ask the kind."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from dashboard.auth import OPERATOR, VIEWER, require_role
from dashboard.kinds import kind_of
from dashboard.models import Broker
from dashboard.views.pages import get_broker_or_404


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def publish(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    return kind_of(broker).publish_page(request, broker)


@require_http_methods(["POST"])
@require_role(OPERATOR)
def api_publish(request: HttpRequest, name: str) -> HttpResponse:
    """POST a message; what it takes depends on the kind (see each kind's api_publish)."""
    broker = Broker.objects.filter(name=name).first()
    if broker is None:
        return JsonResponse({"error": f"No broker named {name!r}."}, status=404)
    return kind_of(broker).api_publish(request, broker)
