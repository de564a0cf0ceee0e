"""Formatting for the Kafka status panels: how far behind in time, said briefly."""

from __future__ import annotations

from django import template

from dashboard.kinds.kafka.status import BADGES

register = template.Library()


@register.filter
def badge(status: str) -> str:
    """The flag class of a group status (dashboard/kinds/kafka/status.py)."""
    return BADGES.get(status or "", "")
