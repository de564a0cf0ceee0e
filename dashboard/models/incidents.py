"""Incidents: what a detector found wrong with a broker or a destination, from start to end.

A detector's finding opens an incident (after `confirm` collections for
signals that one collection cannot settle); the incident stays open while the
finding holds, with its evidence refreshed, and is resolved when it clears.
Resolved incidents are kept: they are the history behind "since 02:41" and
"happened 3 times tonight", true after a restart.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITIES = [(CRITICAL, "critical"), (WARNING, "warning"), (INFO, "info")]
SEVERITY_RANK = {CRITICAL: 3, WARNING: 2, INFO: 1}


class Incident(models.Model):
    # PENDING: found, not yet confirmed for long enough to show or alert.
    PENDING, OPEN, RESOLVED = "pending", "open", "resolved"
    LIVE = (PENDING, OPEN)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    broker = models.ForeignKey(
        "dashboard.Broker", on_delete=models.CASCADE, related_name="incidents"
    )
    destination = models.ForeignKey(
        "dashboard.Destination",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="incidents",
    )
    key = models.CharField(max_length=1024, blank=True)  # the destination's key; "" for the broker
    name = models.CharField(max_length=1024, blank=True)  # the destination's name as shown
    cause = models.CharField(max_length=64)  # a detector's name, e.g. "consumers_lost"
    severity = models.CharField(max_length=16, choices=SEVERITIES)
    state = models.CharField(max_length=16, default=PENDING)
    summary = models.TextField()  # the cause in words, with its numbers
    rule = models.TextField()  # the detector's rule, in one sentence
    evidence = models.JSONField(default=dict)  # the numbers it was judged on
    actions = models.JSONField(default=list)  # the actions that fit, by name
    # Seconds until the harm is done (queue full, records lost); None: no such limit.
    impact_seconds = models.FloatField(null=True, blank=True)
    urgency = models.IntegerField(default=0)  # the On fire ranking, stored so SQL can order by it
    worsening = models.BooleanField(default=False)
    started_at = models.DateTimeField(default=timezone.now)
    # The last collection that found it, to within a minute: an open incident that nothing
    # shown changed is written once a minute (triage.evaluate.HEARTBEAT_SECONDS).
    seen_at = models.DateTimeField(default=timezone.now)
    # Collections that found it in a row: what confirms a pending one (counted while written).
    seen = models.PositiveIntegerField(default=1)
    opened_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    snoozed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-urgency", "-started_at"]
        constraints = [
            # One live incident per cause and place: a finding updates it, never duplicates it.
            models.UniqueConstraint(
                fields=["broker", "cause", "key"],
                condition=Q(state__in=("pending", "open")),
                name="incident_live_once",
            )
        ]
        indexes = [
            models.Index(fields=["state", "urgency"]),
            models.Index(fields=["broker", "cause", "key", "started_at"]),
        ]

    def __str__(self) -> str:
        where = f"{self.broker.name}:{self.key}" if self.key else self.broker.name
        return f"{self.cause} on {where} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state == self.OPEN

    @property
    def snoozed(self) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > timezone.now()

    @property
    def quiet(self) -> bool:
        """Acknowledged or snoozed: known to someone, so it leaves the On fire list."""
        return self.acknowledged_at is not None or self.snoozed

    @property
    def duration(self) -> timedelta:
        return (self.resolved_at or timezone.now()) - self.started_at

    def recurrences(self, hours: int = 12) -> int:
        """How many times this cause started at this place in the last `hours`, this one too."""
        since = timezone.now() - timedelta(hours=hours)
        return Incident.objects.filter(
            broker_id=self.broker_id,
            cause=self.cause,
            key=self.key,
            started_at__gte=since,
            state__in=(self.OPEN, self.RESOLVED),
        ).count()
