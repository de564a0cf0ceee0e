"""Reading and publishing messages on a queue's page."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods

from brokers.base import BrokerError, Message, Published, adapter_class
from dashboard import decoding, masking
from dashboard.auth import (
    OPERATOR,
    VIEWER,
    audit,
    audit_publish,
    forbidden,
    has_role,
    publish_failure_audited,
    require_role,
)
from dashboard.collection.collector import adapter_for
from dashboard.kinds.rabbitmq.deadletters import death_info
from dashboard.models import Broker, Destination
from dashboard.views import messageview
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import MAX_BODY, json_object, parse_body, parse_headers, text, typed

MAX_BROWSE = 200


def _dest(broker: Broker, key: str) -> Destination:
    # These pages read through the adapter's browse(); kinds without one have their own.
    if not callable(getattr(adapter_class(broker.kind), "browse", None)):
        raise Http404("This broker's messages are read from its own pages.")
    return get_object_or_404(Destination, broker=broker, key=key, kind__in=("queue", "stream"))


def _int(value: Any, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value)))
    except (TypeError, ValueError):
        return default


def read(
    broker: Broker, dest: Destination, count: int, offset: int | None, truncate: int | None
) -> list[Message]:
    adapter = adapter_for(broker)
    return adapter.browse(dest.vhost, dest.name, dest.type, count, offset=offset, truncate=truncate)  # type: ignore[attr-defined]


def peek(
    user: Any,
    broker: Broker,
    dest: Destination,
    count: int,
    offset: int | None,
    truncate: int | None,
    action: str,
) -> list[Message]:
    """Read head messages; a read that requeues (not a stream) changes them, so it is audited."""
    got = read(broker, dest, count, offset, truncate)
    if dest.type != "stream":
        audit(
            user,
            action,
            broker=broker.name,
            destination=dest.key,
            count=len(got),
            note="get with requeue: messages marked redelivered",
        )
    return got


def find(
    user: Any, broker: Broker, dest: Destination, message_id: str, offset: int | None, action: str
) -> Message | None:
    """One message, whole: at `offset` in a stream, else among the queue's head messages."""
    if dest.type == "stream":
        got = peek(user, broker, dest, 1, offset or 0, None, action)
    else:
        got = peek(user, broker, dest, settings.SLUICE_PEEK_LIMIT, None, None, action)
    return next((m for m in got if m.id == message_id), None)


def send_one(
    user: Any,
    broker: Broker,
    vhost: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: dict[str, Any],
    headers: dict[str, Any],
) -> Published:
    """Publish one message, confirmed and mandatory, and audit what became of it."""
    if len(body) > MAX_BODY:
        raise ValueError(f"the body is {len(body):,} bytes; the limit here is {MAX_BODY:,}")
    where = f"{vhost}/{exchange}"
    with publish_failure_audited(user, broker, where, len(body), routing_key=routing_key):
        if len(exchange.encode()) > 255 or len(routing_key.encode()) > 255:
            # AMQP carries both as short strings: the client cannot even encode longer ones.
            raise ValueError("exchange names and routing keys are at most 255 bytes")
        result: Published = adapter_for(broker).publish(  # type: ignore[attr-defined]
            vhost, exchange, routing_key, body, properties, headers
        )
    outcome = (
        "ok"
        if result.confirmed and result.routed
        else "unroutable"
        if result.confirmed
        else "failed"
    )
    audit_publish(user, broker, where, len(body), outcome, routing_key=routing_key)
    return result


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def browse(request: HttpRequest, name: str, key: str) -> HttpResponse:
    """Streams are read by offset, by anyone; other queues only by get-and-requeue, by operators."""
    broker = get_broker_or_404(name)
    dest = _dest(broker, key)
    stream = dest.type == "stream"
    params = request.POST if request.method == "POST" else request.GET
    count = _int(params.get("count"), 10, 1, MAX_BROWSE)
    offset = _int(params.get("offset"), 0, 0, 2**62) if stream else None
    ctx: dict[str, Any] = {
        "broker": broker,
        "dest": dest,
        "stream": stream,
        "count": count,
        "offset": offset,
        "shown": None,
    }
    wants_read = (stream and "count" in request.GET) or request.method == "POST"
    if wants_read:
        if not stream and not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        try:
            got = peek(
                request.user,
                broker,
                dest,
                count,
                offset,
                settings.SLUICE_BODY_LIMIT,
                "queue.browse",
            )
            schemas = decoding.schemas()
            masker = masking.for_request(request, broker.name, dest.name)
            ctx["shown"] = [
                messageview.shown(masker.message(m), death_info, dest.name, schemas, masker.mask)
                for m in got
            ]
        except BrokerError as exc:
            ctx["error"] = str(exc)
    return render(request, "dashboard/rabbitmq/messages.html", ctx)


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def body(request: HttpRequest, name: str, key: str) -> HttpResponse:
    """The whole body of one message, as a download."""
    broker = get_broker_or_404(name)
    dest = _dest(broker, key)
    wanted = request.GET.get("id", "")
    stream = dest.type == "stream"
    if not stream and not has_role(request.user, OPERATOR):
        return forbidden(request, OPERATOR)
    if not stream and request.method != "POST":
        return HttpResponse(
            "Reading this queue requeues its head messages: ask with POST.", status=405
        )
    try:
        offset = _int(request.GET.get("offset"), 0, 0, 2**62) if stream else None
        message = find(request.user, broker, dest, wanted, offset, "message.download")
    except BrokerError as exc:
        return HttpResponse(
            f"Could not read the message: {exc}", status=502, content_type="text/plain"
        )
    if message is None:
        return HttpResponse(
            "That message is no longer at the head of the queue.",
            status=404,
            content_type="text/plain",
        )
    body = masking.for_request(request, broker.name, dest.name).download(message.body)
    if body is None:
        return HttpResponse(masking.WITHHELD, status=403, content_type="text/plain")
    response = HttpResponse(body, content_type="application/octet-stream")
    response["Content-Disposition"] = (
        f"attachment; filename*=UTF-8''{quote(dest.name, safe='')}-{quote(wanted[:40], safe='')}.bin"
    )
    return response


