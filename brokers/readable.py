"""Values from a broker made safe to show: times that may be out of range, fields of odd types.

A broker hands back whatever a producer wrote: an AMQP timestamp of 2**63-1, a
Kafka record timestamp of 2**62, an x-death count that is a list. A page shows
such a field as "unreadable: ..." with the raw value, and the rest of the
message as usual. Pure: no Django, no client library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

RAW_LIMIT = 80  # characters of a raw value kept to show


@dataclass(frozen=True)
class Unreadable:
    """A field that cannot be read as what it should be: why, and the raw value (cut)."""

    why: str
    raw: str
    unreadable: ClassVar[bool] = True  # for templates: {% if value.unreadable %}

    def __str__(self) -> str:
        return f"unreadable: {self.why} ({self.raw})"


def unreadable(why: str, value: Any) -> Unreadable:
    try:
        raw = repr(value)
    except (ValueError, RecursionError):  # an int of more digits than repr allows, a deep list
        raw = f"a {type(value).__name__}"
    return Unreadable(why, raw if len(raw) <= RAW_LIMIT else raw[: RAW_LIMIT - 1] + "…")


def number(value: Any) -> int | float | None:
    """`value` if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def seconds(value: Any) -> int | None:
    """`value` as whole Unix seconds if it is a finite number, else None."""
    n = number(value)
    return None if n is None else int(n)


def utc_time(value: Any, per_second: int = 1) -> datetime | Unreadable | None:
    """A Unix time (seconds, or `per_second` units of a second) as an aware UTC datetime.

    None stays None; anything that is not a number, or is outside the years
    1 to 9999, is Unreadable with the raw value.
    """
    if value is None:
        return None
    seconds = number(value)
    if seconds is None:
        return unreadable("not a Unix time", value)
    try:
        return datetime.fromtimestamp(seconds / per_second, UTC)
    except (OverflowError, OSError, ValueError):
        return unreadable("a time out of range", value)


def utc_text(value: Any, per_second: int = 1, spec: str = "%Y-%m-%d %H:%M:%S") -> str:
    """`utc_time` as text: the time formatted with `spec` (UTC), or "unreadable: ..."; "" for None."""
    moment = utc_time(value, per_second)
    if moment is None:
        return ""
    return moment.strftime(spec) if isinstance(moment, datetime) else str(moment)


def whole(value: Any) -> int | Unreadable:
    """`value` as a whole number: an int (not a bool) or an integral finite float."""
    n = number(value)
    if isinstance(n, float) and n.is_integer():
        return int(n)
    if isinstance(n, int):
        return n
    return unreadable("not a whole number", value)


def text(value: Any) -> str | Unreadable:
    """`value` if it is text; Unreadable otherwise (None included)."""
    return value if isinstance(value, str) else unreadable("not text", value)
