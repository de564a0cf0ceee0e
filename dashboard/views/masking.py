"""The masking rules in force, and an admin's opt-in to raw values for their session.

Rules live in the broker file (dashboard.masking); this page lists them. An
admin may see raw values for the rest of their session: turning it on or off
is audited, and it ends when they sign out.
"""

from __future__ import annotations

from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import masking
from dashboard.auth import ADMIN, audit, require_role


@require_GET
@require_role(ADMIN)
def rules(request: HttpRequest) -> HttpResponse:
    ctx = {
        "rules": masking.rules(),
        "raw": bool(request.session.get(masking.RAW_SESSION_KEY)),
        "mask": masking.MASK,
    }
    return render(request, "dashboard/masking.html", ctx)


@require_POST
@require_role(ADMIN)
def raw_values(request: HttpRequest) -> HttpResponse:
    """`on=1` shows this admin raw values until sign-out; anything else masks them again."""
    on = request.POST.get("on") == "1"
    request.session[masking.RAW_SESSION_KEY] = on
    audit(request.user, "masking.raw_values", result="on" if on else "off")
    flash.info(
        request,
        "Raw values are shown to you until you sign out, and this is in the audit log."
        if on
        else "Masked values are masked for you again.",
    )
    return redirect("dashboard:masking")
