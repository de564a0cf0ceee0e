"""Celery tasks: thin wrappers around plain functions that tests call directly."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.core.cache import cache

from dashboard import config
from dashboard.alerts import deliver as alerts
from dashboard.collection import collector, history
from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.live import fragments
from dashboard.live import push as live
from dashboard.models import Broker, Destination
from dashboard.triage import evaluate as triage

log = logging.getLogger(__name__)


def lock_key(broker_id: int) -> str:
    return f"collect-lock:{broker_id}"


def due_brokers(now: float) -> list[Broker]:
    due = []
    for broker in Broker.objects.filter(enabled=True):
        last = broker.last_collected.timestamp() if broker.last_collected else 0.0
        # Half a second of slack so that a 1 s tick does not skip every other turn.
        if now - last >= broker.effective_interval - 0.5:
            due.append(broker)
    return due


@shared_task(ignore_result=True)
def tick() -> None:
    """Start a collection for every broker whose interval has passed."""
    try:
        config.sync()
    except config.ConfigError as exc:
        # A file broken while Sluice runs: keep collecting what it said last.
        # (At start-up the same mistake stops the process instead.)
        log.error("%s; keeping the brokers from the last good version", exc)
    for broker in due_brokers(time.time()):
        # One collection per broker at a time: a slow broker is skipped, not piled up.
        if cache.add(lock_key(broker.pk), 1, timeout=max(30, broker.effective_interval * 3)):
            collect_broker.delay(broker.pk)


@shared_task(ignore_result=True)
def collect_broker(broker_id: int) -> None:
    broker = None
    planned = 0
    try:
        broker = Broker.objects.filter(pk=broker_id, enabled=True).first()
        if broker is not None:
            stored: list[Destination] = []
            # Its row saves do not move pages on: the push publishes the collection, rendered.
            with fragments.collecting():
                collector.collect(broker, stored=stored)
                # Triage judges what the collection stored, in this worker, never on a request.
                planned = triage.evaluate(broker, destinations=stored).notifications
    finally:
        cache.delete(lock_key(broker_id))
    if planned:  # at once, rather than at the next scheduled delivery
        deliver_notifications.delay()
    # Rendering for viewers is a task of its own, so that however many views are
    # watched, the next collection is never held up by them. Every collection gets
    # one: until it runs, pages show the one before (fragments.publish coalesces).
    if broker is not None:
        push_updates.delay(broker.name)


@shared_task(ignore_result=True)
def push_updates(broker_name: str) -> None:
    """Render what the collection changed, then let pages and websockets show it."""
    live.broadcast(broker_name)


@shared_task(ignore_result=True)
def deliver_notifications() -> None:
    """Send the alert notifications that are due: new ones, and retries of failed ones."""
    sent = alerts.deliver_due()
    if sent:
        log.info("sent %d alert notification(s)", sent)


@shared_task(ignore_result=True)
def prune_history() -> None:
    samples, rollups = history.prune()
    log.info("pruned %d samples and %d rollups", samples, rollups)


@shared_task(ignore_result=True)
def run_job(job_id: int) -> None:
    # Acknowledged on receipt: a job whose worker dies is not run again by
    # itself but shown as interrupted, for an operator to resume. A stray
    # second delivery would do nothing anyway: only a queued job is claimed.
    job = jobs.run(
        job_id, jobservice.transfer_for, jobservice.router, on_progress=live.job_progress
    )
    live.job_progress(job)
