"""Message jobs: their pages, with a live progress bar, and the JSON API for scripts and runbooks."""

from __future__ import annotations

from typing import Any

from django.contrib import messages as flash
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.auth import OPERATOR, VIEWER, forbidden, has_role, is_api, require_role
from dashboard.jobs import engine as jobs
from dashboard.jobs import guard as jobguard
from dashboard.jobs import service as jobservice
from dashboard.live import watch
from dashboard.models import Broker, Job
from dashboard.views.params import BadInput, json_object

VERBS = {"start": jobservice.start, "cancel": jobservice.cancel, "resume": jobservice.resume}


def get_job_or_404(job_id: str) -> Job:
    try:
        return get_object_or_404(Job.objects.select_related("broker"), public_id=job_id)
    except ValidationError:  # not a UUID
        raise Http404("No such job.") from None


def job_context(job: Job) -> dict[str, Any]:
    return {
        "job": job,
        "data": jobservice.as_json(job),
        "view": watch.View("job", job=str(job.public_id)),
    }


@require_GET
@require_role(VIEWER)
def job_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "dashboard/jobs.html", {"jobs": Job.objects.select_related("broker")[:200]}
    )


@require_GET
@require_role(VIEWER)
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    job = get_job_or_404(job_id)
    ctx = job_context(job)
    show = request.GET.get("show", "done")
    ctx["show"] = show if show in jobs.OUTCOME_VIEWS else "done"
    ctx["outcomes"] = jobs.outcomes(job, ctx["show"])
    return render(request, "dashboard/job.html", ctx)


@require_POST
@require_role(OPERATOR)
def job_control(request: HttpRequest, job_id: str, verb: str) -> HttpResponse:
    job = get_job_or_404(job_id)
    if verb not in VERBS:
        raise Http404("No such action.")
    try:
        if verb == "start":
            # The preview page's Confirm button carries the preview's confirm text.
            jobservice.start(request.user, job, request.POST.get("confirm"))
        else:
            VERBS[verb](request.user, job)
    except jobguard.NeedsRole as exc:
        return forbidden_because(request, str(exc))
    except jobservice.Invalid as exc:
        flash.error(request, str(exc))
    return redirect("dashboard:job-detail", job_id=job.public_id)


def forbidden_because(request: HttpRequest, message: str) -> HttpResponse:
    """403 with the reason: JSON for the API, the refusal page for a browser."""
    if is_api(request):
        return JsonResponse({"error": message}, status=403)
    return render(request, "403.html", {"message": message}, status=403)


# /api/v1/jobs


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        return json_object(request)
    except BadInput as exc:
        raise jobservice.Invalid(str(exc)) from None


@require_http_methods(["GET", "POST"])
@require_role(VIEWER)
def api_jobs(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse(
            {"jobs": [jobservice.as_json(j) for j in Job.objects.select_related("broker")[:200]]}
        )

    if not has_role(request.user, OPERATOR):
        return forbidden(request, OPERATOR)
    try:
        data = _json_body(request)
        broker = Broker.objects.filter(name=data.get("broker") or "", enabled=True).first()
        if broker is None:
            raise jobservice.Invalid(f"no broker named {data.get('broker')!r}")
        job = jobservice.create(request.user, broker, data)
    except jobguard.NeedsRole as exc:
        return forbidden_because(request, str(exc))
    except jobservice.NeedsConfirmation as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    except jobservice.Invalid as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(jobservice.as_json(job), status=201)


@require_GET
@require_role(VIEWER)
def api_job(request: HttpRequest, job_id: str) -> JsonResponse:
    job = get_job_or_404(job_id)
    body = jobservice.as_json(job)
    if request.GET.get("outcomes"):
        which = request.GET["outcomes"]
        body["outcomes"] = jobs.outcomes(
            job, which if which in jobs.OUTCOME_VIEWS else "all", limit=10000
        )
    return JsonResponse(body)


@require_POST
@require_role(OPERATOR)
def api_job_control(request: HttpRequest, job_id: str, verb: str) -> JsonResponse:
    job = get_job_or_404(job_id)
    if verb not in VERBS:
        return JsonResponse(
            {"error": f"unknown action {verb!r}; use start, cancel or resume"}, status=404
        )
    try:
        # A form post (or none) is taken as well as JSON: cancel and resume need no body.
        body = json_object(request) if request.content_type == "application/json" else request.POST
    except BadInput as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        if verb == "start":
            # {"confirm": <the preview's confirm text>}, needed for a destructive job.
            jobservice.start(request.user, job, body.get("confirm"))
        else:
            VERBS[verb](request.user, job)
    except jobguard.NeedsRole as exc:
        return forbidden_because(request, str(exc))
    except jobservice.Invalid as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse(jobservice.as_json(job))
