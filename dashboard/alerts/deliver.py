"""Send the notifications that are due, each by one worker, retried while a channel fails.

A worker claims a notification with one conditional UPDATE (waiting and due, or
sending with an expired lease, becomes "sending" under its own claim token), so
two workers never send the same one at once. It then sends, records the attempt
and settles the notification, again only while its claim holds.

If the worker dies mid-send, the lease runs out and another worker sends it again,
recording the lost attempt: the receiver may then get it twice, with the same
X-Sluice-Delivery to tell. A failed send is retried after 10 s, 30 s, 90 s...
(at most an hour apart); after MAX_ATTEMPTS it is marked failed.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from dashboard.alerts import channels
from dashboard.models import DeliveryAttempt, Incident, Notification, Silence

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
FIRST_WAIT, GROWTH, LONGEST_WAIT = 10.0, 3.0, 3600.0
# Longer than a send can take (channels.TIMEOUT, or the mail server's EMAIL_TIMEOUT).
LEASE = timedelta(seconds=120)
# How long a resolved message waits for its firing one, still on its way, to go first.
FIRING_FIRST = timedelta(seconds=5)


def backoff(attempts: int) -> float:
    """Seconds to wait after `attempts` failed sends: 10, 30, 90... at most LONGEST_WAIT."""
    return min(LONGEST_WAIT, FIRST_WAIT * GROWTH ** max(0, attempts - 1))


def incident_link(incident: Incident) -> str:
    return f"{settings.SLUICE_PUBLIC_URL}/incidents/{incident.public_id}/"


def message_for(n: Notification) -> channels.Message:
    incident = n.incident
    return channels.Message(
        delivery=str(n.public_id),
        event=n.event,
        seq=n.seq,
        severity=n.severity,
        broker=incident.broker.name,
        destination=incident.name,
        key=incident.key,
        cause=incident.cause,
        summary=n.summary,
        evidence=n.evidence,
        since=n.since,
        at=n.at,
        incident=str(incident.public_id),
        link=incident_link(incident),
    )


def deliver_due(now: datetime | None = None, limit: int = 200) -> int:
    """Send up to `limit` notifications that are due at `now`; returns how many were sent."""
    now = timezone.now() if now is None else now
    due = (
        Notification.objects.filter(_due(now))
        .order_by("id")  # a firing message before the resolved one that follows it
        .values_list("id", "state")[:limit]
    )
    silences = list(Silence.objects.filter(starts_at__lte=now, ends_at__gt=now))
    sent = 0
    for pk, state in list(due):
        token = claim(pk, state, now)
        if token is not None and _deliver(pk, token, now, silences):
            sent += 1
    return sent


def _due(now: datetime) -> Q:
    waiting = Q(state__in=(Notification.PENDING, Notification.RETRY), due_at__lte=now)
    abandoned = Q(state=Notification.SENDING, lease_until__lte=now)
    return waiting | abandoned


def claim(pk: int, state: str, now: datetime) -> str | None:
    """Take notification `pk` for this worker; its claim token, or None if another has it."""
    token = uuid.uuid4().hex
    abandoned = state == Notification.SENDING
    if abandoned:
        still = Q(state=Notification.SENDING, lease_until__lte=now)
    else:
        still = Q(state__in=(Notification.PENDING, Notification.RETRY), due_at__lte=now)
    with transaction.atomic():
        taken = Notification.objects.filter(still, pk=pk).update(
            state=Notification.SENDING, claim=token, lease_until=now + LEASE
        )
        if taken and abandoned:
            # The worker that had it stopped without a word: whether it reached the
            # receiver is unknown, so it counts as a failed attempt and goes again.
            DeliveryAttempt.objects.create(
                notification_id=pk,
                at=now,
                ok=False,
                error="interrupted: the worker sending it stopped before it finished",
            )
            Notification.objects.filter(pk=pk).update(attempts=F("attempts") + 1)
    return token if taken else None


def _deliver(pk: int, token: str, now: datetime, silences: list[Silence]) -> bool:
    n = Notification.objects.select_related("incident__broker", "channel").filter(pk=pk).first()
    if n is None:  # its incident or channel was deleted meanwhile
        return False
    held = _held(n, now, silences)
    if held is not None:
        state, why = held
        if state == Notification.PENDING:  # not yet: its firing message is still on its way
            _settle(n, token, state=state, due_at=now + FIRING_FIRST)
        else:
            _settle(n, token, state=state, last_error=why)
        return False
    if n.attempts >= MAX_ATTEMPTS:  # the last one was lost with its worker
        _settle(n, token, state=Notification.FAILED)
        return False
    result = channels.send(n.channel, message_for(n))
    attempts = n.attempts + 1
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=n,
            at=now,
            ok=result.ok,
            status=result.status,
            error=result.error,
            duration_ms=result.duration_ms,
        )
        if result.ok:
            _settle(n, token, state=Notification.SENT, sent_at=now, attempts=attempts)
        elif attempts >= MAX_ATTEMPTS:
            _settle(n, token, state=Notification.FAILED, attempts=attempts, last_error=result.error)
        else:
            wait = timedelta(seconds=backoff(attempts))
            _settle(
                n,
                token,
                state=Notification.RETRY,
                attempts=attempts,
                due_at=now + wait,
                last_error=result.error,
            )
    if not result.ok:
        log.warning(
            "alert %s of incident %s to channel %s failed (attempt %d of %d): %s",
            n.event,
            n.incident.public_id,
            n.channel.name,
            attempts,
            MAX_ATTEMPTS,
            result.error,
        )
    return result.ok


def _held(n: Notification, now: datetime, silences: list[Silence]) -> tuple[str, str] | None:
    """Why `n` is not to be sent now, as (state, reason): a final state, or pending to wait."""
    incident = n.incident
    if not n.channel.enabled:
        return Notification.SKIPPED, "the channel is turned off"
    if n.event == Notification.RESOLVED:
        told = set(
            Notification.objects.filter(
                incident_id=n.incident_id,
                channel_id=n.channel_id,
                event__in=(Notification.FIRING, Notification.REPEAT),
            ).values_list("state", flat=True)
        )
        if Notification.SENT in told:
            return None
        if told & set(Notification.WAITING):
            return Notification.PENDING, "waits for its firing message"
        return Notification.SKIPPED, "no firing message reached this channel"
    silence = next((s for s in silences if s.matches(incident, now)), None)
    if silence is not None:
        return Notification.SILENCED, f"silenced: {silence}"
    if n.event == Notification.REPEAT:
        if incident.state != Incident.OPEN:
            return Notification.SKIPPED, "the incident is no longer open"
        if incident.acknowledged_at is not None:
            return Notification.SKIPPED, f"acknowledged by {incident.acknowledged_by}"
        if incident.snoozed_until is not None and incident.snoozed_until > now:
            return Notification.SKIPPED, f"snoozed by {incident.snoozed_by}"
    return None


def _settle(n: Notification, token: str, **fields: object) -> bool:
    """Write the outcome, only while this worker's claim holds; False if another took it."""
    fields.setdefault("claim", "")
    fields.setdefault("lease_until", None)
    done = Notification.objects.filter(pk=n.pk, claim=token).update(**fields)
    return bool(done)
