"""Sign-in attempts in the audit log, and the client address the login throttle counts.

django-axes counts the failures and locks an account, or an address, out
(settings.AXES_*); this module records every attempt made through a login form
as an AuditEntry: "login.failed" with the user name tried and the address (never
the password), result "denied" while locked out; "login.ok" for a sign-in.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.auth import audit

NAME_LIMIT = 150  # Django's user names are at most this long; the rest is noise


def client_address(request: HttpRequest) -> str:
    """The client's address: with SLUICE_PROXY_COUNT proxies in front, the one the outermost saw."""
    proxies = settings.SLUICE_PROXY_COUNT
    if proxies:
        # Each proxy appends the address it was reached from; earlier entries are the
        # client's to forge, so count from the right.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return str(request.META.get("REMOTE_ADDR", ""))


def _name(value: Any) -> str:
    return str(value or "")[:NAME_LIMIT].replace("\x00", "\\x00")


def login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already replaced the password in `credentials`; it is not read here anyway.
    username = _name(credentials.get("username"))
    # Refused unread while locked out: axes (8.3) counts no failure then, so it leaves
    # the count it sets on the request at None. The failure that reaches the limit is
    # counted, and stays "failed".
    locked = bool(getattr(request, "axes_locked_out", False)) and (
        getattr(request, "axes_failures_since_start", None) is None
    )
    audit(
        "anonymous",
        "login.failed",
        destination=username,
        result="denied" if locked else "failed",
        username=username,
        address=client_address(request) if request is not None else "",
        reason="too many failed sign-ins: locked out" if locked else "wrong user name or password",
    )


def logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # Only sign-ins through a form: tests' force_login() and the like send no POST.
    if request is None or request.method != "POST":
        return
    audit(user, "login.ok", destination=user.get_username(), address=client_address(request))


def locked_out(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """The answer to a sign-in refused by the throttle (AXES_LOCKOUT_CALLABLE): 429, a page."""
    ctx = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": settings.SLUICE_LOGIN_LOCKOUT_MINUTES,
        "username": _name((credentials or {}).get("username")),
    }
    return render(request, "registration/locked_out.html", ctx, status=429)


def connect() -> None:
    user_login_failed.connect(login_failed, dispatch_uid="sluice.login_failed")
    user_logged_in.connect(logged_in, dispatch_uid="sluice.logged_in")
