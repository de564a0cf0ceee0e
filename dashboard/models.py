"""What Sluice stores: brokers, their latest state, sample history, tokens, audit."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from brokers.base import OPTIONS, redact_options


class Broker(models.Model):
    KINDS = [("rabbitmq", "RabbitMQ"), ("kafka", "Kafka"), ("nats", "NATS")]
    STATUS_UNKNOWN, STATUS_UP, STATUS_DOWN = "unknown", "up", "down"

    name = models.SlugField(max_length=64, unique=True, help_text="Letters, digits, - and _.")
    kind = models.CharField(max_length=16, choices=KINDS)
    # Connection options as written (URLs, user names); `${VAR}` is expanded
    # only when connecting, so the environment's secrets never reach the DB.
    options = models.JSONField(default=dict, blank=True)
    interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds; default from SLUICE_INTERVAL."
    )
    enabled = models.BooleanField(default=True)
    # "file" entries are kept in step with SLUICE_CONFIG; "admin" ones are not.
    source = models.CharField(max_length=8, default="admin", editable=False)

    status = models.CharField(max_length=8, default=STATUS_UNKNOWN, editable=False)
    error = models.TextField(blank=True, editable=False)
    down_since = models.DateTimeField(null=True, blank=True, editable=False)
    last_collected = models.DateTimeField(null=True, blank=True, editable=False)
    last_ok = models.DateTimeField(null=True, blank=True, editable=False)
    collect_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    health = models.JSONField(default=dict, blank=True, editable=False)
    topology = models.JSONField(default=dict, blank=True, editable=False)
    topology_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_interval(self) -> int:
        return max(1, self.interval or settings.SLUICE_INTERVAL)

    def public_options(self) -> dict[str, Any]:
        """Options fit to show: passwords masked, URLs redacted."""
        return redact_options(self.options)

    @property
    def endpoint(self) -> str:
        """The address an operator recognises the broker by."""
        for key in ("management_url", "bootstrap_servers", "monitoring_url", "url"):
            if self.options.get(key):
                return self.public_options()[key]
        return ""

    def required_options(self) -> list[str]:
        return [name for name, needed in OPTIONS.get(self.kind, {}).items() if needed]


class Destination(models.Model):
    """The latest state of one queue, stream, topic or consumer group."""

    broker = models.ForeignKey(Broker, on_delete=models.CASCADE, related_name="destinations")
    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=1024)
    name = models.CharField(max_length=1024)
    vhost = models.CharField(max_length=255, blank=True)
    type = models.CharField(max_length=32, blank=True)
    state = models.CharField(max_length=32, blank=True)
    backlog = models.BigIntegerField(default=0)
    in_flight = models.BigIntegerField(default=0)
    consumers = models.IntegerField(default=0)
    in_rate = models.FloatField(null=True)
    out_rate = models.FloatField(null=True)
    lag = models.BigIntegerField(null=True)
    consumer_capacity = models.FloatField(null=True)
    # Counters the rates are derived from when the broker gives no rate.
    in_total = models.BigIntegerField(null=True)
    out_total = models.BigIntegerField(null=True)
    # 2: backlog growing, 1: backlog and no consumers, 0: neither. Stored so
    # that the database ranks thousands of rows without loading them.
    trouble = models.SmallIntegerField(default=0)
    details = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)
    # Set when the broker stopped listing it; kept for its history.
    gone_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["broker", "key"], name="destination_key")]
        indexes = [models.Index(fields=["trouble", "backlog"])]

    def __str__(self) -> str:
        return f"{self.broker.name}:{self.key}"

    TROUBLE_LABELS = {2: "growing", 1: "no consumers", 0: ""}

    @property
    def trouble_label(self) -> str:
        return self.TROUBLE_LABELS.get(self.trouble, "")


class Sample(models.Model):
    """One destination's figures at one collection, kept at full resolution."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, db_index=False)
    ts = models.IntegerField()  # Unix seconds: compact, and cheap to bucket in SQL
    backlog = models.BigIntegerField()
    in_flight = models.BigIntegerField()
    consumers = models.IntegerField()
    in_rate = models.FloatField(null=True)
    out_rate = models.FloatField(null=True)
    lag = models.BigIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["destination", "ts"])]

    def __str__(self) -> str:
        return f"{self.destination_id}@{self.ts}"


class Rollup(models.Model):
    """Samples averaged over SLUICE_ROLLUP_SECONDS, kept for SLUICE_HISTORY_DAYS."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, db_index=False)
    ts = models.IntegerField()  # start of the bucket
    backlog = models.BigIntegerField()  # the largest in the bucket
    in_flight = models.BigIntegerField()
    consumers = models.IntegerField()
    in_rate = models.FloatField(null=True)  # the mean in the bucket
    out_rate = models.FloatField(null=True)
    lag = models.BigIntegerField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["destination", "ts"], name="rollup_bucket")]

    def __str__(self) -> str:
        return f"{self.destination_id}@{self.ts}"


class ApiToken(models.Model):
    """A bearer token; only its hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)  # to tell tokens apart in lists
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    PREFIX = "slc_"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: Any) -> tuple[ApiToken, str]:
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, digest=cls.hash(raw), prefix=raw[:10])
        return token, raw

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()


class AuditEntry(models.Model):
    """A change someone made: who, when, what, where, how many, and the outcome."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.CharField(max_length=150)  # kept as text: the record outlives the user
    action = models.CharField(max_length=64)
    broker = models.CharField(max_length=64, blank=True)
    destination = models.CharField(max_length=1024, blank=True)
    count = models.BigIntegerField(null=True, blank=True)
    result = models.CharField(max_length=16, default="ok")  # ok, failed, denied, partial
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.user} {self.action} {self.result}"
