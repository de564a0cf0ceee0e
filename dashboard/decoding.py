"""The uploaded schemas, parsed once per process, for brokers.decode to read bodies with.

Pages and jobs ask here once (per request, per job) and hand the schemas to the
pure functions that show and filter messages. Each process keeps them parsed, asks
the database at most every RECHECK seconds whether one was added, changed or
removed (one small query), and forgets them at once when it saves or deletes one
itself, so an admin's upload shows on the next page.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Max
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from brokers.schemas import Schema as Compiled
from dashboard.models import Schema

RECHECK = 2.0  # seconds a process trusts the schemas it parsed

_state: dict[str, Any] = {"stamp": None, "checked": 0.0, "schemas": ()}


def schemas() -> tuple[Compiled, ...]:
    """The uploaded schemas, parsed; one that no longer parses is left out."""
    now = time.monotonic()
    if _state["stamp"] is not None and now - _state["checked"] < RECHECK:
        return _state["schemas"]
    found = Schema.objects.aggregate(n=Count("id"), last=Max("updated_at"))
    stamp = (found["n"], found["last"])
    if stamp != _state["stamp"]:
        compiled = []
        for row in Schema.objects.all():
            try:
                compiled.append(row.compiled())
            except ValidationError:
                continue  # stored before a library change made it unreadable: skipped
        _state["schemas"] = tuple(compiled)
        _state["stamp"] = stamp
    _state["checked"] = now
    return _state["schemas"]


def forget() -> None:
    """Parse the schemas again on the next look."""
    _state.update(stamp=None, checked=0.0, schemas=())


@receiver([post_save, post_delete], sender=Schema, dispatch_uid="sluice-schemas-changed")
def _changed(**kwargs: Any) -> None:
    forget()
