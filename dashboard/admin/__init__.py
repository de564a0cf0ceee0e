"""The Django admin: brokers, users, tokens and alerts, open to the admin role only, every
change audited. Alerts have a module of their own (dashboard/admin/alerts.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from brokers.redact import MASK, redact_options
from dashboard import auth, config
from dashboard.models import ApiToken, AuditEntry, Broker

# The whole admin is for the admin role, whatever Django permissions say.
admin.site.has_permission = lambda request: auth.has_role(request.user, auth.ADMIN)
admin.site.site_header = "Sluice administration"


class AdminRoleMixin:
    """Grant the admin role everything here, and audit each change it makes."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return auth.has_role(request.user, auth.ADMIN)

    has_add_permission = has_module_permission

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
    kept = set(masked_keys(submitted, stored))
    return {key: stored[key] if key in kept else value for key, value in submitted.items()}


def masked_keys(submitted: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """The options the form sent back as shown (•••), standing for a stored secret."""
    masked = redact_options(stored)
    return [
        key
        for key, value in submitted.items()
        if key in stored and masked.get(key) == value and value != stored[key]
    ]


# Options that decide where (and how openly) the credentials travel.
ADDRESS_OPTIONS = (
    "management_url",
    "amqp_url",
    "url",
    "monitoring_url",
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
)


def moved_options(submitted: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """The address options whose servers (scheme, host, port) differ between the two."""
    return [
        key for key in ADDRESS_OPTIONS if _servers(submitted.get(key)) != _servers(stored.get(key))
    ]


def _servers(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    found = set()
    for item in str(value).lower().split(","):
        item = item.strip()
        if "://" in item:
            try:
                parts = urlsplit(item)
                item = f"{parts.scheme}://{parts.hostname}:{parts.port}"
            except ValueError:  # a bad port: compared as written
                pass
        found.add(item)
    return frozenset(found - {""})


class BrokerForm(forms.ModelForm):
    from_admin = True  # whether the saved options are the admin's (see BrokerAdmin.save_model)

    class Meta:
        model = Broker
        fields = ["name", "kind", "options", "interval", "enabled"]
        help_texts = {
            "options": 'JSON, e.g. {"management_url": "http://host:15672", "amqp_url": "amqp://ops:${RABBIT_PASSWORD}@host/%2F"}. '
            "Write passwords as ${VAR} so they stay in the environment (only variables named in "
            "SLUICE_ADMIN_ENV_ALLOWLIST). Stored passwords show as •••; leave them so to keep "
            "them, unless you change the broker's address: then enter them again.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["options"] = redact_options(self.instance.options)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, options = data.get("kind"), data.get("options") or {}
        if kind and not isinstance(options, dict):
            raise forms.ValidationError("Options must be a JSON object.")
        if self.instance.pk and isinstance(options, dict):
            options = data["options"] = self._unmask(options)
        if kind and isinstance(options, dict):
            _check_options(kind, options)
            shown = [k for k, v in options.items() if isinstance(v, str) and MASK in v]
            if shown:
                raise forms.ValidationError(
                    f"Not saved: {', '.join(shown)} still show {MASK}, and no secret is stored "
                    "for them: enter the secret."
                )
            self.from_admin = self._edits_connection(kind, options)
            refused = config.refused_variables(options) if self.from_admin else []
            if refused:
                names = ", ".join("${" + name + "}" for name in refused)
                raise forms.ValidationError(
                    f"Not saved: {names} would not be expanded. A broker added or changed here "
                    "may use only the variables named in SLUICE_ADMIN_ENV_ALLOWLIST, so that "
                    "no admin account can read the server's environment; the broker file may "
                    "use any."
                )
        return data

    def _unmask(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options with the secrets shown as ••• put back, unless the address changed."""
        stored = self.instance.options
        moved = moved_options(options, stored)
        # The stored secrets were given for the old address: never send them to a new one.
        kept = options if moved else unmask_options(options, stored)
        left = [key for key, value in kept.items() if isinstance(value, str) and MASK in value]
        if left and moved:
            raise forms.ValidationError(
                f"Not saved: {', '.join(moved)} changed, so the stored secrets are not sent to "
                f"the new address. Enter {', '.join(left)} again (or remove them)."
            )
        return kept

    def _edits_connection(self, kind: str, options: dict[str, Any]) -> bool:
        """True unless this is a broker from the file whose kind and options stay as they are."""
        instance = self.instance
        return not (
            instance.pk
            and instance.source == "file"
            and (kind, options) == (instance.kind, instance.options)
        )


def _check_options(kind: str, options: dict[str, Any]) -> None:
    from brokers.base import OPTIONS

    allowed = OPTIONS[kind]
    unknown = set(options) - set(allowed)
    if unknown:
        raise forms.ValidationError(f"Unknown option(s) for {kind}: {', '.join(sorted(unknown))}")
    odd = sorted(key for key, value in options.items() if not isinstance(value, str))
    if odd:  # as in the broker file: a URL, a name or a ${VAR}, never a number or a list
        raise forms.ValidationError(f"These options must be strings: {', '.join(odd)}")
    missing = [k for k, required in allowed.items() if required and not options.get(k)]
    if missing:
        raise forms.ValidationError(f"{kind} needs: {', '.join(missing)}")


@admin.register(Broker)
class BrokerAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = BrokerForm
    list_display = ["name", "kind", "status", "enabled", "source", "last_collected"]
    list_filter = ["kind", "status", "enabled"]
    readonly_fields = ["source", "status", "error", "down_since", "last_collected"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Options written here are the admin's, whatever the file said: they expand
        # only allow-listed variables, until the file's next change puts its own back.
        if form.from_admin:
            obj.source = "admin"
        super().save_model(request, obj, form, change)


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


# The alert rules, channels, silences and notifications (dashboard/admin/alerts.py), and
# the schemas that decode Avro and Protobuf bodies (dashboard/admin/schemas.py).
from dashboard.admin import alerts, schemas  # noqa: E402, F401
