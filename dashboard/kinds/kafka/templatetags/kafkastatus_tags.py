"""Formatting for the Kafka status panels: how far behind in time, said briefly."""

from __future__ import annotations

from typing import Any

from django import template

from dashboard.kinds.nats.templatetags.nats_monitor_tags import duration

register = template.Library()


@register.filter
def behind(seconds: Any) -> str:
    """Seconds as "4.2 s", "3 min 10 s", "2 h 5 min" or "3 d 4 h"; "–" when unknown."""
    if seconds is None or seconds == "":
        return "–"
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "–"
    # Under a second, lag reads better in tenths of a second than in ms.
    return f"{s:.1f} s" if s < 1 else duration(s)


@register.filter
def badge(status: str) -> str:
    """The flag class of a group status (dashboard/kinds/kafka/status.py)."""
    from dashboard.kinds.kafka.status import BADGES

    return BADGES.get(status or "", "")
