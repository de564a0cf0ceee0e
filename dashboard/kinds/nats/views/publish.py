"""Publishing one NATS message, and the request/reply tester: the pages and the API.

Both send, so both need the operator role and write an audit record
("message.publish", "message.request"), success or not. Nothing is sent
unless every check passes: a subject with no spaces, empty tokens or
wildcards, outside NATS's internal `$JS.`/`$SYS.` subjects (publishing there
would manage streams or acknowledge other consumers' messages), headers with
valid names, and a body within the limits.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from brokers.base import BrokerError
from brokers.nats.client import BadSubject, NoReply, NoResponders, Reply, TooBig, check_subject
from brokers.nats.wire import header_problem
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
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.nats.connect import nats_client
from dashboard.kinds.nats.views.common import (
    api_broker,
    get_nats_broker_or_404,
    stream_subjects,
)
from dashboard.models import Broker
from dashboard.views import messageview
from dashboard.views.api import error
from dashboard.views.messageview import shown_bytes
from dashboard.views.params import MAX_BODY, BadInput, header_pairs, json_object, parse_body, typed

# NATS's own subjects: the JetStream API and acks, cluster internals, the system account.
INTERNAL_PREFIXES = ("$JS.", "$JSC.", "$NRG.", "$SYS.")
DEFAULT_TIMEOUT, MAX_TIMEOUT = 2.0, 60.0


def target_subject(raw: Any) -> str:
    """The subject to send to, checked: one subject, not one of NATS's own."""
    subject = str(raw or "").strip()
    try:
        check_subject(subject, wildcards=False)
    except BadSubject as exc:
        raise BadInput(f"subject: {exc}") from None
    if subject.startswith(INTERNAL_PREFIXES):
        raise BadInput(
            f"subject: {subject.split('.')[0]}. subjects are NATS's own (the JetStream API, "
            "acknowledgements, the system account); Sluice does not send there"
        )
    return subject


def parse_nats_headers(raw: Any) -> list[tuple[str, str]]:
    """Headers (see `header_pairs`) with names and values NATS can carry."""
    out = []
    for name, value in header_pairs(raw):
        problem = header_problem(name, value)
        if problem:
            raise BadInput(problem)
        out.append((name, value))
    return out


def _body(data: Any) -> bytes:
    body = parse_body(str(data.get("body_kind") or "text"), str(data.get("body") or ""))
    if len(body) > MAX_BODY:
        raise BadInput(f"the body is {len(body):,} bytes; the limit here is {MAX_BODY:,}")
    return body


def _as_bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on", "jetstream")


def _timeout(raw: Any) -> float:
    if raw in (None, ""):
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadInput("timeout must be a number of seconds") from None
    if not 0.05 <= value <= MAX_TIMEOUT:
        raise BadInput(f"timeout must be from 0.05 to {MAX_TIMEOUT:g} seconds")
    return value


# -- doing it -------------------------------------------------------------------


def send(user: Any, broker: Broker, data: Any, jetstream: bool) -> dict[str, Any]:
    """Check a publish, send it, audit it; where it landed (JetStream) or that it went (core)."""
    subject = target_subject(data.get("subject"))
    headers = parse_nats_headers(data.get("headers"))
    body = _body(data)
    where = f"subject/{subject}"
    with publish_failure_audited(user, broker, where, len(body), jetstream=jetstream):
        with nats_client(broker) as client:
            ack = client.publish(subject, body, headers, jetstream=jetstream)
    if ack is None:
        audit_publish(user, broker, where, len(body), jetstream=False)
        return {"subject": subject, "jetstream": False, "confirmed": False}
    audit_publish(
        user,
        broker,
        where,
        len(body),
        "duplicate" if ack.duplicate else "ok",
        jetstream=True,
        stream=ack.stream,
        seq=ack.seq,
    )
    return {
        "subject": subject,
        "jetstream": True,
        "confirmed": True,
        "stream": ack.stream,
        "seq": ack.seq,
        "duplicate": ack.duplicate,
    }


def ask(user: Any, broker: Broker, data: Any) -> Reply:
    """Check a request, send it, wait for the reply, audit it (with the outcome)."""
    subject = target_subject(data.get("subject"))
    headers = parse_nats_headers(data.get("headers"))
    body = _body(data)
    timeout = _timeout(data.get("timeout"))
    where = f"subject/{subject}"
    try:
        with nats_client(broker) as client:
            reply = client.request(subject, body, headers, timeout=timeout)
    except (BrokerError, ValueError) as exc:
        # A ValueError: the client refused the input before sending it.
        outcome = (
            "no responders"
            if isinstance(exc, NoResponders)
            else "timeout"
            if isinstance(exc, NoReply)
            else "refused"
            if not isinstance(exc, BrokerError)
            else "failed"
        )
        audit(
            user,
            "message.request",
            broker=broker.name,
            destination=where,
            count=1,
            result=outcome,
            error=str(exc),
            timeout=timeout,
            size=len(body),
        )
        raise
    audit(
        user,
        "message.request",
        broker=broker.name,
        destination=where,
        count=1,
        latency_ms=round(reply.latency_ms, 3),
        reply_size=len(reply.body),
        stored_by=stored_by(reply),
        size=len(body),
    )
    return reply


