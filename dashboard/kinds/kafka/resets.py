"""Offset resets of Kafka consumer groups as Sluice keeps them: dry runs, applying, undoing.

Every reset starts as a dry run stored as an `OffsetReset` row (state
"preview"). Applying plans it again from the broker's current offsets, refuses
if the committed offsets moved since the dry run or the group has members, and
keeps the offsets it replaced in the row, so that "undo" is a new reset back to
them. Previews change nothing and are not audited; every apply and undo
attempt is, whatever its outcome. The pages and the JSON API both call these.
"""

from __future__ import annotations

from typing import Any, cast

from django.utils import timezone

from brokers.base import BrokerError
from brokers.kafka import offsets as ko
from brokers.kafka.adapter import Kafka
from dashboard.auth import audit
from dashboard.collection.collector import adapter_for
from dashboard.models import Broker, OffsetReset


class Conflict(Exception):
    """The reset cannot be applied or undone in its current state; nothing changed."""


def adapter(broker: Broker) -> Kafka:
    return cast(Kafka, adapter_for(broker))


def _changes(reset: OffsetReset) -> list[ko.Change]:
    try:
        return [ko.Change.from_json(c) for c in reset.changes]
    except (KeyError, TypeError, AttributeError):
        # A row written by hand or by an older version: refuse it rather than guess.
        raise Conflict(
            "This reset's stored table of offsets is unreadable; nothing was changed. "
            "Make a new dry run."
        ) from None


def latest_applied(broker: Broker, group: str) -> OffsetReset | None:
    """The reset an Undo would take back: the latest applied one that is not itself an undo.

    Undos unwind resets newest first, like a stack; an undo is not undone (a
    new reset does that).
    """
    return (
        OffsetReset.objects.filter(
            broker=broker, group=group, state=OffsetReset.APPLIED, undoes__isnull=True
        )
        .order_by("-applied_at", "-id")
        .first()
    )


def preview(
    user: Any, broker: Broker, group: str, spec: ko.ResetSpec
) -> tuple[OffsetReset, ko.Plan]:
    """Plan `spec` against the broker and store it as a dry run; changes nothing."""
    plan = ko.plan_reset(adapter(broker), group, spec)
    reset = OffsetReset.objects.create(
        broker=broker,
        group=group,
        spec={**spec.as_json(), "skipped": list(plan.skipped)},
        changes=[c.as_json() for c in plan.changes],
        state=OffsetReset.PREVIEW,
        created_by=_name(user),
    )
    return reset, plan


def apply_reset(user: Any, reset: OffsetReset, plan: ko.Plan | None = None) -> OffsetReset:
    """Apply a dry run (or retry a refused one) from a fresh plan of the same request.

    `plan` is given only when the dry run was made a moment ago in the same
    request. Conflict if the committed offsets moved since the dry run (the row
    then shows the new plan), GroupActive if the group has members.
    """
    if reset.state not in (OffsetReset.PREVIEW, OffsetReset.REFUSED):
        raise Conflict(f"This reset is {reset.state}; only a dry run can be applied.")
    if plan is None:
        kafka = adapter(reset.broker)
        if reset.undoes is not None:
            _check_undoable(reset.undoes)
            plan = ko.plan_restore(kafka, reset.group, _changes(reset.undoes))
        else:
            plan = ko.plan_reset(kafka, reset.group, ko.ResetSpec.from_json(reset.spec))
        moved = _moved(_changes(reset), list(plan.changes))
        if moved:
            reset.changes = [c.as_json() for c in plan.changes]
            reset.error = ""
            reset.save(update_fields=["changes", "error"])
            raise Conflict(
                f"The committed offsets changed since this dry run ({moved}). Nothing was "
                "changed; the table now shows the new plan: review it and apply again."
            )
    _execute(user, reset, plan)
    return reset


def undo(user: Any, reset: OffsetReset) -> OffsetReset:
    """Restore the offsets `reset` replaced, as a new reset; marks `reset` undone."""
    _check_undoable(reset)
    plan = ko.plan_restore(adapter(reset.broker), reset.group, _changes(reset))
    restore = OffsetReset.objects.create(
        broker=reset.broker,
        group=reset.group,
        spec={"to": "undo", "of": str(reset.public_id), "skipped": list(plan.skipped)},
        changes=[c.as_json() for c in plan.changes],
        state=OffsetReset.PREVIEW,
        undoes=reset,
        created_by=_name(user),
    )
    _execute(user, restore, plan)
    return restore


def _check_undoable(reset: OffsetReset) -> None:
    if reset.state != OffsetReset.APPLIED:
        raise Conflict(f"This reset is {reset.state}; only an applied reset can be undone.")
    if reset.undoes_id is not None:
        raise Conflict("This is an undo; to change the offsets again, make a new reset.")
    latest = latest_applied(reset.broker, reset.group)
    if latest is not None and latest.pk != reset.pk:
        raise Conflict(
            f"A later reset ({latest.public_id}, by {latest.created_by}) changed this group's "
            "offsets after this one: undo that one first."
        )


