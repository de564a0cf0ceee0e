"""What an offset reset asks for, parsed from a form or JSON and put into words.

Plain Python (no client calls), shared by `brokers.kafka_offsets`, which plans
and applies resets, and by the pages and API that take them from operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from brokers.base import BrokerError

KINDS = ("earliest", "latest", "timestamp", "offset", "shift")
# Epoch milliseconds below this (1973-03-03) are almost surely seconds given by mistake.
MIN_EPOCH_MS = 10**11
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidReset(BrokerError):
    """The request cannot be planned as asked (bad input, unknown topic...); nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class ResetSpec:
    """What to reset to, and where: one topic (all or some partitions) or every committed topic."""

    to: str  # one of KINDS
    value: int | None = None  # timestamp: epoch ms; offset: the offset; shift: ±N
    topic: str | None = None
    partitions: tuple[int, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "value": self.value,
            "topic": self.topic,
            "partitions": list(self.partitions) if self.partitions is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResetSpec:
        return parse_spec(
            data.get("to"), data.get("value"), data.get("topic"), data.get("partitions")
        )


# -- parsing --------------------------------------------------------------------


def parse_spec(to: Any, value: Any, topic: Any, partitions: Any) -> ResetSpec:
    """A ResetSpec from form or JSON values, or InvalidReset saying what is wrong."""
    to = str(to or "").strip().lower()
    if to not in KINDS:
        raise InvalidReset(f"'to' must be one of {', '.join(KINDS)} (got {to!r})")
    topic_name = str(topic).strip() if topic is not None else ""
    parts = _partitions(partitions)
    if parts is not None and not topic_name:
        raise InvalidReset("choose a topic to pick partitions from")
    parsed: int | None = None
    if to == "timestamp":
        parsed = parse_timestamp(value)
    elif to == "offset":
        parsed = _integer(value, "the offset")
        if parsed < 0:
            raise InvalidReset(f"the offset must be 0 or more (got {parsed})")
    elif to == "shift":
        parsed = _integer(value, "the shift")
    return ResetSpec(to=to, value=parsed, topic=topic_name or None, partitions=parts)


def parse_timestamp(value: Any) -> int:
    """Epoch milliseconds from an ISO 8601 date-time (UTC unless it says) or epoch ms."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidReset("give a timestamp: ISO 8601 (2024-05-01T12:00:00Z) or epoch ms")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        ms = int(value)
        if ms < 0:
            raise InvalidReset(f"the timestamp must not be negative (got {ms})")
        if 0 < ms < MIN_EPOCH_MS:
            raise InvalidReset(
                f"timestamp {ms} would be {iso(ms)} as epoch milliseconds; "
                "it looks like seconds: give milliseconds or an ISO 8601 date-time"
            )
        return ms
    if not isinstance(value, str):
        raise InvalidReset(f"bad timestamp {value!r}: give ISO 8601 or epoch milliseconds")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidReset(
            f"bad timestamp {value.strip()[:60]!r}: give ISO 8601 (2024-05-01T12:00:00Z) "
            "or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: float seconds * 1000 can land a millisecond short.
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidReset(f"{what} must be a whole number (got {value!r})")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        if text.lstrip("+-").isdigit():
            return int(text)
    shown = value.strip()[:40] if isinstance(value, str) else value
    raise InvalidReset(f"{what} must be a whole number (got {shown!r})")


def _partitions(value: Any) -> tuple[int, ...] | None:
    """None (every partition) from None/""/[]; else partition numbers from a list or "0, 2"."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = [p for p in value.replace(" ", ",").split(",") if p]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidReset("partitions must be a list of partition numbers")
    if not items:
        return None
    numbers = {_integer(p, "a partition") for p in items}
    if min(numbers) < 0:
        raise InvalidReset(f"partition {min(numbers)} does not exist: partitions start at 0")
    return tuple(sorted(numbers))


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC date-time."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def describe_spec(spec: ResetSpec) -> str:
    """The spec in words, for pages and the audit log."""
    target = {
        "earliest": "the earliest offset",
        "latest": "the end (latest)",
        "timestamp": f"the first message at or after {iso(spec.value or 0)}",
        "offset": f"offset {spec.value}",
        "shift": f"{spec.value:+d} from the committed offset" if spec.value is not None else "",
    }[spec.to]
    if spec.topic is None:
        where = "every committed topic"
    elif spec.partitions is None:
        where = f"topic {spec.topic}"
    else:
        where = f"topic {spec.topic}, partition{'s' if len(spec.partitions) > 1 else ''} "
        where += ", ".join(str(p) for p in spec.partitions)
    return f"{target}, on {where}"
