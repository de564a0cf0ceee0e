"""How a message is shown: properties, headers, the x-death history, and its body as JSON, text or bytes."""

from __future__ import annotations

import base64
import json
from typing import Any

from brokers import readable
from brokers.base import Message
from brokers.readable import Unreadable
from dashboard.jobs import deadletters
from dashboard.jobs.deadletters import DeathInfo

HEX_LIMIT = 4096  # bytes of a binary body shown as hex


def hexdump(data: bytes) -> str:
    lines = []
    for at in range(0, min(len(data), HEX_LIMIT), 16):
        chunk = data[at : at + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def shown(message: Message, death_info: DeathInfo | None = None) -> dict[str, Any]:
    """Everything a template needs; all of it is escaped on output.

    A property or header the broker holds in a form that cannot be shown
    (a timestamp out of range, an x-death entry of odd types) reads as
    "unreadable: ..." where it would be, and the rest shows as usual.
    """
    text = deadletters.text_of(message.body)
    pretty = None
    if text is not None and text.strip()[:1] in ("{", "["):
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pretty = None
    props = dict(message.properties)
    if "timestamp" in props:
        props["timestamp"] = timestamp_text(props["timestamp"])
    # A RabbitMQ dead letter's deaths, from its kind's reading of them.
    deaths = death_info(message)["deaths"] if death_info is not None else []
    # x-death shows as a table when it is a list; anything else shows raw, as any header.
    as_table = isinstance(message.headers.get("x-death"), list)
    return {
        "m": message,
        "properties": props,
        "headers": {
            k: _value_text(v) for k, v in message.headers.items() if k != "x-death" or not as_table
        },
        "deaths": deaths,
        "text": text,
        "json": pretty,
        "hex": hexdump(message.body) if text is None else "",
        "base64": base64.b64encode(message.body[:HEX_LIMIT]).decode() if text is None else "",
        "binary": text is None,
        "size": message.size or len(message.body),
    }


def timestamp_text(value: Any) -> Any:
    """An AMQP timestamp property (Unix seconds) with its UTC time, or why it has none."""
    moment = readable.utc_time(value)
    if isinstance(moment, Unreadable):
        return moment
    return f"{value} ({moment:%Y-%m-%d %H:%M:%S} UTC)" if moment is not None else value


def _value_text(value: Any) -> Any:
    """A header value as the page shows it; text for nested values, which may be too deep to show."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    try:
        return str(value)
    except (RecursionError, ValueError):
        return readable.unreadable("nested too deep to show", type(value).__name__)


# -- Kafka records: a body on its own, and a collapsible outline of JSON ------

OUTLINE_LIMIT = 2000  # rows of a JSON outline; bigger documents show as text only
OUTLINE_DEPTH = 64  # nesting of a JSON outline; deeper documents show as text only


def body_parts(body: bytes | None) -> dict[str, Any]:
    """How to show a Kafka record's value: JSON (with an outline), text, or hex and base64.

    Everything here is escaped by the templates; `outline` rows open and close
    <details> elements so that JSON objects and arrays can be collapsed.
    """
    if body is None:
        return {"null": True, "text": None, "json": None, "outline": None, "binary": False}
    text = deadletters.text_of(body)
    pretty = outline = None
    if text is not None and text.strip()[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            pretty = json.dumps(data, indent=2, ensure_ascii=False)
            outline = json_outline(data)
    return {
        "null": False,
        "text": text,
        "json": pretty,
        "outline": outline,
        "hex": hexdump(body) if text is None else "",
        "base64": base64.b64encode(body[:HEX_LIMIT]).decode() if text is None else "",
        "binary": text is None,
    }


def json_outline(data: Any, limit: int = OUTLINE_LIMIT) -> list[dict[str, Any]] | None:
    """Rows {"kind": "open"|"close"|"leaf", "key", "text", "size"} for parsed JSON; None if too big."""
    rows: list[dict[str, Any]] = []

    def walk(value: Any, key: Any, depth: int = 0) -> bool:
        if len(rows) >= limit or depth > OUTLINE_DEPTH:
            return False
        if isinstance(value, (dict, list)) and value:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            brackets = "{}" if isinstance(value, dict) else "[]"
            rows.append({"kind": "open", "key": key, "text": brackets[0], "size": len(value)})
            for k, v in items:
                if not walk(v, k, depth + 1):
                    return False
            rows.append({"kind": "close", "text": brackets[1]})
            return True
        kind = "null" if value is None else type(value).__name__
        rows.append(
            {
                "kind": "leaf",
                "key": key,
                "text": json.dumps(value, ensure_ascii=False),
                "type": kind,
            }
        )
        return True

    return rows if walk(data, None) else None


def shown_bytes(data: bytes | None, limit: int | None = None) -> dict[str, Any]:
    """Bytes as text when they are UTF-8, else as hex and base64; `limit` characters at most."""
    if data is None:
        return {"null": True, "text": None, "hex": "", "base64": ""}
    piece = data if limit is None else data[: limit * 4]
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut in the middle of a character is still text.
        if limit is not None and exc.start >= len(piece) - 3 and len(piece) < len(data):
            text = piece[: exc.start].decode("utf-8", "replace")
        else:
            part = data if limit is None else data[:limit]
            return {
                "null": False,
                "text": None,
                "hex": part.hex(" "),
                "base64": base64.b64encode(part).decode(),
            }
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return {"null": False, "text": text, "hex": "", "base64": ""}
