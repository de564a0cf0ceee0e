"""Formatting for the templates: numbers, rates, ages, and destination URLs."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from django import template
from django.urls import reverse
from django.utils import dateformat, timezone

from brokers import readable
from brokers.readable import Unreadable

register = template.Library()


@register.filter
def dest_url(dest: Any) -> str:
    """The destination page; the key is one encoded segment, so '/' in names is safe."""
    return dest_page(dest, "destination-detail")


@register.filter
def dest_page(dest: Any, page: str) -> str:
    """A page about a destination other than its own: messages, body."""
    return reverse(f"dashboard:{page}", args=[dest.broker.name, "K"])[:-1] + quote(
        dest.key, safe=""
    )


@register.filter
def label(key: str) -> str:
    """A fact's key as a label: "under_replicated" -> "Under replicated"."""
    return str(key).replace("_", " ").replace("-", " ").capitalize()


@register.filter
def num(value: Any) -> str:
    if value is None or value == "":
        return "–"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        return str(value)


def _float(value: Any) -> float | None:
    """`value` as a finite float, or None: filters show "–" for what is no number."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def rate(value: Any) -> str:
    """Messages per second, to the precision that matters."""
    value = _float(value)
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


@register.filter
def pct(value: Any) -> str:
    share = _float(value)
    return "–" if share is None else f"{share * 100:.0f}%"


@register.filter
def bytes_(value: Any) -> str:
    size = _float(value)
    if size is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@register.filter
def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((timezone.now() - value).total_seconds())
    if seconds < 2:
        return "just now"
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


@register.filter
def unix(value: Any) -> datetime | None:
    """Unix seconds as a datetime, for the date filter."""
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@register.filter
def utc(value: Any, spec: str = "Y-m-d H:i:s") -> str:
    """A datetime, or Unix seconds, in UTC as `spec` (the date filter's format);
    "unreadable: ..." with the raw value when the broker's time is out of range; "" for none."""
    if value is None or value == "":
        return ""
    if not isinstance(value, datetime | Unreadable):
        value = readable.utc_time(value)
    if isinstance(value, Unreadable):
        return str(value)
    if value is None:
        return ""
    return dateformat.format(value.astimezone(UTC), spec)


@register.filter
def get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.simple_tag
def sort_link(listing: Any, column: str) -> str:
    return "?" + listing.sort_link(column)


@register.simple_tag
def sort_mark(listing: Any, column: str) -> str:
    if listing.sort.lstrip("-") != column:
        return ""
    return "▼" if listing.sort.startswith("-") else "▲"


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
