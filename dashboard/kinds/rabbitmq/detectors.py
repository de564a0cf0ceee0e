"""RabbitMQ's own triage: resource alarms, stalled consumers, redelivery storms, and queue limits.

The kind-neutral detectors (dashboard/triage/detectors.py) find lost consumers,
growing backlogs and dead letters arriving; these add what only RabbitMQ tells.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dashboard.triage.detectors import Context
from dashboard.triage.findings import CRITICAL, WARNING, Finding, Limit, duration, rate
from dashboard.triage.window import long_enough


def _extra(dest: Any) -> dict[str, Any]:
    return (dest.details or {}).get("extra") or {}


def _mib(value: Any) -> str:
    return f"{(value or 0) / 2**20:,.0f} MiB"


def alarms(ctx: Context) -> Iterable[Finding]:
    """A memory or disk alarm on any node: RabbitMQ blocks every publishing connection."""
    if not ctx.enabled("alarm"):
        return
    raised = []
    for node in (ctx.broker.health or {}).get("nodes") or ():
        if node.get("mem_alarm"):
            raised.append(
                f"memory alarm on {node['name']} ({_mib(node.get('mem_used'))} used, "
                f"limit {_mib(node.get('mem_limit'))})"
            )
        if node.get("disk_alarm"):
            raised.append(
                f"disk alarm on {node['name']} ({_mib(node.get('disk_free'))} free, "
                f"limit {_mib(node.get('disk_free_limit'))})"
            )
    if raised:
        yield Finding(
            cause="alarm",
            severity=ctx.severity("alarm", CRITICAL),
            summary="; ".join(raised) + ": publishers are blocked",
            rule="While a node's memory or disk alarm is raised, RabbitMQ blocks every connection that publishes, cluster-wide.",
            evidence={"alarms": raised},
            actions=("broker",),
        )


def stalled(ctx: Context) -> Iterable[Finding]:
    """Consumers present, every one at its prefetch limit, and nothing acknowledged over the window."""
    for dest in ctx.destinations:
        if dest.kind != "queue" or dest.consumers <= 0 or dest.in_flight <= 0:
            continue
        if not ctx.enabled("stalled", dest):
            continue
        points = ctx.points(dest)
        if not long_enough(points):
            continue
        extra = _extra(dest)
        prefetch = [c.get("prefetch") for c in (dest.details or {}).get("consumers") or ()]
        if not prefetch or any(not p for p in prefetch):
            continue  # a consumer without a prefetch limit is never "at" it
        limit = sum(prefetch)
        busy = all(p.in_flight > 0 for p in points)
        no_progress = all((p.out_rate or 0) == 0 for p in points[1:]) and not extra.get("ack_rate")
        if not (busy and no_progress and dest.in_flight >= limit):
            continue
        span = points[-1].ts - points[0].ts
        yield Finding(
            cause="stalled",
            severity=ctx.severity("stalled", WARNING, dest),
            summary=(
                f"{dest.consumers} consumer(s) hold {dest.in_flight:,} unacknowledged, their "
                f"prefetch limit ({limit:,}), and acknowledged nothing for {duration(span)}; "
                f"{dest.backlog:,} ready behind them"
            ),
            rule="A queue is stalled when its consumers hold as many unacknowledged messages as their prefetch allows and acknowledge none over the window: nothing more can be delivered.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={
                "consumers": dest.consumers,
                "unacked": dest.in_flight,
                "prefetch_total": limit,
                "ready": dest.backlog,
                "window_s": span,
            },
            actions=("open", "browse"),
        )


def redelivery(ctx: Context) -> Iterable[Finding]:
    """Most deliveries are redeliveries: messages rejected and requeued again and again."""
    for dest in ctx.destinations:
        extra = _extra(dest)
        again = extra.get("redeliver_rate") or 0.0
        delivered = dest.out_rate or 0.0
        if again < 1.0 or again < 0.5 * delivered or not ctx.enabled("redelivery", dest):
            continue
        limit = (extra.get("limits") or {}).get("delivery-limit")
        text = f"{rate(again)} redelivered of {rate(delivered)} delivered"
        if dest.type == "quorum" and limit:
            text += (
                f"; each message is dropped or dead-lettered after {limit['value']} deliveries "
                f"(delivery-limit, by {limit['source']})"
            )
        yield Finding(
            cause="redelivery",
            severity=ctx.severity("redelivery", WARNING, dest),
            summary=text,
            rule="A redelivery storm is half or more of the deliveries being redeliveries, at 1 msg/s or more, two collections in a row: consumers reject and requeue the same messages.",
            key=dest.key,
            name=dest.name,
            dest_id=dest.pk,
            evidence={"redeliver_rate": again, "deliver_rate": delivered, "delivery_limit": limit},
            actions=("open", "browse"),
            confirm=2,
        )


def limits(dest: Any) -> list[Limit]:
    """max-length and max-length-bytes in force (argument or policy); both count ready messages."""
    extra = _extra(dest)
    found = extra.get("limits") or {}
    out = []
    length = found.get("max-length")
    if length and isinstance(length.get("value"), int | float):
        out.append(
            Limit(f"max-length ({length['source']})", length["value"], dest.backlog, "messages")
        )
    size = found.get("max-length-bytes")
    ready_bytes = extra.get("message_bytes_ready")
    if size and isinstance(size.get("value"), int | float) and ready_bytes is not None:
        per = ready_bytes / dest.backlog if dest.backlog else None
        if per:
            out.append(
                Limit(
                    f"max-length-bytes ({size['source']})", size["value"], ready_bytes, "bytes", per
                )
            )
    return out
