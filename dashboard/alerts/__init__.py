"""Alerts: telling people of incidents, through webhooks, Slack and email.

- `planning`: `plan()` turns the incidents that opened, resolved or stay open into
  Notification rows, in the transaction that changed the incidents, so a worker that
  dies right after never loses what it meant to send;
- `channels`: a message's form and its sending, per channel type (a signed JSON
  webhook, a Slack incoming webhook, email through Django's mail backend);
- `deliver`: sends the notifications that are due, each claimed by one worker at a
  time, retried with growing waits when a channel fails, every attempt recorded.

It runs in the Celery workers after each collection, never on the request path.
Triage calls it; it knows nothing of triage, the pages or the tasks.
"""

from dashboard.alerts.planning import plan

__all__ = ["plan"]
