"""What Sluice stores: brokers, their latest state, sample history, tokens, audit.

Incidents and alerts (rules, channels, silences, notifications) live in their own
modules here; this package exports them.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from brokers.base import OPTIONS
from brokers.redact import redact_options
from dashboard.kinds import KINDS as REGISTERED
from dashboard.kinds import status_labels
from dashboard.models.alerts import (
    AlertChannel,
    AlertRule,
    DeliveryAttempt,
    Notification,
    Silence,
)
from dashboard.models.incidents import Incident
from dashboard.models.schemas import Schema

__all__ = [
    "AlertChannel",
    "AlertRule",
    "ApiToken",
    "AuditEntry",
    "Broker",
    "Collection",
    "DeadLetterScan",
    "DeliveryAttempt",
    "Destination",
    "Gap",
    "ImportLines",
    "Incident",
    "Job",
    "JobChunk",
    "Notification",
    "OffsetReset",
    "Rollup",
    "Sample",
    "Schema",
    "Search",
    "Silence",
]


class Broker(models.Model):
    KINDS = [(name, label) for name, (label, _) in REGISTERED.items()]
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
        shown = self.public_options()
        for key in ("management_url", "bootstrap_servers", "monitoring_url", "url"):
            if shown.get(key):
                return str(shown[key])
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
    # Messages taken off for good, a counter (brokers.base.Destination.removed_total).
    removed_total = models.BigIntegerField(null=True)
    # 2: backlog growing, 1: backlog and no consumers, 0: neither (3: a Kafka
    # group in ERROR). Stored so that the database ranks thousands of rows
    # without loading them.
    trouble = models.SmallIntegerField(default=0)
    details = models.JSONField(default=dict)
    # A hash of what the collector stores in the row but `recent` and `updated_at`:
    # it rewrites the row only when this changes (dashboard/collection/collector.py).
    digest = models.CharField(max_length=32, blank=True, default="", editable=False)
    # [[ts, backlog, in_flight, consumers, in_rate, out_rate, lag], ...] oldest first, at
    # each collection whose figures changed, from the last change before the window on:
    # the window triage judges, read with the row and expanded onto the broker's
    # collections (dashboard/collection/statuswindow.py expand).
    recent = models.JSONField(default=list, blank=True)
    # When the row was last written: rows are written only when what they hold changes,
    # so a listed row's figures hold as of its broker's last_ok (`as_of`).
    updated_at = models.DateTimeField(default=timezone.now)
    # Set when the broker stopped listing it; kept for its history.
    gone_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["broker", "key"], name="destination_key")]
        indexes = [models.Index(fields=["trouble", "backlog"])]

    def __str__(self) -> str:
        return f"{self.broker.name}:{self.key}"

    @property
    def as_of(self) -> Any:
        """When the figures shown were last read from the broker."""
        last_ok = self.broker.last_ok
        if self.gone_since is not None or last_ok is None or last_ok < self.updated_at:
            return self.updated_at
        return last_ok

    # 3: a Kafka group in ERROR (dashboard/kinds/kafka/status.py); RabbitMQ never gets it.
    TROUBLE_LABELS = {3: "error", 2: "growing", 1: "no consumers", 0: ""}

    @property
    def trouble_label(self) -> str:
        # A status from the kind's rules (a Kafka group's, a NATS consumer's) names
        # its trouble better than the generic label.
        status = (self.details or {}).get("status") or {}
        labels = status_labels()
        if self.trouble and status.get("status") in labels:
            return labels[status["status"]]
        return self.TROUBLE_LABELS.get(self.trouble, "")


class Collection(models.Model):
    """One collection of a broker that answered: the points its destinations' history has.

    A destination's Sample is written only when its figures change; at every other
    collection of its broker it holds the figures of its last Sample (unless a Gap
    came in between). Kept as long as Samples.
    """

    broker = models.ForeignKey(Broker, on_delete=models.CASCADE, db_index=False)
    ts = models.IntegerField()  # Unix seconds, as Sample.ts

    class Meta:
        # (ts): pruning by age, across brokers.
        indexes = [models.Index(fields=["broker", "ts"]), models.Index(fields=["ts"])]

    def __str__(self) -> str:
        return f"{self.broker_id}@{self.ts}"


class Gap(models.Model):
    """A destination's broker stopped listing it at `ts`: no figures until its next Sample."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, db_index=False)
    ts = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["destination", "ts"])]

    def __str__(self) -> str:
        return f"{self.destination_id}@{self.ts}"