def _execute(user: Any, reset: OffsetReset, plan: ko.Plan) -> None:
    """Apply `plan` for `reset`, record the outcome in the row, and audit it."""
    action = "offsets.undo" if reset.undoes is not None else "offsets.reset"
    changes = list(plan.changes)
    detail: dict[str, Any] = {
        "group": reset.group,
        "reset": str(reset.public_id),
        "spec": {k: v for k, v in reset.spec.items() if k != "skipped"},
        "changes": [
            {"topic": c.topic, "partition": c.partition, "before": c.before, "after": c.after}
            for c in changes
        ],
    }
    if reset.undoes is not None:
        detail["undoes"] = str(reset.undoes.public_id)
    where = {"broker": reset.broker.name, "destination": f"group/{reset.group}"}
    try:
        ko.apply(adapter(reset.broker), reset.group, changes)
    except ko.GroupActive as exc:
        reset.state, reset.error = OffsetReset.REFUSED, exc.message
        reset.changes = [c.as_json() for c in changes]
        reset.save(update_fields=["state", "error", "changes"])
        audit(user, action, **where, count=0, result="refused", error=exc.message, **detail)
        raise
    except BrokerError as exc:
        reset.error = exc.message
        reset.save(update_fields=["error"])
        audit(user, action, **where, count=0, result="failed", error=exc.message, **detail)
        raise
    reset.state, reset.error, reset.applied_at = OffsetReset.APPLIED, "", timezone.now()
    reset.changes = [c.as_json() for c in changes]
    reset.save(update_fields=["state", "error", "applied_at", "changes"])
    if reset.undoes is not None:
        OffsetReset.objects.filter(pk=reset.undoes.pk, state=OffsetReset.APPLIED).update(
            state=OffsetReset.UNDONE
        )
    audit(user, action, **where, count=len(changes), result="ok", **detail)


def _moved(planned: list[ko.Change], fresh: list[ko.Change]) -> str:
    """The partitions whose committed offset differs between two plans, in words ("" if none)."""
    was = {(c.topic, c.partition): c.before for c in planned}
    now = {(c.topic, c.partition): c.before for c in fresh}
    missing = "not in the plan"
    diffs = [
        f"{t}/{p} was {was.get((t, p), missing)}, is {now.get((t, p), missing)}"
        for t, p in sorted(set(was) | set(now))
        if (t, p) not in was or (t, p) not in now or was[t, p] != now[t, p]
    ]
    return "; ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")


def _name(user: Any) -> str:
    return str(user.get_username())


def reset_json(reset: OffsetReset) -> dict[str, Any]:
    undone_by = reset.undone_by.filter(state=OffsetReset.APPLIED).first()
    return {
        "id": str(reset.public_id),
        "broker": reset.broker.name,
        "group": reset.group,
        "state": reset.state,
        "spec": reset.spec,
        "description": describe(reset),
        "changes": reset.changes,
        "error": reset.error,
        "created_by": reset.created_by,
        "created_at": reset.created_at.isoformat(),
        "applied_at": reset.applied_at.isoformat() if reset.applied_at else None,
        "undoes": str(reset.undoes.public_id) if reset.undoes else None,
        "undone_by": str(undone_by.public_id) if undone_by else None,
    }


def describe(reset: OffsetReset) -> str:
    """The reset in words; "unreadable: …" for a stored request no longer valid."""
    spec = reset.spec
    if not isinstance(spec, dict):
        return "unreadable: the stored request is not a JSON object"
    if reset.undoes_id is not None or spec.get("to") == "undo":
        return f"undo of reset {spec.get('of', '')}: back to the offsets it replaced"
    try:
        return ko.describe_spec(ko.ResetSpec.from_json(spec))
    except ko.InvalidReset as exc:
        # Rows stored before their input was checked (a shift of 10**30, say).
        return f"unreadable: {exc.message}"
    except (OverflowError, ValueError) as exc:
        return f"unreadable: {exc}"


def skipped(reset: OffsetReset) -> list[str]:
    """The dry run's notes on partitions it left alone, [] when the row has none to read."""
    notes = reset.spec.get("skipped") if isinstance(reset.spec, dict) else None
    return [str(n) for n in notes] if isinstance(notes, list) else []


def state_json(state: ko.GroupState) -> dict[str, Any]:
    return {
        "state": state.state,
        "active": state.active,
        "error": state.error,
        "members": [
            {"member_id": m.member_id, "client_id": m.client_id, "host": m.host}
            for m in state.members
        ],
    }
