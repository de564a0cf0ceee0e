"""Run every detector for one broker after a collection, and keep its incidents in step.

A finding opens an incident (or refreshes the open one: one live incident per
cause and place); an incident whose finding is gone is resolved. When the
broker is down, its destinations' incidents are left as they are: their
condition is unknown, not cleared. When a detector fails, nothing is resolved
in that round, so a bug cannot pass for recovery.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from dashboard import alerts
from dashboard.collection import series
from dashboard.collection.bulk import update_many
from dashboard.collection.statuswindow import WINDOW_COLLECTIONS, window_since
from dashboard.kinds import kind_of
from dashboard.models import AlertRule, Broker, Destination, Incident
from dashboard.triage import detectors
from dashboard.triage.detectors import Context, Detector
from dashboard.triage.findings import Finding
from dashboard.triage.ranking import urgency

log = logging.getLogger(__name__)

_FIELDS = (
    "id", "key", "name", "kind", "type", "state", "vhost", "backlog", "in_flight",
    "consumers", "in_rate", "out_rate", "lag", "details", "recent", "broker_id", "gone_since",
)  # fmt: skip
_ATTRS = (
    "severity", "state", "summary", "rule", "evidence", "actions", "impact_seconds", "urgency",
    "worsening", "seen_at", "seen", "opened_at", "name", "destination_id",
)  # fmt: skip
_COLUMNS = [Incident._meta.get_field(a.removesuffix("_id")).column for a in _ATTRS]
# What a person sees of an open incident. When none of it changed, the row is written only
# once a minute (seen_at), so a thousand standing incidents cost no writes most rounds.
_SHOWN = tuple(a for a in _ATTRS if a not in ("seen_at", "seen"))
HEARTBEAT_SECONDS = 60


@dataclass
class Outcome:
    opened: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    open: list[Incident] = field(default_factory=list)  # every open incident, after this round
    notifications: int = 0  # alert messages planned this round, to be sent


def memo_key(broker: Broker) -> str:
    return f"sluice:triage-memo:{settings.SLUICE_FRAGMENT_SCOPE}:{broker.pk}"


def evaluate(
    broker: Broker, now: float | None = None, destinations: list[Destination] | None = None
) -> Outcome:
    """Run every detector for `broker` and keep its incidents in step.

    `destinations`: its current rows as the collection just stored them
    (collector.collect's `stored`); read from the database when not given.
    """
    now = time.time() if now is None else now
    kind = kind_of(broker)
    live = {
        (i.cause, i.key): i for i in Incident.objects.filter(broker=broker, state__in=Incident.LIVE)
    }
    ctx = Context(
        broker=broker,
        now=now,
        kind=kind,
        live=live,
        rules=list(AlertRule.objects.all()),
        memo=cache.get(memo_key(broker)) or {},
    )
    found, failed = _run(ctx, (*detectors.BROKER, *kind.broker_detectors))
    judged_destinations = broker.status == Broker.STATUS_UP
    if judged_destinations:
        # Rows the database gave no id to on insert cannot be told apart: read them back.
        given = destinations and all(d.pk is not None for d in destinations)
        if given and destinations:
            ctx.destinations = destinations
        else:
            ctx.destinations = list(
                Destination.objects.filter(broker=broker, gone_since__isnull=True).only(*_FIELDS)
            )
        ctx.since = window_since(now, broker.effective_interval)
        ctx.collections = series.recent_collections(broker.pk, WINDOW_COLLECTIONS)
        more, failed_too = _run(ctx, (*detectors.DESTINATION, *kind.destination_detectors))
        found += more
        failed = failed or failed_too
    kept, superseded = _subsumed(found)
    outcome = _reconcile(ctx, kept, superseded, judged_destinations, resolve=not failed)
    cache.set(memo_key(broker), ctx.memo, timeout=24 * 3600)
    return outcome


def _subsumed(found: list[Finding]) -> tuple[list[Finding], dict[tuple[str, str], str]]:
    """The findings that no other on the same destination explains, and for each of the
    others the cause that explains it (a backlog growing because its consumer stalled)."""
    causes = {(f.cause, f.key) for f in found}
    kept: list[Finding] = []
    superseded: dict[tuple[str, str], str] = {}
    for f in found:
        by = next((c for c in detectors.SUBSUMES.get(f.cause, ()) if (c, f.key) in causes), None)
        if by is None:
            kept.append(f)
        else:
            superseded[(f.cause, f.key)] = by
    return kept, superseded


def _run(ctx: Context, chain: tuple[Detector, ...]) -> tuple[list[Finding], bool]:
    found: list[Finding] = []
    failed = False
    for detect in chain:
        try:
            found.extend(detect(ctx))
        except Exception:  # a detector's bug must not stop the others
            log.exception("detector %s failed on %s", detect.__name__, ctx.broker.name)
            failed = True
    return found, failed


def _reconcile(
    ctx: Context,
    found: list[Finding],
    superseded: dict[tuple[str, str], str],
    judged_destinations: bool,
    resolve: bool,
) -> Outcome:
    at = datetime.fromtimestamp(ctx.now, UTC)
    outcome = Outcome()
    seen: set[tuple[str, str]] = set()
    created: list[Incident] = []
    updated: list[Incident] = []
    for f in found:
        place = (f.cause, f.key)
        if place in seen:
            continue
        seen.add(place)
        incident = ctx.live.get(place)
        if incident is None:
            incident = Incident(broker=ctx.broker, key=f.key, cause=f.cause, started_at=at, seen=0)
            created.append(incident)
        before = [getattr(incident, a) for a in _SHOWN]
        written = incident.seen_at
        _apply(incident, f, at, ctx.now)
        if incident.state == Incident.PENDING and incident.seen >= f.confirm:
            incident.state = Incident.OPEN
            incident.opened_at = at
            outcome.opened.append(incident)
        if incident.pk is not None and (
            incident.state == Incident.PENDING  # its count of findings in a row decides
            or [getattr(incident, a) for a in _SHOWN] != before
            or (at - written).total_seconds() >= HEARTBEAT_SECONDS
        ):
            updated.append(incident)
        if incident.state == Incident.OPEN:
            outcome.open.append(incident)
    gone: list[Incident] = []
    if resolve:
        for place, incident in ctx.live.items():
            if place in seen or (incident.key and not judged_destinations):
                continue
            gone.append(incident)
    with transaction.atomic():
        Incident.objects.bulk_create(created)
        update_many(
            Incident,
            _COLUMNS,
            [[getattr(i, f) for f in _ATTRS] + [i.pk] for i in updated],
        )
        for incident in gone:
            if incident.state == Incident.PENDING:
                incident.delete()  # never confirmed: it was never an incident
                continue
            incident.state = Incident.RESOLVED
            incident.resolved_at = at
            fields = ["state", "resolved_at"]
            by = superseded.get((incident.cause, incident.key))
            if by is not None:
                # Not over: explained by a graver incident at the same place. Its alert
                # closes saying so, and the other incident carries on from here.
                incident.evidence = {**incident.evidence, "superseded_by": by}
                fields.append("evidence")
            incident.save(update_fields=fields)
            outcome.resolved.append(incident)
        # In the same transaction: a worker killed after this never loses what to tell.
        outcome.notifications = alerts.plan(outcome.opened, outcome.resolved, outcome.open, at)
    for incident in outcome.opened:
        log.warning(
            "incident opened on %s: %s %s", ctx.broker.name, incident.cause, incident.summary
        )
    return outcome


def _apply(incident: Incident, f: Finding, at: datetime, now: float) -> None:
    incident.severity = f.severity
    incident.summary = f.summary[:2000]
    incident.rule = f.rule
    incident.evidence = f.evidence
    incident.actions = list(f.actions)
    incident.impact_seconds = f.impact_seconds
    incident.worsening = f.worsening
    incident.name = f.name or incident.name
    incident.destination_id = f.dest_id
    incident.seen_at = at
    incident.seen += 1
    incident.urgency = urgency(
        f.severity, f.impact_seconds, now - incident.started_at.timestamp(), f.worsening
    )