class Sample(models.Model):
    """One destination's figures from a collection on, until the next Sample or Gap.

    Written when the figures change (dashboard/collection/collector.py), so one row
    stands for every collection (Collection) of its broker until then.
    """

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, db_index=False)
    ts = models.IntegerField()  # Unix seconds: compact, and cheap to bucket in SQL
    backlog = models.BigIntegerField()
    in_flight = models.BigIntegerField()
    consumers = models.IntegerField()
    in_rate = models.FloatField(null=True)
    out_rate = models.FloatField(null=True)
    lag = models.BigIntegerField(null=True)

    class Meta:
        # (ts): rolling up and pruning by age, across destinations.
        indexes = [models.Index(fields=["destination", "ts"]), models.Index(fields=["ts"])]

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
        # (ts): the latest rollup, and pruning by age.
        indexes = [models.Index(fields=["ts"])]

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


class Job(models.Model):
    """A replay, move or discard of messages, run in the background, resumable.

    Progress lives here so that a restarted worker can resume and the page can
    show it. Per-message outcomes are kept in JobChunk rows, one per batch.
    """

    QUEUED, PREVIEW, RUNNING, CANCELLING = "queued", "preview", "running", "cancelling"
    CANCELLED, DONE, FAILED = "cancelled", "done", "failed"
    ACTIONS = [("replay", "replay"), ("move", "move"), ("discard", "discard"), ("import", "import")]
    FINISHED = (CANCELLED, DONE, FAILED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    broker = models.ForeignKey(Broker, on_delete=models.PROTECT, related_name="jobs")
    action = models.CharField(max_length=16, choices=ACTIONS)
    source = models.CharField(max_length=1024)  # the destination key of the queue read from
    # {"all": true} | {"ids": [...]} | {"filter": {...}}
    selection = models.JSONField(default=dict)
    # move: {"exchange": ..., "routing_key": ...}; replay: {"mode": "auto"|"exchange"|"queue"}
    target = models.JSONField(default=dict, blank=True)
    # One message edited before replay: {"id": ..., "body_base64": ..., "headers": {...}}
    edit = models.JSONField(default=dict, blank=True)
    rate = models.FloatField(
        null=True, blank=True
    )  # messages per second; None: as fast as confirmed
    batch_size = models.PositiveIntegerField(default=500)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, default=QUEUED)
    error = models.TextField(blank=True)
    preview = models.JSONField(default=dict, blank=True)
    # How many messages the pass may take: the source's length when it began.
    total = models.BigIntegerField(default=0)
    done = models.BigIntegerField(default=0)  # taken from the source and dealt with
    replayed = models.BigIntegerField(default=0)  # sent, confirmed and routed (replay or move)
    discarded = models.BigIntegerField(default=0)
    kept = models.BigIntegerField(
        default=0
    )  # left in the source: unroutable, unselected or unknown origin
    # Of those kept: read on the way and not selected, left as they were.
    passed_over = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)  # left in the source after the broker refused it
    duplicates = models.BigIntegerField(default=0)  # sent again after an interruption
    # Ids of the batch being sent, so an interruption can tell what may be duplicated.
    in_flight = models.JSONField(default=list, blank=True)
    # Which run owns the job; a resumed run takes over and the old one stops.
    run_token = models.CharField(max_length=32, blank=True)
    # Where a job reading a log (Kafka topic) stands: {"partitions": {p: [start, end]},
    # "next": {p: offset}}. It advances only after the copies are confirmed.
    cursor = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.source} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in self.FINISHED

    @property
    def stalled(self) -> bool:
        """Running, but no sign of life for a while: its worker died."""
        if self.state not in (self.RUNNING, self.CANCELLING) or self.heartbeat is None:
            return False
        return (timezone.now() - self.heartbeat).total_seconds() > settings.SLUICE_JOB_STALL_SECONDS

    @property
    def progress(self) -> float:
        return min(1.0, self.done / self.total) if self.total else (1.0 if self.finished else 0.0)

    @property
    def elapsed(self) -> float:
        if not self.started_at:
            return 0.0
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def speed(self) -> float | None:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 and self.done else None

    @property
    def eta(self) -> float | None:
        speed = self.speed
        if speed is None or self.finished:
            return None
        return max(0.0, (self.total - self.done) / speed)


