"""A JetStream stream's messages: browse by sequence, time or subject, download one; the live tail page.

Reading uses DIRECT GET or MESSAGE GET, never a consumer (brokers/nats/browse.py),
so viewers may browse and nothing is audited. Publishing and the request/reply
tester are in `nats_publish`; their URLs are listed here with the rest.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from brokers.base import BrokerError
from brokers.nats.browse import Page, Rejected, StreamBrowser
from brokers.nats.client import BadSubject, Missing, StoredMsg, check_subject
from brokers.schemas import Schema
from dashboard import decoding, masking
from dashboard.auth import VIEWER, require_role
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.nats.connect import nats_client
from dashboard.kinds.nats.views import publish as nats_publish
from dashboard.kinds.nats.views.common import (
    api_broker,
    get_nats_broker_or_404,
    sentence,
    stream_subjects,
)
from dashboard.live import tail
from dashboard.models import Broker, Destination
from dashboard.views import messageview
from dashboard.views.api import error
from dashboard.views.messageview import shown_bytes
from dashboard.views.params import BadInput, parse_time, whole

MAX_COUNT = 200  # messages one read shows
DEFAULT_COUNT = 20
READ_FROM = ("seq", "time", "newest", "before")
HEADER_CHARS = 1000  # of a header value shown


# -- parameters ---------------------------------------------------------------


def read_options(params: Any) -> dict[str, Any]:
    """How to read, from query parameters: from, seq, time, subject, count."""
    start = params.get("from") or "seq"
    if start not in READ_FROM:
        raise BadInput(f"from must be one of {', '.join(READ_FROM)}")
    subject = (params.get("subject") or "").strip()
    if subject:
        try:
            check_subject(subject, wildcards=True)
        except BadSubject as exc:
            raise BadInput(f"subject filter: {exc}") from None
    opts: dict[str, Any] = {
        "from": start,
        "count": whole(params, "count", DEFAULT_COUNT, 1, MAX_COUNT),
        "seq": whole(params, "seq", None, 1, 2**63 - 1),
        "subject": subject,
    }
    if start == "time":
        if not params.get("time"):
            raise BadInput("reading from a time needs the time")
        try:
            opts["time"] = datetime.fromtimestamp(parse_time(params["time"]) / 1000, UTC)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    if start == "before" and opts["seq"] is None:
        raise BadInput("reading the messages before a sequence needs the sequence")
    return opts


def read(browser: StreamBrowser, opts: dict[str, Any]) -> Page:
    count, subject = opts["count"], opts["subject"]
    if opts["from"] == "time":
        return browser.from_time(opts["time"], count, subject)
    if opts["from"] == "newest":
        return browser.newest(count, subject)
    if opts["from"] == "before":
        return browser.before(opts["seq"], count, subject)
    if opts["seq"] is None:
        return browser.first(count, subject)
    return browser.from_seq(opts["seq"], count, subject)


# -- showing messages ---------------------------------------------------------


def masked_msg(m: StoredMsg, masker: masking.Masker) -> StoredMsg:
    """The message as its reader may see it (dashboard.masking)."""
    if not masker:
        return m
    headers = tuple((name, masker.raw(name, value) or b"") for name, value in m.headers)
    return replace(m, body=masker.body(m.body), headers=headers)


def msg_view(
    m: StoredMsg, schemas: Sequence[Schema] = (), masker: masking.Masker = masking.NONE
) -> dict[str, Any]:
    """What the template needs of one message, masked for its reader; all of it is escaped
    on output."""
    m = masked_msg(m, masker)
    return {
        "m": m,
        "headers": [(name, shown_bytes(value, HEADER_CHARS)) for name, value in m.headers],
        "body": messageview.body_parts(
            m.body, (m.stream, m.subject), m.headers, schemas, masker.mask
        ),
    }


def msg_json(m: StoredMsg) -> dict[str, Any]:
    """A message for the API: text where the bytes are UTF-8, base64 always."""
    return {
        "seq": m.seq,
        "subject": m.subject,
        "time": m.time.isoformat() if m.time else None,
        "headers": [
            {
                "name": name,
                "value": text_of(value),
                "value_base64": base64.b64encode(value).decode(),
            }
            for name, value in m.headers
        ],
        "body": text_of(m.body),
        "body_base64": base64.b64encode(m.body).decode(),
        "size": m.size,
        "truncated": m.truncated,
    }


def _paging(params: Any, page: Page) -> dict[str, str]:
    keep = {k: v for k, v in params.items() if k in ("subject", "count") and v}
    urls = {}
    if page.next_seq is not None:
        urls["next_url"] = "?" + urlencode({**keep, "from": "seq", "seq": page.next_seq})
    if page.before is not None:
        urls["prev_url"] = "?" + urlencode({**keep, "from": "before", "seq": page.before})
    return urls


def _stream_dest(broker: Broker, stream: str) -> Destination | None:
    return Destination.objects.filter(broker=broker, key=f"stream/{stream}").first()


# -- views --------------------------------------------------------------------


@require_GET
@require_role(VIEWER)
def messages(request: HttpRequest, name: str, stream: str) -> HttpResponse:
    """Browse: from a sequence (the first by default), the newest, before a sequence, or from a time."""
    broker = get_nats_broker_or_404(name)
    params = request.GET
    ctx: dict[str, Any] = {
        "broker": broker,
        "stream": stream,
        "dest": _stream_dest(broker, stream),
        "form": params,
        "read_from": params.get("from") or "seq",
        "max_count": MAX_COUNT,
    }
    status = 200
    try:
        opts = read_options(params)
        ctx["opts"] = opts
        with nats_client(broker) as client:
            browser = StreamBrowser(client, stream, body_limit=settings.SLUICE_BODY_LIMIT)
            ctx["info"], ctx["holds"] = browser.info, browser.holds()
            page = read(browser, opts)
        ctx["page"] = page
        schemas = decoding.schemas()
        masker = masking.for_request(request, broker.name, stream)
        ctx["shown"] = [msg_view(m, schemas, masker) for m in page.messages]
        ctx.update(_paging(params, page))
    except BadInput as exc:
        ctx["error"], status = str(exc), 400
    except Missing as exc:
        ctx["error"], status = sentence(str(exc)), 404
    except Rejected as exc:
        ctx["error"], status = sentence(str(exc)), 400
    except BrokerError as exc:
        ctx["error"], ctx["unreachable"] = str(exc), True
    return render(request, "dashboard/nats/messages.html", ctx, status=status)


@require_GET
@require_role(VIEWER)
def body(request: HttpRequest, name: str, stream: str) -> HttpResponse:
    """The whole body of one message, as a download."""
    broker = get_nats_broker_or_404(name)
    try:
        seq = whole(request.GET, "seq", None, 1, 2**63 - 1)
        if seq is None:
            raise BadInput("give the sequence")
        with nats_client(broker) as client:
            message = StreamBrowser(client, stream).one(seq)
    except (BadInput, Rejected) as exc:
        return HttpResponse(sentence(str(exc)), status=400, content_type="text/plain")
    except Missing as exc:
        return HttpResponse(sentence(str(exc)), status=404, content_type="text/plain")
    except BrokerError as exc:
        return HttpResponse(
            f"Could not read the message: {exc}", status=502, content_type="text/plain"
        )
    body = masking.for_request(request, broker.name, stream).download(message.body)
    if body is None:
        return HttpResponse(masking.WITHHELD, status=403, content_type="text/plain")
    response = HttpResponse(body, content_type="application/octet-stream")
    filename = quote(f"{stream}-{seq}.bin", safe="")
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{filename}"
    return response


@require_GET
@require_role(VIEWER)
def tail_page(request: HttpRequest, name: str) -> HttpResponse:
    """A core subscription has no side effect on anyone else, so viewers may watch."""
    broker = get_nats_broker_or_404(name)
    subject = (request.GET.get("subject") or "").strip()
    ctx: dict[str, Any] = {
        "broker": broker,
        "subject": subject,
        "max_rows": tail.MAX_ROWS,
        "cap": tail.MAX_ROWS_PER_SECOND,
        "window": int(tail.RATE_WINDOW),
        "subjects": sorted({s for subs in stream_subjects(broker).values() for s in subs}),
    }
    if subject:
        try:
            check_subject(subject, wildcards=True)
        except BadSubject as exc:
            ctx["error"] = f"Cannot tail that subject: {exc}."
        else:
            ctx["ws_url"] = f"/ws/nats/tail/{quote(broker.name)}?" + urlencode({"subject": subject})
    return render(request, "dashboard/nats/tail.html", ctx)


# -- the JSON API -------------------------------------------------------------


@require_GET
@require_role(VIEWER)
def api_messages(request: HttpRequest, name: str, stream: str) -> JsonResponse:
    """GET ?from=seq|time|newest|before&seq=&time=&subject=&count=."""
    broker = api_broker(name)
    if broker is None:
        return error(f"No NATS broker named {name!r}.", 404)
    try:
        opts = read_options(request.GET)
        with nats_client(broker) as client:
            browser = StreamBrowser(client, stream, body_limit=settings.SLUICE_BODY_LIMIT)
            page = read(browser, opts)
        masker = masking.for_request(request, broker.name, stream)
    except Missing as exc:
        return error(sentence(str(exc)), 404)
    except (BadInput, Rejected) as exc:
        return error(sentence(str(exc)), 400)
    except BrokerError as exc:
        return error(sentence(str(exc)), 502)
    info = page.info
    return JsonResponse(
        {
            "stream": stream,
            "first_seq": info.first_seq,
            "last_seq": info.last_seq,
            "messages_in_stream": info.messages,
            "messages": [msg_json(masked_msg(m, masker)) for m in page.messages],
            "next_seq": page.next_seq,
            "before": page.before,
            "note": page.note,
        }
    )


@require_GET
@require_role(VIEWER)
def api_message(request: HttpRequest, name: str, stream: str, seq: int) -> JsonResponse:
    """One whole message by sequence."""
    broker = api_broker(name)
    if broker is None:
        return error(f"No NATS broker named {name!r}.", 404)
    try:
        with nats_client(broker) as client:
            message = StreamBrowser(client, stream).one(seq)
    except Missing as exc:
        return error(sentence(str(exc)), 404)
    except Rejected as exc:
        return error(sentence(str(exc)), 400)
    except BrokerError as exc:
        return error(sentence(str(exc)), 502)
    masker = masking.for_request(request, broker.name, stream)
    return JsonResponse(msg_json(masked_msg(message, masker)))


# Under /brokers/<name>/
urlpatterns: list = [
    path("streams/<str:stream>/messages", messages, name="nats-messages"),
    path("streams/<str:stream>/body", body, name="nats-body"),
    path("nats/publish/", nats_publish.publish, name="nats-publish"),
    path("nats/request/", nats_publish.request_reply, name="nats-request"),
    path("nats/tail/", tail_page, name="nats-tail"),
]
# Under /api/v1/brokers/<name>/
api_urlpatterns: list = [
    path("streams/<str:stream>/messages", api_messages, name="api-nats-messages"),
    path("streams/<str:stream>/messages/<int:seq>", api_message, name="api-nats-message"),
    path("nats/publish", nats_publish.api_publish, name="api-nats-publish"),
    path("nats/request", nats_publish.api_request, name="api-nats-request"),
]