def stored_by(reply: Reply) -> dict[str, Any] | None:
    """{"stream", "seq"} when the reply is a stream's PubAck: a stream captures the
    subject, so JetStream answered and stored the request, whatever else listens."""
    try:
        ack = json.loads(reply.body)
    except ValueError:
        return None
    if isinstance(ack, dict) and {"stream", "seq"} <= ack.keys() <= {
        "stream",
        "seq",
        "duplicate",
        "domain",
    }:
        return {"stream": ack["stream"], "seq": ack["seq"]}
    return None


def reply_view(reply: Reply) -> dict[str, Any]:
    """What the page shows of a reply; escaped on output like any broker data."""
    limit = settings.SLUICE_BODY_LIMIT
    return {
        "r": reply,
        "stored_by": stored_by(reply),
        "headers": [(name, shown_bytes(value, 1000)) for name, value in reply.headers],
        "body": messageview.body_parts(reply.body[:limit]),
        "size": len(reply.body),
        "truncated": len(reply.body) > limit,
        "shown_bytes": min(limit, len(reply.body)),
    }


# -- pages ----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def publish(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the form (anyone); POST: send (operators)."""
    broker = get_nats_broker_or_404(name)
    data = request.POST if request.method == "POST" else request.GET
    streams = stream_subjects(broker)
    ctx: dict[str, Any] = {
        "broker": broker,
        "form": data,
        "streams": streams,
        "subjects": sorted({s for subs in streams.values() for s in subs}),
        "mode": data.get("mode") or "jetstream",
        "stream": data.get("stream") if data.get("stream") in streams else None,
        "max_body": MAX_BODY,
    }
    status = 200
    if request.method == "POST":
        if not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        try:
            ctx["result"] = send(request.user, broker, typed(data), jetstream=ctx["mode"] != "core")
        except (ValueError, TooBig) as exc:  # BadInput, a body that does not parse
            ctx["error"], status = str(exc), 400
        except NoResponders as exc:
            ctx["error"], status = f"Not stored: {exc}.", 404
        except BrokerError as exc:
            ctx["error"], status = f"Not sent: {exc}", 502
    return render(request, "dashboard/nats/publish.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def request_reply(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the form and what request/reply is; POST: send one request (operators)."""
    broker = get_nats_broker_or_404(name)
    data = request.POST if request.method == "POST" else request.GET
    ctx: dict[str, Any] = {
        "broker": broker,
        "form": data,
        "default_timeout": DEFAULT_TIMEOUT,
        "max_timeout": MAX_TIMEOUT,
    }
    status = 200
    if request.method == "POST":
        if not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        try:
            ctx["reply"] = reply_view(ask(request.user, broker, typed(data)))
        except (ValueError, TooBig) as exc:
            ctx["error"], status = str(exc), 400
        except NoResponders as exc:
            ctx["no_responders"], status = str(exc), 404
        except NoReply as exc:
            ctx["timed_out"], status = str(exc), 504
        except BrokerError as exc:
            ctx["error"], status = f"Not sent: {exc}", 502
    return render(request, "dashboard/nats/request.html", ctx, status=status)


# -- the JSON API -----------------------------------------------------------------


@require_POST
@require_role(OPERATOR)
def api_publish(request: HttpRequest, name: str) -> JsonResponse:
    """POST {"subject", "headers", "body", "body_kind", "jetstream": true}."""
    broker = api_broker(name)
    if broker is None:
        return error(f"No NATS broker named {name!r}.", 404)
    try:
        data = json_object(request)
        return JsonResponse(send(request.user, broker, data, _as_bool(data.get("jetstream"), True)))
    except (ValueError, TooBig) as exc:
        return error(str(exc), 400)
    except NoResponders as exc:
        return error(str(exc), 404)
    except BrokerError as exc:
        return error(str(exc), 502)


@require_POST
@require_role(OPERATOR)
def api_request(request: HttpRequest, name: str) -> JsonResponse:
    """POST {"subject", "headers", "body", "body_kind", "timeout"} → the reply and its latency."""
    broker = api_broker(name)
    if broker is None:
        return error(f"No NATS broker named {name!r}.", 404)
    try:
        reply = ask(request.user, broker, json_object(request))
    except (ValueError, TooBig) as exc:
        return error(str(exc), 400)
    except NoResponders as exc:
        return error(str(exc), 404)
    except NoReply as exc:
        return error(str(exc), 504)
    except BrokerError as exc:
        return error(str(exc), 502)
    return JsonResponse(
        {
            "subject": reply.subject,
            "latency_ms": round(reply.latency_ms, 3),
            "headers": [
                {"name": n, "value": text_of(v), "value_base64": base64.b64encode(v).decode()}
                for n, v in reply.headers
            ],
            "body": text_of(reply.body),
            "body_base64": base64.b64encode(reply.body).decode(),
            "size": len(reply.body),
            "stored_by": stored_by(reply),
        }
    )
