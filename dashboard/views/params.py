"""Reading request parameters for the message pages and their APIs."""

from __future__ import annotations

from typing import Any


class BadInput(ValueError):
    """A parameter that cannot be used; the message says which and why."""


def whole(params: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    """The parameter `name` as a whole number in [low, high], `default` when absent."""
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadInput(f"{name} must be from {low:,} to {high:,}")
    return value
