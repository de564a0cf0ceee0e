"""Alerts: the rules that open incidents, the channels told of them, silences, and what was sent.

- `AlertRule`: thresholds per broker and destination pattern, and changes to built-in detectors;
- `AlertChannel`: a webhook, a Slack incoming webhook or email addresses;
- `Silence`: holds back the messages of the incidents it matches, for a while;
- `Notification`: one message (firing, repeat, resolved) about one incident for one channel;
- `DeliveryAttempt`: each try at sending one.
"""

from __future__ import annotations

import fnmatch
import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone

from dashboard.models.incidents import SEVERITIES, SEVERITY_RANK, WARNING, Incident

# Figures a threshold rule may watch, each with the sentence its rule reads as.
METRICS = {
    "backlog": "backlog above {t:,.0f} messages",
    "lag": "lag above {t:,.0f}",
    "lag_seconds": "lag above {t:,.0f} s behind",
    "no_consumers_seconds": "no consumers, with a backlog, for longer than {t:,.0f} s",
    "dead_letters_per_minute": "more than {t:,.1f} dead letters a minute",
    "time_to_full_seconds": "full in less than {t:,.0f} s at the current growth",
}
THRESHOLD = "threshold"


class AlertRule(models.Model):
    """Either a threshold on a figure (detector "threshold"), or a change to a built-in detector
    for the places it matches: off, another severity, another threshold."""

    name = models.SlugField(max_length=64, unique=True)
    detector = models.CharField(
        max_length=64,
        default=THRESHOLD,
        help_text='"threshold", or a built-in detector\'s name to change it where this matches.',
    )
    metric = models.CharField(
        max_length=32, blank=True, choices=[(m, m) for m in METRICS], help_text="For thresholds."
    )
    threshold = models.FloatField(null=True, blank=True)
    broker = models.CharField(max_length=255, default="*", help_text="A glob on broker names.")
    destination = models.CharField(
        max_length=1024, default="*", help_text="A glob on destination names."
    )
    severity = models.CharField(max_length=16, blank=True, choices=SEVERITIES)
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=8, default="admin", editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def matches(self, broker: str, name: str) -> bool:
        return fnmatch.fnmatchcase(broker, self.broker or "*") and fnmatch.fnmatchcase(
            name, self.destination or "*"
        )

    @property
    def sentence(self) -> str:
        if self.detector != THRESHOLD:
            return f"changes the {self.detector} detector for {self.destination} on {self.broker}"
        what = METRICS.get(self.metric, self.metric).format(t=self.threshold or 0)
        return f"{what}, for {self.destination} on {self.broker}"


# -- where alerts go, and what was sent --------------------------------------------

WEBHOOK, SLACK, EMAIL = "webhook", "slack", "email"
CHANNEL_TYPES = [
    (WEBHOOK, "webhook (JSON, signed)"),
    (SLACK, "Slack incoming webhook"),
    (EMAIL, "email"),
]


def glob_match(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern or "*")


class AlertChannel(models.Model):
    """A place notifications are sent: a webhook, a Slack incoming webhook, or email.

    `url` and `secret` may name environment variables as `${VAR}`; they are expanded
    only when sending (channels from the admin: only those in SLUICE_ADMIN_ENV_ALLOWLIST),
    so the database holds the reference, never the value.
    """

    name = models.SlugField(max_length=64, unique=True)
    type = models.CharField(max_length=16, choices=CHANNEL_TYPES)
    url = models.CharField(
        max_length=2048, blank=True, help_text="For webhook and Slack; may be or contain ${VAR}."
    )
    recipients = models.CharField(
        max_length=2048, blank=True, help_text="For email: addresses, separated by commas."
    )
    secret = models.CharField(
        max_length=255,
        blank=True,
        help_text="For webhooks: ${VAR}, the environment variable holding the signing key.",
    )
    min_severity = models.CharField(max_length=16, choices=SEVERITIES, default=WARNING)
    repeat_seconds = models.PositiveIntegerField(
        default=0,
        help_text="Seconds between reminders of an incident still open and not acknowledged; "
        "0: never.",
    )
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=8, default="admin", editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def accepts(self, severity: str) -> bool:
        return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(self.min_severity, 0)

    @property
    def recipient_list(self) -> list[str]:
        return [r.strip() for r in self.recipients.split(",") if r.strip()]


