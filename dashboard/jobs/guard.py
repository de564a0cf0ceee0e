"""What a message job must pass before it may take messages off its source.

A job is destructive when it removes messages from its source: every RabbitMQ
job on a queue (discard deletes; replay and move acknowledge each original once
its copy is confirmed), and a NATS replay with `delete_original`. A Kafka topic
and a RabbitMQ stream keep what is read from them, so their jobs only copy.

A destructive job starts only from a preview: it is created in the preview
state, its preview carries a `confirm` text ("discard 42 from //orders"), and
`/start` must send that text back. At start the source is looked at again; if
the job would now take more than the preview said, it does not start and the
preview is replaced by the new one, to confirm again.

Discarding from a queue that dead-letter discovery does not know as a
dead-letter queue needs the admin role.
"""

from __future__ import annotations

from typing import Any

from dashboard.auth import ADMIN, has_role
from dashboard.kinds import kind_of
from dashboard.models import Broker


class Invalid(ValueError):
    """Bad input: the message says what to change. Nothing was done."""


class NeedsRole(Invalid):
    """The user's role does not allow this job (the API answers 403)."""

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        self.role = role


class NeedsConfirmation(Invalid):
    """A destructive job asked to run without its preview's confirmation (the API answers 409)."""


def removes_originals(broker: Broker, fields: dict[str, Any]) -> bool:
    """True if the job would take messages off its source for good (an import's source is
    its file, which it only reads)."""
    if fields["action"] == "import":
        return False
    return kind_of(broker).removes_originals(broker, fields)


def confirm_text(fields: dict[str, Any], preview: dict[str, Any]) -> str:
    """What a caller sends back to start a destructive job: its action, count and source."""
    return f"{fields['action']} {preview['estimate']} from {fields['source']}"


def is_dead_letter_source(broker: Broker, key: str) -> bool:
    """Whether dead-letter discovery (the dead-letters pages) lists `key` as a dead-letter source."""
    return kind_of(broker).is_dead_letter_source(broker, key)


def check_role(user: Any, broker: Broker, fields: dict[str, Any]) -> None:
    """NeedsRole if the user may not run this job; an operator discards dead letters only."""
    if fields["action"] != "discard" or has_role(user, ADMIN):
        return
    if not is_dead_letter_source(broker, fields["source"]):
        raise NeedsRole(
            f"{fields['source']} is not a known dead-letter queue: discarding from it "
            "needs the admin role",
            ADMIN,
        )


def must_preview(fields: dict[str, Any]) -> NeedsConfirmation:
    """The refusal of a destructive job asked to run at once, saying how to run it."""
    return NeedsConfirmation(
        f"{fields['action']} takes messages off {fields['source']} for good, so it starts "
        'from a preview: send the same request with "dry_run": true, check the preview, '
        'then POST /api/v1/jobs/<id>/start with {"confirm": <the preview\'s "confirm">}'
    )


def check_confirmation(job: Any, confirm: Any) -> None:
    """NeedsConfirmation unless `confirm` is the confirm text of the job's preview."""
    expected = (job.preview or {}).get("confirm")
    if not expected:
        raise NeedsConfirmation(
            "this job removes messages from its source and has no preview to confirm; "
            'create it again with "dry_run": true'
        )
    if confirm != expected:
        raise NeedsConfirmation(
            f"this job removes messages from {job.source}: to start it, confirm its preview "
            f'by sending {{"confirm": "{expected}"}}'
            + (f" (got {str(confirm)[:80]!r})" if confirm not in (None, "") else "")
        )


def compare(job: Any, fresh: dict[str, Any]) -> str:
    """How the source changed since the preview ("" if it did not), from a fresh look."""
    before, now = job.preview.get("estimate", 0), fresh.get("estimate", 0)
    if before == now:
        return ""
    return f"the preview counted {before} to take from {job.source}; a look at start counts {now}"
