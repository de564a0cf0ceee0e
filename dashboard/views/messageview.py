"""How a message is shown: properties, headers, the x-death history, and its body as JSON, text or bytes.

A body that is compressed or in a binary encoding (brokers.decode) shows decoded
first, its encoding named, with the raw bytes one click away.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from brokers import decode, readable
from brokers.base import Message
from brokers.decode import Decoded
from brokers.readable import Unreadable
from brokers.schemas import Schema
from dashboard.jobs import deadletters
from dashboard.jobs.deadletters import DeathInfo

# Masks a body's bytes as a reader may see them (dashboard.masking.Masker.body).
Mask = Callable[[bytes], bytes]

HEX_LIMIT = 4096  # bytes of a binary body shown as hex
# Characters of a decoded structure shown: it may inflate far past the body's limit.
DECODED_CHARS = 256 * 1024


def hexdump(data: bytes) -> str:
    lines = []
    for at in range(0, min(len(data), HEX_LIMIT), 16):
        chunk = data[at : at + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def shown(
    message: Message,
    death_info: DeathInfo | None = None,
    destination: str = "",
    schemas: Sequence[Schema] = (),
    mask: Mask | None = None,
) -> dict[str, Any]:
    """Everything a template needs; all of it is escaped on output.

    A property or header the broker holds in a form that cannot be shown
    (a timestamp out of range, an x-death entry of odd types) reads as
    "unreadable: ..." where it would be, and the rest shows as usual.
    `destination` (the queue's or stream's name) and, for a dead letter, the
    queue it died in pick which of `schemas` (dashboard.decoding.schemas())
    may read the body. `mask` is applied to what decoding finds (see decoded_view).
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
    info = death_info(message) if death_info is not None else {}
    deaths = info.get("deaths", [])
    places = (destination, str(info.get("queue") or ""))
    found = decoded_view(decode.decode(message.body, schemas, places, message.headers), mask)
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
        "decoded": found,
        **raw_views(message.body, text, found, mask),
        "binary": text is None,
        "size": message.size or len(message.body),
    }


def raw_views(body: bytes, text: str | None, found: Any, mask: Mask | None) -> dict[str, Any]:
    """The hex and base64 of a binary or decoded body. Masking rules that read fields
    cannot find them in an encoding's raw bytes, so a masked reader gets no raw view of a
    decoded body: only its masked decoded structure."""
    if found and mask is not None:
        return {"hex": "", "base64": "", "text": None, "raw_withheld": True}
    if text is None or found:
        return {"hex": hexdump(body), "base64": raw_base64(body)}
    return {"hex": "", "base64": ""}


def raw_base64(data: bytes) -> str:
    return base64.b64encode(data[:HEX_LIMIT]).decode()


def decoded_view(found: Decoded | None, mask: Mask | None = None) -> dict[str, Any] | None:
    """What templates/dashboard/_decoded.html shows of a decoded body; None if none was.

    `mask` (a masking.Masker's `body`) sees the decoded structure as JSON bytes, as it
    would a JSON body: masking the raw bytes of a gzip or Avro body finds nothing to
    mask, so what decoding reveals must be masked here.
    """
    if found is None:
        return None
    if mask is not None:
        found = masked(found, mask)
    text = found.pretty()
    return {
        "encoding": found.encoding,
        "problem": found.problem,
        "text": text[:DECODED_CHARS],
        "cut": len(text) > DECODED_CHARS,
        "length": len(text),
        "shown": DECODED_CHARS,
        # What was inside, when it is no encoding known here (gzip of an image, say).
        "hex": hexdump(found.value) if found.form == "bytes" and found.value else "",
        # Bytes no schema or encoding here could read (a leading zero byte that may be
        # Confluent framing, say): the raw body shows open, as any binary body does.
        "raw_open": found.form == "bytes",
    }


def masked(found: Decoded, mask: Mask) -> Decoded:
    """`found` with its value passed through `mask`; what no longer parses shows as text."""
    if found.form == "bytes":
        return replace(found, value=mask(found.value))
    if found.form == "text":
        return replace(found, value=mask(str(found.value).encode()).decode("utf-8", "replace"))
    data = mask(json.dumps(found.value, ensure_ascii=False).encode())
    try:
        return replace(found, value=json.loads(data))
    except (ValueError, RecursionError):
        return replace(found, form="text", value=data.decode("utf-8", "replace"))


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


def body_parts(
    body: bytes | None,
    destinations: tuple[str, ...] = (),
    headers: Any = None,
    schemas: Sequence[Schema] = (),
    mask: Mask | None = None,
) -> dict[str, Any]:
    """How to show a Kafka record's value: JSON (with an outline), text, or hex and base64.

    Everything here is escaped by the templates; `outline` rows open and close
    <details> elements so that JSON objects and arrays can be collapsed. A body
    brokers.decode recognises is shown decoded too, read with those of `schemas`
    that fit `destinations` (topic, stream, subject) and `headers`.
    """
    if body is None:
        return {"null": True, "text": None, "json": None, "outline": None, "binary": False}
    found = decoded_view(decode.decode(body, schemas, destinations, headers), mask)
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
        "decoded": found,
        **raw_views(body, text, found, mask),
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
