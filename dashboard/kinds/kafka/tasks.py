"""Kafka's Celery task: a whole-topic search, run by the worker (dashboard/kinds/kafka/search.py)."""

from __future__ import annotations

from celery import shared_task

from dashboard.kinds.kafka import search


@shared_task(name=search.RUN_SEARCH, ignore_result=True)
def run_search(search_id: int) -> None:
    # Like run_job: acknowledged on receipt; only a queued search is claimed,
    # so a stray second delivery does nothing.
    search.run(search_id)
