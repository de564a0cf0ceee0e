"""Downloads of dead letters as NDJSON (dashboard.jobs.export), from the page and the API.

Reading a source that reading changes (a RabbitMQ classic or quorum queue)
needs the operator role, as looking at it does; any other source, the viewer
role, as browsing it does. Both routes are POSTs, so that a link cannot start
one and CSRF protects the page's.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard import masking
from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, require_role
from dashboard.jobs import export as exports
from dashboard.jobs.guard import Invalid
from dashboard.kinds import kind_of
from dashboard.models import Destination
from dashboard.views.deadletters import selection_from_form
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import BadInput, json_object

PREVIEW_LINES = 20  # lines of the file a preview shows
# Every kind's filter fields as its forms name them (NATS: stream, consumer, subject).
FORM_FIELDS = (
    "reason",
    "queue",
    "exchange",
    "routing_key",
    "stream",
    "consumer",
    "subject",
    "body_contains",
)


def download(request: HttpRequest, export: exports.Export) -> StreamingHttpResponse:
    """The export as an NDJSON attachment, streamed as it is read."""
    # Under ASGI, Django would read a sync iterator whole before sending it.
    content: Any = export.for_asgi() if isinstance(request, ASGIRequest) else export
    response = StreamingHttpResponse(content, content_type="application/x-ndjson")
    name = exports.filename(export.broker, export.source)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class _NeedsOperator(Exception):
    pass


def _prepared(request: HttpRequest, name: str, source: Any, selection: Any) -> exports.Export:
    broker = get_broker_or_404(name)
    if not isinstance(source, str) or not source:
        raise Invalid("say which dead-letter source to export (its key)")
    # Asked first, of the stored topology alone: a viewer learns nothing more of the broker.
    if kind_of(broker).export_effect(broker, source) and not has_role(request.user, OPERATOR):
        raise _NeedsOperator
    dest = Destination.objects.filter(broker=broker, key=source).first()
    masker = masking.for_request(request, broker.name, dest.name if dest else source)
    return exports.of_dead_letters(request.user, broker, source, selection, masker).open()


@require_POST
@require_role(VIEWER)
def page_export(request: HttpRequest, name: str) -> HttpResponse:
    """The dead-letters page's "Download NDJSON": the form's selection of its source."""
    post = request.POST
    source = post.get("queue") or post.get("source")  # as the shared page / NATS's name it
    broker = get_broker_or_404(name)
    back = reverse(kind_of(broker).dead_letters_page, args=[name])
    if kind_of(broker).dead_letters_page == "dashboard:deadletters":
        back += f"?queue={source or ''}"
    try:
        export = _prepared(request, name, source, selection_from_form(post, FORM_FIELDS))
    except _NeedsOperator:
        return forbidden(request, OPERATOR)
    except Invalid as exc:
        flash.error(request, f"Not exported: {exc}")
        return redirect(back)
    if post.get("preview"):
        return _preview(request, export, back)
    return download(request, export)


def _preview(request: HttpRequest, export: exports.Export, back: str) -> HttpResponse:
    """The file's first lines as text, with the button that downloads all of it."""
    export.action = exports.PREVIEW_ACTION
    lines: list[str] = []
    try:
        for chunk in export:
            lines += chunk.decode("ascii").splitlines()[: PREVIEW_LINES - len(lines)]
            if len(lines) >= PREVIEW_LINES:
                break
    finally:
        export.close()
    hidden = [
        (k, v)
        for k in request.POST
        if k not in ("csrfmiddlewaretoken", "preview")
        for v in request.POST.getlist(k)
    ]
    ctx = {
        "broker": export.broker,
        "export": export,
        "lines": lines,
        "more": len(lines) >= PREVIEW_LINES,
        "hidden": hidden,
        "back": back,
    }
    return render(request, "dashboard/export_preview.html", ctx)


@require_POST
@require_role(VIEWER)
def api_export(request: HttpRequest, name: str) -> HttpResponse:
    """`{"source": key, "selection": {...}}` (as a job's; default all) -> NDJSON."""
    try:
        data = json_object(request)
    except BadInput as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        export = _prepared(request, name, data.get("source"), data.get("selection", {"all": True}))
    except _NeedsOperator:
        return forbidden(request, OPERATOR)
    except Invalid as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return download(request, export)
