"""Template helpers for the NATS server, stream and consumer panels (dashboard/kinds/nats/status.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template

from dashboard.kinds.nats.status import BADGES, consumer_panel, stream_panel

register = template.Library()


@register.simple_tag
def nats_consumer_panel(dest: Any) -> dict[str, Any]:
    return consumer_panel(dest)


@register.simple_tag
def nats_stream_panel(dest: Any) -> dict[str, Any]:
    return stream_panel(dest)


@register.filter
def nats_badge(status: str) -> str:
    """The flag class of a consumer status."""
    return BADGES.get(status or "", "")


@register.filter
def server_time(value: Any) -> datetime | None:
    """A server's ISO timestamp as a datetime, for the date filter."""
    from brokers.nats.monitor import parse_time

    return parse_time(value)


@register.filter
def limit(value: Any) -> str:
    """A JetStream count limit: negative is unlimited."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return "–"
    return "unlimited" if number < 0 else f"{number:,}"