PROPERTY_FIELDS = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "app_id",
)


def _routes(
    broker: Broker, vhost: str, exchange: str, routing_key: str, headers: dict[str, Any]
) -> list[str]:
    from brokers.rabbitmq.amqp import routes

    topo = broker.topology or {}
    bindings = [b for b in topo.get("bindings", []) if b.get("vhost") == vhost]
    exchanges = {
        e["name"]: e.get("type", "direct")
        for e in topo.get("exchanges", [])
        if e.get("vhost") == vhost
    }
    args = {
        e["name"]: e.get("arguments", {})
        for e in topo.get("exchanges", [])
        if e.get("vhost") == vhost
    }
    queues = set(
        Destination.objects.filter(
            broker=broker, vhost=vhost, kind__in=("queue", "stream"), gone_since__isnull=True
        ).values_list("name", flat=True)
    )
    return routes(bindings, queues, vhost, exchange, exchanges, routing_key, headers, args)


def publish_page(request: HttpRequest, broker: Broker) -> HttpResponse:
    """dashboard:publish for a RabbitMQ broker: an exchange, a routing key, and where it would go."""
    topo = broker.topology or {}
    vhosts = (
        topo.get("vhosts")
        or sorted({e.get("vhost", "/") for e in topo.get("exchanges", [])})
        or ["/"]
    )
    data = request.POST if request.method == "POST" else request.GET
    vhost = data.get("vhost", vhosts[0] if vhosts else "/")
    ctx: dict[str, Any] = {
        "broker": broker,
        "vhosts": vhosts,
        "vhost": vhost,
        "form": data,
        "exchanges": [e for e in topo.get("exchanges", []) if e.get("vhost") == vhost],
        "property_fields": PROPERTY_FIELDS,
    }
    if request.method == "POST" or data.get("preview"):
        exchange, routing_key = data.get("exchange", ""), data.get("routing_key", "")
        try:
            headers = parse_headers(data.get("headers", ""))
            ctx["routes"] = _routes(broker, vhost, exchange, routing_key, headers)
            if request.method == "POST":
                if not has_role(request.user, OPERATOR):
                    return forbidden(request, OPERATOR)
                body_bytes = parse_body(data.get("body_kind", "text"), typed(data).get("body", ""))
                props: dict[str, Any] = {f: data[f] for f in PROPERTY_FIELDS if data.get(f)}
                # An unticked checkbox is absent from the form: transient.
                props["delivery_mode"] = 2 if data.get("persistent") else 1
                ctx["result"] = send_one(
                    request.user, broker, vhost, exchange, routing_key, body_bytes, props, headers
                )
        except ValueError as exc:
            ctx["error"] = str(exc)
        except BrokerError as exc:
            ctx["error"] = f"The broker refused: {exc}"
    if request.htmx and data.get("preview"):
        return render(request, "dashboard/rabbitmq/publish.html#routes", ctx)
    return render(request, "dashboard/rabbitmq/publish.html", ctx)


def api_publish(request: HttpRequest, broker: Broker) -> JsonResponse:
    """POST {"vhost", "exchange", "routing_key", "body", "body_kind": text|json|base64, "properties", "headers"}."""
    try:
        data = json_object(request)
        body_bytes = parse_body(text(data, "body_kind", "text"), text(data, "body"))
        headers = data.get("headers") or {}
        props = data.get("properties") or {}
        if not isinstance(headers, dict) or not isinstance(props, dict):
            raise ValueError("headers and properties must be objects")
        vhost, exchange, rk = (
            text(data, "vhost", "/"),
            text(data, "exchange"),
            text(data, "routing_key"),
        )
        result = send_one(request.user, broker, vhost, exchange, rk, body_bytes, props, headers)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except BrokerError as exc:
        # Refused as asked (no such exchange, vhost not allowed): trying again cannot help.
        return JsonResponse({"error": str(exc)}, status=502 if exc.retryable else 400)
    return JsonResponse({"confirmed": result.confirmed, "routed": result.routed, **result.detail})


@require_GET
@require_role(VIEWER)
def api_routes(request: HttpRequest, name: str) -> JsonResponse:
    broker = Broker.objects.filter(name=name).first()
    if broker is None:
        return JsonResponse({"error": f"No broker named {name!r}."}, status=404)
    try:
        headers = parse_headers(request.GET.get("headers", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    vhost, exchange, rk = (
        request.GET.get("vhost", "/"),
        request.GET.get("exchange", ""),
        request.GET.get("routing_key", ""),
    )
    return JsonResponse(
        {
            "queues": _routes(broker, vhost, exchange, rk, headers),
            "as_of": broker.topology_at.isoformat() if broker.topology_at else None,
        }
    )
