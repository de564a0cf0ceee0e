"""Which messages an evaluation's incidents call for, written down as pending Notifications.

`plan` runs inside the transaction that opens and resolves the incidents: either both
the incident's change and the intent to tell of it are stored, or neither is. A unique
constraint (incident, channel, event, seq) makes planning the same thing twice harmless.

- An incident that opened: a firing message to every enabled channel that takes its
  severity; held back (state "silenced") when a silence matches it.
- An incident that resolved: a resolved message to each channel that was told of it
  (its firing or a repeat was sent, or is still on its way). A silence does not hold
  it back: it ends an alarm the receiver already has.
- An incident still open, neither acknowledged nor snoozed: a repeat to each channel
  with a repeat interval, once that long has passed since it was last told.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from dashboard.models import AlertChannel, Incident, Notification, Silence


def plan(
    opened: Sequence[Incident],
    resolved: Sequence[Incident],
    open_incidents: Sequence[Incident],
    at: datetime,
) -> int:
    """Store the notifications these incidents call for; returns how many are to be sent."""
    if not (opened or resolved or open_incidents):
        return 0
    channels = list(AlertChannel.objects.filter(enabled=True))
    if not channels:
        return 0
    silences = list(Silence.objects.filter(starts_at__lte=at, ends_at__gt=at))
    new: list[Notification] = []
    for incident in opened:
        held = _silenced(incident, silences, at)
        for channel in channels:
            if channel.accepts(incident.severity):
                new.append(_note(incident, channel, Notification.FIRING, 0, at, held))
    new += _resolutions(resolved, channels, at)
    new += _repeats(open_incidents, channels, silences, at)
    Notification.objects.bulk_create(new, ignore_conflicts=True)
    return sum(1 for n in new if n.state == Notification.PENDING)


def _resolutions(
    resolved: Sequence[Incident], channels: list[AlertChannel], at: datetime
) -> list[Notification]:
    if not resolved:
        return []
    told = set(
        Notification.objects.filter(
            incident__in=resolved,
            channel__in=channels,
            event__in=(Notification.FIRING, Notification.REPEAT),
        )
        .filter(state__in=(*Notification.WAITING, Notification.SENT))
        .values_list("incident_id", "channel_id")
    )
    return [
        _note(incident, channel, Notification.RESOLVED, 0, at)
        for incident in resolved
        for channel in channels
        if (incident.pk, channel.pk) in told
    ]


def _repeats(
    open_incidents: Sequence[Incident],
    channels: list[AlertChannel],
    silences: list[Silence],
    at: datetime,
) -> list[Notification]:
    repeating = [c for c in channels if c.repeat_seconds > 0]
    due = [i for i in open_incidents if i.state == Incident.OPEN and not _quiet(i, at)]
    if not repeating or not due:
        return []
    last: dict[tuple[int, int], dict] = {}
    rows = Notification.objects.filter(
        incident__in=due,
        channel__in=repeating,
        event__in=(Notification.FIRING, Notification.REPEAT),
    ).values("incident_id", "channel_id", "seq", "state", "sent_at", "at")
    for row in rows:
        place = (row["incident_id"], row["channel_id"])
        if place not in last or row["seq"] > last[place]["seq"]:
            last[place] = row
    new = []
    for incident in due:
        held = _silenced(incident, silences, at)
        for channel in repeating:
            row = last.get((incident.pk, channel.pk))
            # Never told (it opened before the channel existed, or below its severity),
            # or the last message is still on its way: nothing to repeat yet.
            if row is None or row["state"] in Notification.WAITING:
                continue
            since = row["sent_at"] or row["at"]
            if at - since < timedelta(seconds=channel.repeat_seconds):
                continue
            if channel.accepts(incident.severity):
                seq = row["seq"] + 1
                new.append(_note(incident, channel, Notification.REPEAT, seq, at, held))
    return new


def _quiet(incident: Incident, at: datetime) -> bool:
    """Acknowledged or snoozed: someone knows, so no reminders."""
    snoozed = incident.snoozed_until is not None and incident.snoozed_until > at
    return incident.acknowledged_at is not None or snoozed


def _silenced(incident: Incident, silences: list[Silence], at: datetime) -> Silence | None:
    return next((s for s in silences if s.matches(incident, at)), None)


def _note(
    incident: Incident,
    channel: AlertChannel,
    event: str,
    seq: int,
    at: datetime,
    silence: Silence | None = None,
) -> Notification:
    return Notification(
        incident=incident,
        channel=channel,
        event=event,
        seq=seq,
        state=Notification.SILENCED if silence else Notification.PENDING,
        last_error=f"silenced: {silence}" if silence else "",
        severity=incident.severity,
        summary=incident.summary,
        evidence=incident.evidence,
        since=incident.started_at,
        at=at,
        created_at=at,
        due_at=at,
    )