class JobChunk(models.Model):
    """The outcome of every message of one batch: [[message id, outcome, where, note], ...]."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    n = models.PositiveIntegerField()
    items = models.JSONField(default=list)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "n"], name="job_chunk")]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.n}"


class ImportLines(models.Model):
    """Lines of an NDJSON file an import job publishes, checked, in blocks of up to 1,000.

    `first` is the 0-based number of the block's first line; `lines` the block's lines,
    each ending in a newline. They go with their job.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="import_lines")
    first = models.PositiveIntegerField()
    lines = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "first"], name="import_block")]

    def __str__(self) -> str:
        return f"{self.job_id}@{self.first}"


class DeadLetterScan(models.Model):
    """What a look at one dead-letter queue found: a summary of its head messages."""

    broker = models.ForeignKey(Broker, on_delete=models.CASCADE, related_name="dlq_scans")
    queue = models.CharField(max_length=1024)  # the destination key
    at = models.DateTimeField(default=timezone.now)
    by = models.CharField(max_length=150)
    length = models.BigIntegerField(default=0)  # the queue's length at the time
    # [{id, reason, queue, exchange, routing_key, time, size, headers, preview}, ...]
    messages = models.JSONField(default=list)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.broker.name}:{self.queue} @ {self.at:%H:%M:%S}"


class Search(models.Model):
    """A scan of a whole Kafka topic for messages matching filters, run in the background.

    The results stay with the search, so its page can be shared.
    """

    QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
    CANCELLED, DONE, FAILED = "cancelled", "done", "failed"
    FINISHED = (CANCELLED, DONE, FAILED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    broker = models.ForeignKey(Broker, on_delete=models.CASCADE, related_name="searches")
    topic = models.CharField(max_length=255)
    # {"key": ..., "header": ..., "body": ..., "mode": "substring"|"regex"|"json", ...}
    filters = models.JSONField(default=dict, blank=True)
    # {p: [start, end]}: the offsets to scan, fixed when the search starts.
    partitions = models.JSONField(default=dict, blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, default=QUEUED)
    error = models.TextField(blank=True)
    total = models.BigIntegerField(default=0)  # messages to scan
    scanned = models.BigIntegerField(default=0)
    matched = models.BigIntegerField(default=0)
    # The first matches, as shown: [{partition, offset, timestamp, key, headers, preview, size}]
    results = models.JSONField(default=list, blank=True)
    run_token = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"search {self.topic} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in self.FINISHED

    @property
    def progress(self) -> float:
        return (
            min(1.0, self.scanned / self.total) if self.total else (1.0 if self.finished else 0.0)
        )


class OffsetReset(models.Model):
    """A change of a consumer group's committed offsets, kept so it can be undone."""

    PREVIEW, APPLIED, UNDONE, REFUSED = "preview", "applied", "undone", "refused"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    broker = models.ForeignKey(Broker, on_delete=models.CASCADE, related_name="offset_resets")
    group = models.CharField(max_length=1024)
    # {"to": "earliest"|"latest"|"timestamp"|"offset"|"shift", "value": ..., "topic": ...,
    #  "partitions": [...]}
    spec = models.JSONField(default=dict)
    # [{"topic", "partition", "before", "after", "end", "lag_before", "lag_after"}, ...]
    changes = models.JSONField(default=list)
    state = models.CharField(max_length=16, default=PREVIEW)
    error = models.TextField(blank=True)
    # The reset this one undoes, if it is an undo.
    undoes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="undone_by"
    )
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reset {self.group} ({self.state})"
