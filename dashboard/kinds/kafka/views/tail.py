"""The live tail page of a Kafka topic; the messages come over the websocket in dashboard/live/tail.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from dashboard.auth import VIEWER, require_role
from dashboard.kinds.kafka.search import TOPIC_NAME
from dashboard.kinds.kafka.tail import parse_options
from dashboard.live import tail
from dashboard.models import Destination
from dashboard.views.pages import get_broker_or_404


@require_GET
@require_role(VIEWER)
def tail_page(request: HttpRequest, name: str, topic: str) -> HttpResponse:
    """Reading without a group has no side effect, so viewers may watch."""
    broker = get_broker_or_404(name)
    if broker.kind != "kafka" or not TOPIC_NAME.fullmatch(topic):
        raise Http404("No live tail here.")
    dest = Destination.objects.filter(broker=broker, key=f"topic/{topic}").first()
    ctx: dict[str, Any] = {
        "broker": broker,
        "topic": topic,
        "dest": dest,
        "partitions": (dest.details or {}).get("extra", {}).get("partitions") if dest else None,
        "partition": request.GET.get("partition", ""),
        "last": request.GET.get("last", ""),
        "max_last": tail.MAX_LAST,
        "max_rows": tail.MAX_ROWS,
        "cap": tail.MAX_ROWS_PER_SECOND,
        "window": int(tail.RATE_WINDOW),
    }
    try:
        partition, last = parse_options(request.GET)
    except ValueError as exc:
        ctx["error"] = str(exc)
    else:
        query = urlencode(
            {k: v for k, v in (("partition", partition), ("last", last or None)) if v is not None}
        )
        ctx["ws_url"] = f"/ws/tail/{broker.name}/{topic}" + (f"?{query}" if query else "")
    return render(request, "dashboard/kafka/tail.html", ctx)


# Under /brokers/<name>/
urlpatterns: list = [
    path("topics/<str:topic>/tail", tail_page, name="kafka-tail"),
]
api_urlpatterns: list = []
