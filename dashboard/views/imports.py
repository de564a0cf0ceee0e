"""Importing an NDJSON file as a publish job (dashboard.jobs.imports): the page and the API.

Both only create the job as a dry run: its page shows how many messages go
where, and the operator starts it there (or through `POST /api/v1/jobs/<id>/start`).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.auth import OPERATOR, require_role
from dashboard.jobs import imports
from dashboard.jobs import service as jobservice
from dashboard.jobs.guard import Invalid
from dashboard.kinds import kind_of
from dashboard.models import Broker
from dashboard.views.pages import get_broker_or_404

# Where an import goes, as each kind names it (its import_target reads those it knows).
TARGET_FIELDS = ("vhost", "queue", "exchange", "routing_key", "topic", "subject")


def _broker(name: str) -> Broker:
    broker = get_broker_or_404(name)
    if not kind_of(broker).import_fields_template:
        raise Http404(f"{broker.name} takes no imports")
    return broker


def _fields(values: Any, blank_is_none: bool) -> dict[str, Any]:
    """Target and pace fields of a form (a blank field is not given) or a query string."""
    data: dict[str, Any] = {
        f: values[f] for f in TARGET_FIELDS if f in values and (values[f] or not blank_is_none)
    }
    try:
        if values.get("rate"):
            data["rate"] = float(values["rate"])
        if values.get("batch_size"):
            data["batch_size"] = int(values["batch_size"])
    except ValueError:
        raise Invalid("rate and batch_size must be numbers") from None
    return data


@require_http_methods(["GET", "POST"])
@require_role(OPERATOR)
def page(request: HttpRequest, name: str) -> HttpResponse:
    """The form: a file, where its messages go, and the pace; then the job's dry run."""
    broker = _broker(name)
    form: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        form = {f: request.POST.get(f, "") for f in (*TARGET_FIELDS, "rate", "batch_size")}
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise Invalid("choose an NDJSON file to import")
            data = _fields(request.POST, blank_is_none=True)
            job = imports.create(request.user, broker, upload.chunks(), upload.name or "", data)
        except Invalid as exc:
            flash.error(request, str(exc))
            status = 400
        else:
            return redirect("dashboard:job-detail", job_id=job.public_id)
    ctx = {"broker": broker, "kind": kind_of(broker), "form": form}
    return render(request, "dashboard/import.html", ctx, status=status)


@require_POST
@require_role(OPERATOR)
def api_import(request: HttpRequest, name: str) -> JsonResponse:
    """The body is the NDJSON file, read as it arrives; where it goes (`vhost`, `queue`,
    `exchange`, `routing_key`, `topic`, `subject`), `rate`, `batch_size` and `name` are
    query parameters. Answers the dry-run job, as `POST /api/v1/jobs` does."""
    broker = _broker(name)
    try:
        data = _fields(request.GET, blank_is_none=False)
        chunks = iter(lambda: request.read(65536), b"")
        job = imports.create(request.user, broker, chunks, request.GET.get("name", ""), data)
    except Invalid as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(jobservice.as_json(job), status=201)
