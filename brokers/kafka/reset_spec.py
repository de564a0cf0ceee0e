"""What an offset reset asks for, parsed from a form or JSON and put into words.

Plain Python (no client calls), shared by `brokers.kafka.offsets`, which plans
and applies resets, and by the pages and API that take them from operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from brokers.base import BrokerError

KINDS = ("earliest", "latest", "timestamp", "offset", "shift")
# Epoch milliseconds below this (1973-03-03) are almost surely seconds given by mistake.
MIN_EPOCH_MS = 10**11
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last millisecond of 9999: a later time cannot be shown as a date, so a stored
# request naming one could never be put into words again.
MAX_EPOCH_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH) // timedelta(
    milliseconds=1
)
# Offsets (and so shifts) are signed 64-bit in the Kafka protocol, partitions signed 32-bit.
MAX_OFFSET = 2**63 - 1
MAX_PARTITION = 2**31 - 1
MAX_TOPIC = 249  # characters in a topic name, as Kafka allows
# More digits than any value above has: refused before int(), which is slow on huge texts
# and refuses more than 4,300 digits with a ValueError.
MAX_DIGITS = 20
# ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
WHOLE_RE = re.compile(r"[+-]?[0-9]+")


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
    def from_json(cls, data: Any) -> ResetSpec:
        """The spec stored by `as_json`, checked again; InvalidReset if it no longer passes."""
        if not isinstance(data, dict):
            raise InvalidReset("the stored request is not a JSON object")
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
    if len(topic_name) > MAX_TOPIC:
        raise InvalidReset(f"a topic name has at most {MAX_TOPIC} characters")
    parts = _partitions(partitions)
    if parts is not None and not topic_name:
        raise InvalidReset("choose a topic to pick partitions from")
    parsed: int | None = None
    if to == "timestamp":
        parsed = parse_timestamp(value)
    elif to == "offset":
        parsed = _integer(value, "the offset", low=0)
    elif to == "shift":
        parsed = _integer(value, "the shift")
    return ResetSpec(to=to, value=parsed, topic=topic_name or None, partitions=parts)


def parse_timestamp(value: Any) -> int:
    """Epoch milliseconds from an ISO 8601 date-time (UTC unless it says) or epoch ms."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidReset("give a timestamp: ISO 8601 (2024-05-01T12:00:00Z) or epoch ms")
    if isinstance(value, int) or (isinstance(value, str) and WHOLE_RE.fullmatch(value.strip())):
        ms = value if isinstance(value, int) else _digits(value.strip(), "the timestamp")
        if ms < 0:
            raise InvalidReset(f"the timestamp must not be negative (got {ms})")
        if ms > MAX_EPOCH_MS:
            raise InvalidReset(
                f"timestamp {_shown(ms)} is after the year 9999: give epoch milliseconds "
                "or an ISO 8601 date-time"
            )
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
    ms = (moment - EPOCH) // timedelta(milliseconds=1)
    # Kafka reads -1 and -2 as "latest" and "earliest": a time before 1970 would be taken so.
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise InvalidReset(f"the time {value.strip()[:60]!r} is not from 1970 to 9999 (UTC)")
    return ms


def _digits(text: str, what: str) -> int:
    """An optionally signed run of digits as an int, refused when longer than any offset."""
    digits = len(text.lstrip("+-"))
    if digits > MAX_DIGITS:
        raise InvalidReset(f"{what} is out of range (got {digits} digits)")
    return int(text)


def _shown(number: int) -> str:
    """A number for a message: in full unless it is longer than any valid value."""
    text = str(number)
    return text if len(text) <= MAX_DIGITS else f"{text[:8]}… ({len(text)} digits)"


def _integer(value: Any, what: str, low: int = -MAX_OFFSET, high: int = MAX_OFFSET) -> int:
    """A whole number from `low` to `high`, from an int or a text like "-1,000"."""
    if isinstance(value, bool):
        raise InvalidReset(f"{what} must be a whole number (got {value!r})")
    number: int | None = value if isinstance(value, int) else None
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        if WHOLE_RE.fullmatch(text):
            number = _digits(text, what)
    if number is None:
        shown = value.strip()[:40] if isinstance(value, str) else repr(value)[:40]
        raise InvalidReset(f"{what} must be a whole number (got {shown!r})")
    if number < low == 0:
        raise InvalidReset(f"{what} must be 0 or more (got {_shown(number)})")
    if not low <= number <= high:
        raise InvalidReset(f"{what} must be from {low:,} to {high:,} (got {_shown(number)})")
    return number


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
    if max(numbers) > MAX_PARTITION:
        raise InvalidReset(f"partition {max(numbers)} does not exist: no topic has that many")
    return tuple(sorted(numbers))


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC date-time; OverflowError past the year 9999."""
    # Integer arithmetic, and no platform time_t: the same answer on every machine.
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _target(spec: ResetSpec) -> str:
    # One branch per kind, so that the words for one kind never compute another's
    # (a shift of 10**30 is no time to format).
    if spec.to == "timestamp":
        return f"the first message at or after {iso(spec.value or 0)}"
    if spec.to == "offset":
        return f"offset {spec.value}"
    if spec.to == "shift":
        return f"{spec.value or 0:+d} from the committed offset"
    return "the earliest offset" if spec.to == "earliest" else "the end (latest)"


def describe_spec(spec: ResetSpec) -> str:
    """The spec in words, for pages and the audit log."""
    target = _target(spec)
    if spec.topic is None:
        where = "every committed topic"
    elif spec.partitions is None:
        where = f"topic {spec.topic}"
    else:
        where = f"topic {spec.topic}, partition{'s' if len(spec.partitions) > 1 else ''} "
        where += ", ".join(str(p) for p in spec.partitions)
    return f"{target}, on {where}"
