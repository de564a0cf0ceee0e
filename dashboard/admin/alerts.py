"""The admin of alerts: rules, channels, silences, and what was sent, with its attempts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from brokers.redact import MASK, VAR_REF, redact_url
from dashboard import auth, config
from dashboard.admin import AdminRoleMixin
from dashboard.alerts import channels as alert_channels
from dashboard.models import (
    AlertChannel,
    AlertRule,
    DeliveryAttempt,
    Notification,
    Silence,
)
from dashboard.models.alerts import EMAIL, THRESHOLD, WEBHOOK

# -- alerts: rules, channels, silences, and what was sent -----------------------------


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = [
            "name", "detector", "metric", "threshold", "broker", "destination", "severity",
            "enabled",
        ]  # fmt: skip
        help_texts = {
            "detector": '"threshold" for a rule of its own, or the name of a built-in detector '
            "(unreachable, consumers_lost, backlog_growing, dead_letters, lag_seconds, stalled, "
            "redelivery, alarm, partitions, no_controller, group_error, retention, healthz) to "
            "turn it off, change its severity or its threshold where this rule matches.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        detector = data.get("detector") or ""
        if not config.DETECTOR_RE.match(detector):
            raise forms.ValidationError('The detector is "threshold" or a detector\'s name.')
        if detector == THRESHOLD and (not data.get("metric") or data.get("threshold") is None):
            raise forms.ValidationError("A threshold rule needs a metric and a threshold.")
        if detector != THRESHOLD and data.get("metric"):
            raise forms.ValidationError("A metric is for threshold rules only.")
        return data


@admin.register(AlertRule)
class AlertRuleAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = AlertRuleForm
    list_display = [
        "name", "detector", "metric", "threshold", "broker", "destination", "severity",
        "enabled", "source",
    ]  # fmt: skip
    list_filter = ["detector", "enabled", "source"]
    readonly_fields = ["source"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.source = "admin"  # the admin's now, until the file's next change puts its own back
        super().save_model(request, obj, form, change)


def shown_secret(secret: str) -> str:
    """A `${VAR}` names the secret without revealing it; anything else is masked."""
    if not secret:
        return ""
    return secret if VAR_REF.fullmatch(secret) else MASK


class AlertChannelForm(forms.ModelForm):
    from_admin = True  # whether the channel's address and secret are now the admin's

    class Meta:
        model = AlertChannel
        fields = [
            "name", "type", "url", "recipients", "secret", "min_severity", "repeat_seconds",
            "enabled",
        ]  # fmt: skip
        help_texts = {
            "url": "For webhook and Slack. A Slack webhook address is itself a secret: write it "
            "as ${VAR} (a variable named in SLUICE_ADMIN_ENV_ALLOWLIST).",
            "secret": "For webhooks: ${VAR}, the variable holding the signing key (named in "
            "SLUICE_ADMIN_ENV_ALLOWLIST). Its value is read when sending, and never shown.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["secret"] = shown_secret(self.instance.secret)
            self.initial["url"] = redact_url(self.instance.url)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        stored = self.instance
        url, secret = data.get("url") or "", data.get("secret") or ""
        if stored.pk and secret == MASK:
            secret = data["secret"] = stored.secret
        if stored.pk and url == redact_url(stored.url):
            url = data["url"] = stored.url
        kind = data.get("type")
        if kind == EMAIL:
            recipients = [r.strip() for r in (data.get("recipients") or "").split(",")]
            if not any(recipients) or any("@" not in r for r in recipients if r):
                raise forms.ValidationError("Email needs recipients: addresses, with commas.")
            if url or secret:
                raise forms.ValidationError("Email channels take no url and no secret.")
        elif kind:
            if not url.startswith(("http://", "https://", "${")):
                raise forms.ValidationError("The url must start with http:// or https://.")
            if redact_url(url) != url:
                raise forms.ValidationError(
                    "Write the password in the url as ${VAR}, so that it stays in the environment."
                )
            if secret and kind != WEBHOOK:
                raise forms.ValidationError("Only webhooks are signed: leave the secret empty.")
        if secret and not VAR_REF.fullmatch(secret):
            raise forms.ValidationError(
                "Write the secret as ${VAR}, naming the environment variable that holds it: "
                "the database never stores it."
            )
        self.from_admin = not (
            stored.pk
            and stored.source == "file"
            and (kind, url, secret) == (stored.type, stored.url, stored.secret)
        )
        if self.from_admin:
            refused = config.refused_variables({"url": url, "secret": secret})
            if refused:
                names = ", ".join("${" + name + "}" for name in refused)
                raise forms.ValidationError(
                    f"Not saved: {names} would not be expanded. A channel added or changed here "
                    "may use only the variables named in SLUICE_ADMIN_ENV_ALLOWLIST; the file "
                    "may use any."
                )
        return data


@admin.register(AlertChannel)
class AlertChannelAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = AlertChannelForm
    list_display = [
        "name", "type", "target", "signed_with", "min_severity", "repeat_seconds", "enabled",
        "source",
    ]  # fmt: skip
    list_filter = ["type", "enabled", "source"]
    readonly_fields = ["source"]
    actions = ["send_test"]

    @admin.display(description="sends to")
    def target(self, obj: AlertChannel) -> str:
        return obj.recipients if obj.type == EMAIL else redact_url(obj.url)

    @admin.display(description="secret")
    def signed_with(self, obj: AlertChannel) -> str:
        return shown_secret(obj.secret) or "-"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if form.from_admin:
            obj.source = "admin"
        super().save_model(request, obj, form, change)

    @admin.action(description="Send a test message")
    def send_test(self, request: HttpRequest, queryset: Any) -> None:
        now = timezone.now()
        who = request.user.get_username()
        for channel in queryset:
            message = alert_channels.Message(
                delivery=f"test-{uuid.uuid4()}",
                event="test",
                severity="info",
                broker="sluice",
                cause="test",
                summary=f"A test message from Sluice, sent by {who} from the admin.",
                since=now,
                at=now,
                link=f"{settings.SLUICE_PUBLIC_URL}/",
            )
            result = alert_channels.send(channel, message)
            auth.audit(
                request.user,
                "alert.channel.test",
                destination=channel.name,
                result="ok" if result.ok else "failed",
                status=result.status,
                error=result.error,
            )
            if result.ok:
                self.message_user(request, f"{channel.name}: the test message was sent.")
            else:
                self.message_user(
                    request, f"{channel.name}: not sent: {result.error}", level=messages.ERROR
                )


class SilenceForm(forms.ModelForm):
    class Meta:
        model = Silence
        fields = ["broker", "destination", "cause", "starts_at", "ends_at", "comment"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts and ends and ends <= starts:
            raise forms.ValidationError("A silence must end after it starts.")
        return data


@admin.register(Silence)
class SilenceAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = SilenceForm
    list_display = ["__str__", "starts_at", "ends_at", "is_active", "created_by", "comment"]
    readonly_fields = ["created_by"]
    actions = ["end_now"]

    @admin.display(boolean=True, description="active")
    def is_active(self, obj: Silence) -> bool:
        return obj.active(timezone.now())

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        now = timezone.now()
        return {"starts_at": now, "ends_at": now + timedelta(hours=2)}

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        auth.audit(
            request.user,
            "silence.create",
            broker=obj.broker[:64],
            destination=obj.destination,
            cause=obj.cause,
            starts_at=obj.starts_at.isoformat(),
            ends_at=obj.ends_at.isoformat(),
            comment=obj.comment,
        )
        return admin.ModelAdmin.log_addition(self, request, obj, message)

    @admin.action(description="End now")
    def end_now(self, request: HttpRequest, queryset: Any) -> None:
        now = timezone.now()
        ended = 0
        for silence in queryset.filter(ends_at__gt=now):
            was = silence.ends_at
            silence.ends_at = max(now, silence.starts_at)
            silence.save(update_fields=["ends_at"])
            auth.audit(
                request.user,
                "silence.expire",
                broker=silence.broker[:64],
                destination=silence.destination,
                cause=silence.cause,
                was_until=was.isoformat(),
            )
            ended += 1
        self.message_user(request, f"{ended} silence(s) ended.")


class ReadOnlyMixin:
    """What the workers record: for reading, even by admins."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryAttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = DeliveryAttempt
    fields = ["at", "ok", "status", "error", "duration_ms"]
    readonly_fields = fields
    extra = 0


@admin.register(Notification)
class NotificationAdmin(ReadOnlyMixin, AdminRoleMixin, admin.ModelAdmin):
    list_display = [
        "created_at", "incident", "channel", "event", "seq", "state", "attempts", "sent_at",
        "last_error",
    ]  # fmt: skip
    list_filter = ["state", "event", "channel"]
    list_select_related = ["incident__broker", "channel"]
    inlines = [DeliveryAttemptInline]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyMixin, AdminRoleMixin, admin.ModelAdmin):
    list_display = ["at", "notification", "ok", "status", "error", "duration_ms"]
    list_filter = ["ok"]
    list_select_related = ["notification__channel"]
