"""A RabbitMQ broker's exchanges and the bindings from each, from the last topology read."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.auth import VIEWER, require_role
from dashboard.views.pages import get_broker_or_404


@require_GET
@require_role(VIEWER)
def exchanges(request: HttpRequest, name: str) -> HttpResponse:
    broker = get_broker_or_404(name)
    if broker.kind != "rabbitmq":
        raise Http404("Only RabbitMQ brokers have exchanges.")
    topology = broker.topology or {}
    q = request.GET.get("q", "").strip()
    by_source: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for binding in topology.get("bindings", []):
        by_source.setdefault((binding.get("vhost", ""), binding.get("source", "")), []).append(
            binding
        )
    rows = [
        (ex, by_source.get((ex.get("vhost", ""), ex.get("name", "")), []))
        for ex in topology.get("exchanges", [])
        if not q or q.lower() in ex.get("name", "").lower()
    ]
    ctx = {"broker": broker, "rows": rows, "q": q, "topology_at": broker.topology_at}
    return render(request, "dashboard/rabbitmq/exchanges.html", ctx)
