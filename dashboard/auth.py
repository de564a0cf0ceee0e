"""Who may do what: login for everything, three roles, bearer tokens, the audit log.

Roles are Django groups. A superuser is an admin. A signed-in user in no
role group may sign out and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from brokers.base import BrokerError
from dashboard.models import ApiToken, AuditEntry

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each includes what the ones before it may do
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}


def role_of(user: Any) -> str | None:
    if not user or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_sluice_role", False)
    if cached is not False:
        # Only this module sets the attribute, always to a role name or None.
        return cast("str | None", cached)
    names = set(user.groups.values_list("name", flat=True))
    role = next((r for r in reversed(ROLES) if r in names), None)
    user._sluice_role = role
    return role


def has_role(user: Any, needed: str) -> bool:
    role = role_of(user)
    return role is not None and _RANK[role] >= _RANK[needed]


def set_role(user: Any, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    # Admins manage users in the Django admin, which needs is_staff.
    user.is_staff = role == ADMIN
    user.save(update_fields=["is_staff"])
    user._sluice_role = role


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def forbidden(request: HttpRequest, needed: str) -> HttpResponse:
    message = f"This needs the {needed} role."
    if is_api(request):
        return JsonResponse({"error": message}, status=403)
    return render(request, "403.html", {"message": message}, status=403)


def require_role(needed: str) -> Callable:
    """Let the view run only for users whose role includes `needed`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_role(request.user, needed):
                return forbidden(request, needed)
            return view(request, *args, **kwargs)

        wrapper.sluice_role = needed  # type: ignore[attr-defined]
        return wrapper

    return decorator


# Reachable without signing in: the login page itself, static files and the probes.
# /metrics checks its own callers (a token or SLUICE_METRICS_ALLOW: views/metrics.py).
PUBLIC_PREFIXES = ("/login/", "/static/", "/healthz", "/readyz", "/metrics")


class LoginRequiredMiddleware:
    """Every page and API call needs a signed-in user with a role."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(PUBLIC_PREFIXES):
            return self.get_response(request)
        if not request.user.is_authenticated:
            if is_api(request):
                return JsonResponse({"error": "Sign in or send a bearer token."}, status=401)
            return redirect(f"{reverse('login')}?next={request.get_full_path()}")
        if role_of(request.user) is None and request.path != reverse("logout"):
            return forbidden(request, VIEWER)
        return self.get_response(request)


class BearerTokenMiddleware:
    """`Authorization: Bearer <token>` signs an API request in as the token's user."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            raw = header[7:].strip()
            token = (
                ApiToken.objects.select_related("user")
                .filter(digest=ApiToken.hash(raw), user__is_active=True)
                .first()
            )
            if token is None:
                return JsonResponse({"error": "That token is not valid."}, status=401)
            request.user = token.user
            # A bearer token is not sent by browsers on their own, so there is
            # no cross-site request to forge.
            request._dont_enforce_csrf_checks = True
            if token.last_used is None or (timezone.now() - token.last_used).total_seconds() > 60:
                ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return self.get_response(request)


def role_context(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {
        "role": role_of(user),
        "can_operate": has_role(user, OPERATOR),
        "can_admin": has_role(user, ADMIN),
    }


def audit(
    user: Any,
    action: str,
    *,
    broker: str = "",
    destination: str = "",
    count: int | None = None,
    result: str = "ok",
    **detail: Any,
) -> AuditEntry:
    """Record a change. `user` is a user object or a name (for the system)."""
    name = user if isinstance(user, str) else (user.get_username() if user else "system")
    return AuditEntry.objects.create(
        user=name,
        action=action,
        broker=broker,
        destination=destination,
        count=count,
        result=result,
        detail=detail,
    )


def audit_publish(
    user: Any, broker: Any, where: str, size: int, result: str = "ok", **detail: Any
) -> AuditEntry:
    """The record of one message sent by hand ("message.publish"), on any broker."""
    return audit(
        user,
        "message.publish",
        broker=broker.name,
        destination=where,
        count=1,
        result=result,
        size=size,
        **detail,
    )


@contextmanager
def publish_failure_audited(
    user: Any, broker: Any, where: str, size: int, **detail: Any
) -> Iterator[None]:
    """Around a send: a BrokerError is recorded as a failed publish, a ValueError (the
    client refused the input before sending) as a refused one; then raised on."""
    try:
        yield
    except BrokerError as exc:
        audit_publish(user, broker, where, size, "failed", error=str(exc), **detail)
        raise
    except ValueError as exc:
        audit_publish(user, broker, where, size, "refused", error=str(exc), **detail)
        raise


def ensure_user(username: str, role: str, password: str | None = None) -> tuple[Any, bool]:
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    if password is not None:
        user.set_password(password)
        user.save()
    elif created:
        user.set_unusable_password()
        user.save()
    set_role(user, role)
    return user, created
