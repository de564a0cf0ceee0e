"""How a message is shown: properties, headers, the x-death history, and its body as JSON, text or bytes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from brokers.base import Message
from dashboard import deadletters

HEX_LIMIT = 4096  # bytes of a binary body shown as hex


def hexdump(data: bytes) -> str:
    lines = []
    for at in range(0, min(len(data), HEX_LIMIT), 16):
        chunk = data[at : at + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def shown(message: Message) -> dict[str, Any]:
    """Everything a template needs; all of it is escaped on output."""
    text = deadletters.text_of(message.body)
    pretty = None
    if text is not None and text.strip()[:1] in ("{", "["):
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = None
    props = dict(message.properties)
    if isinstance(props.get("timestamp"), int):
        props["timestamp"] = (
            f"{props['timestamp']} ({datetime.fromtimestamp(props['timestamp'], UTC):%Y-%m-%d %H:%M:%S} UTC)"
        )
    deaths = []
    for d in deadletters.death_info(message)["deaths"]:
        if isinstance(d, dict):
            t = d.get("time")
            deaths.append(
                {
                    **d,
                    "when": datetime.fromtimestamp(t, UTC) if isinstance(t, (int, float)) else None,
                }
            )
    return {
        "m": message,
        "properties": props,
        "headers": {k: v for k, v in message.headers.items() if k != "x-death"},
        "deaths": deaths,
        "text": text,
        "json": pretty,
        "hex": hexdump(message.body) if text is None else "",
        "base64": base64.b64encode(message.body[:HEX_LIMIT]).decode() if text is None else "",
        "binary": text is None,
        "size": message.size or len(message.body),
    }
