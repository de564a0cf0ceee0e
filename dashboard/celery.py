"""The Celery app: collection runs here, never on the request path."""

import gc
import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, worker_process_init

from dashboard.kinds import APPS as KIND_APPS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("sluice")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each broker kind's app may have tasks of its own (dashboard/kinds/<kind>/tasks.py).
app.autodiscover_tasks(["dashboard", *KIND_APPS])


@after_setup_logger.connect
def _quiet_task_trace(**kwargs: object) -> None:
    # "Task received/succeeded" twice a second for the tick buries what matters.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)


@worker_process_init.connect
def _freeze_startup_heap(**kwargs: object) -> None:
    # What is alive once the worker has started (Django, the kinds, the apps) lives as long
    # as the process: out of the cycle collector's way, its full passes walk only what a
    # collection made (5,000 rows' worth at most), not the whole program again.
    gc.freeze()