class Silence(models.Model):
    """While it lasts, firing and repeat messages of the incidents it matches are held back."""

    broker = models.CharField(max_length=255, default="*", help_text="A glob on broker names.")
    destination = models.CharField(
        max_length=1024,
        default="*",
        help_text='A glob on destination names ("" is the broker itself; * matches it too).',
    )
    cause = models.CharField(
        max_length=64, default="*", help_text='A glob on causes, e.g. "unreachable", "rule:*".'
    )
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    comment = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True, editable=False)

    class Meta:
        ordering = ["-ends_at"]

    def __str__(self) -> str:
        return (
            f"{self.cause} on {self.broker}:{self.destination} "
            f"until {self.ends_at:%Y-%m-%d %H:%M} UTC"
        )

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def matches(self, incident: Incident, at: datetime) -> bool:
        return (
            self.active(at)
            and glob_match(incident.broker.name, self.broker)
            and glob_match(incident.name or incident.key, self.destination)
            and glob_match(incident.cause, self.cause)
        )


class Notification(models.Model):
    """One message about one incident for one channel: planned in the same transaction as
    the incident's change, then sent (and retried) by the workers."""

    FIRING, RESOLVED, REPEAT = "firing", "resolved", "repeat"
    EVENTS = [(FIRING, "firing"), (RESOLVED, "resolved"), (REPEAT, "repeat")]
    # PENDING and RETRY wait for due_at; SENDING is claimed by a worker until lease_until.
    PENDING, SENDING, RETRY = "pending", "sending", "retry"
    # Final: sent; failed after the last attempt; held back by a silence; or not sent
    # because it no longer applies (its firing message never went out, the incident
    # was acknowledged, the channel was turned off).
    SENT, FAILED, SILENCED, SKIPPED = "sent", "failed", "silenced", "skipped"
    STATES = [(s, s) for s in (PENDING, SENDING, RETRY, SENT, FAILED, SILENCED, SKIPPED)]
    WAITING = (PENDING, RETRY, SENDING)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    incident = models.ForeignKey(
        "dashboard.Incident", on_delete=models.CASCADE, related_name="notifications"
    )
    channel = models.ForeignKey(
        AlertChannel, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=16, choices=EVENTS)
    seq = models.PositiveIntegerField(default=0)  # 1, 2... for repeats; 0 otherwise
    state = models.CharField(max_length=16, choices=STATES, default=PENDING)
    severity = models.CharField(max_length=16, choices=SEVERITIES)
    summary = models.TextField()  # the incident's cause in words, when planned
    evidence = models.JSONField(default=dict)
    since = models.DateTimeField()  # when the incident started
    at = models.DateTimeField()  # when it opened, resolved or was still open (a repeat)
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    claim = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # However often planning runs (a retried transaction, two workers), one message
            # per event: receivers see each firing and resolved once.
            models.UniqueConstraint(
                fields=["incident", "channel", "event", "seq"], name="notification_once"
            )
        ]
        indexes = [models.Index(fields=["state", "due_at"])]

    def __str__(self) -> str:
        return f"{self.event} of incident {self.incident_id} to {self.channel.name} ({self.state})"


class DeliveryAttempt(models.Model):
    """One try at sending a notification, and how it went."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField(default=False)
    status = models.PositiveIntegerField(null=True, blank=True)  # the HTTP status, if any
    error = models.TextField(blank=True)  # what went wrong: network, HTTP or SMTP error
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'failed'} at {self.at:%Y-%m-%d %H:%M:%S}"
