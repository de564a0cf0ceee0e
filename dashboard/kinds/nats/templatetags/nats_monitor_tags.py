"""Template helpers for the NATS server, stream and consumer panels (dashboard/kinds/nats/status.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template

register = template.Library()


@register.simple_tag
def nats_consumer_panel(dest: Any) -> dict[str, Any]:
    from dashboard.kinds.nats.status import consumer_panel

    return consumer_panel(dest)


@register.simple_tag
def nats_stream_panel(dest: Any) -> dict[str, Any]:
    from dashboard.kinds.nats.status import stream_panel

    return stream_panel(dest)


@register.filter
def nats_badge(status: str) -> str:
    """The flag class of a consumer status."""
    from dashboard.kinds.nats.status import BADGES

    return BADGES.get(status or "", "")


@register.filter
def duration(value: Any) -> str:
    """Seconds, said briefly at any scale: "350 µs", "2.1 ms", "4.2 s", "3 min 10 s", "2 d 4 h"."""
    if value is None or value == "":
        return "–"
    try:
        s = float(value)
    except (TypeError, ValueError):
        return "–"
    if s == 0:
        return "0 s"
    if s < 0.001:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    whole = int(s)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


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
