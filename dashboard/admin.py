"""The Django admin: brokers, users and tokens, open to the admin role only, every change audited."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from brokers.base import redact_options
from dashboard import auth
from dashboard.models import ApiToken, AuditEntry, Broker

# The whole admin is for the admin role, whatever Django permissions say.
admin.site.has_permission = lambda request: auth.has_role(request.user, auth.ADMIN)  # type: ignore[method-assign]
admin.site.site_header = "Sluice administration"


class AdminRoleMixin:
    """Grant the admin role everything here, and audit each change it makes."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    has_add_permission = has_module_permission  # type: ignore[assignment]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    has_delete_permission = has_change_permission

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        auth.audit(request.user, f"admin.add.{obj._meta.model_name}", destination=str(obj))
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        auth.audit(
            request.user,
            f"admin.change.{obj._meta.model_name}",
            destination=str(obj),
            change=str(message),
        )
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            auth.audit(request.user, f"admin.delete.{obj._meta.model_name}", destination=str(obj))
        return super().log_deletions(request, queryset)  # type: ignore[misc]


def unmask_options(submitted: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """Where the form sent back a masked value unchanged, keep the stored secret."""
    masked = redact_options(stored)
    return {
        key: stored[key]
        if key in stored and masked.get(key) == value and value != stored[key]
        else value
        for key, value in submitted.items()
    }


class BrokerForm(forms.ModelForm):
    class Meta:
        model = Broker
        fields = ["name", "kind", "options", "interval", "enabled"]
        help_texts = {
            "options": 'JSON, e.g. {"management_url": "http://host:15672", "amqp_url": "amqp://ops:${RABBIT_PASSWORD}@host/%2F"}. '
            "Write passwords as ${VAR} so they stay in the environment. Stored passwords show as •••; "
            "leave them so to keep them.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["options"] = redact_options(self.instance.options)

    def clean(self) -> dict[str, Any]:
        from brokers.base import OPTIONS

        data = super().clean() or {}
        kind, options = data.get("kind"), data.get("options") or {}
        if self.instance.pk and isinstance(options, dict):
            options = data["options"] = unmask_options(options, self.instance.options)
        if kind and isinstance(options, dict):
            allowed = OPTIONS[kind]
            unknown = set(options) - set(allowed)
            if unknown:
                raise forms.ValidationError(
                    f"Unknown option(s) for {kind}: {', '.join(sorted(unknown))}"
                )
            missing = [k for k, required in allowed.items() if required and not options.get(k)]
            if missing:
                raise forms.ValidationError(f"{kind} needs: {', '.join(missing)}")
        elif kind:
            raise forms.ValidationError("Options must be a JSON object.")
        return data


@admin.register(Broker)
class BrokerAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = BrokerForm
    list_display = ["name", "kind", "status", "enabled", "source", "last_collected"]
    list_filter = ["kind", "status", "enabled"]
    readonly_fields = ["source", "status", "error", "down_since", "last_collected"]


@admin.register(ApiToken)
class ApiTokenAdmin(AdminRoleMixin, admin.ModelAdmin):
    list_display = ["prefix", "user", "created", "last_used"]
    fields = ["user", "prefix", "created", "last_used"]
    readonly_fields = ["prefix", "created", "last_used"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are issued by `manage.py create_api_token`, shown once


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "user", "action", "broker", "destination", "count", "result"]
    list_filter = ["action", "result", "broker"]
    search_fields = ["user", "destination"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    # The audit log is append-only, even for admins.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class SluiceUserAdmin(AdminRoleMixin, UserAdmin):
    list_display = ["username", "is_active", "is_superuser", "last_login"]
