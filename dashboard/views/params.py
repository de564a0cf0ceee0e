"""Reading request parameters for the message pages and their APIs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

MAX_BODY = 16 * 1024 * 1024  # what the publish form accepts
LAST_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, the last time a page can show


class BadInput(ValueError):
    """A parameter that cannot be used; the message says which and why."""


def parse_json(text: str | bytes) -> Any:
    """JSON from a request, or ValueError: nesting deeper than Python's recursion limit
    (valid JSON, but no parser here can hold it) is refused like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


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


def text(data: dict[str, Any], name: str, default: str = "") -> str:
    """The JSON field `name` as text: absent or null gives `default`, another type is refused."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text, not {type(value).__name__}")
    return value


def slice_bounds(params: Any, total_limit: int = 100_000) -> tuple[int, int | None]:
    """?offset= and ?limit= of a listing: offset from 0, limit from 1 (absent: no limit)."""
    offset = whole(params, "offset", 0, 0, 10**9) or 0
    return offset, whole(params, "limit", None, 1, total_limit)


def header_pairs(raw: Any) -> list[tuple[Any, Any]]:
    """Headers as given to a publish form or API, unchecked: a JSON text or value, either
    an object {"name": "value" or ["v1", "v2"]} or a list of [name, value] pairs (names
    may repeat either way). The caller checks the names and values its broker allows."""
    if isinstance(raw, str):
        if not raw.strip():
            return []
        try:
            raw = parse_json(raw)
        except ValueError as exc:
            raise BadInput(f"headers must be JSON: {exc}") from None
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [(k, item) for k, v in raw.items() for item in (v if isinstance(v, list) else [v])]
    if isinstance(raw, list):
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
            raise BadInput("each header must be a [name, value] pair")
        return [(p[0], p[1]) for p in raw]
    raise BadInput('headers must be a JSON object {"name": "value"} or a list of pairs')


def json_object(request: Any) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is {})."""
    try:
        data = parse_json(request.body or b"{}")
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadInput(f"the body must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object")
    return data


def typed(post: Any, name: str = "body") -> Any:
    """The form `post` with the textarea `name` as it was typed or shown. A browser sends
    a textarea's line breaks as CRLF: they become LF again, unless the form says the
    text had CRLF itself (a hidden `<name>_crlf`). The JSON APIs take text as it is."""
    text = post.get(name)
    if not isinstance(text, str) or "\r\n" not in text or post.get(f"{name}_crlf"):
        return post
    out = post.copy()
    out[name] = text.replace("\r\n", "\n")
    return out


def parse_body(kind: str, raw: str) -> bytes:
    if kind == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except (ValueError, TypeError):
            raise ValueError("the body is not valid base64") from None
    if kind == "json":
        try:
            parse_json(raw)
        except ValueError as exc:
            raise ValueError(f"the body is not valid JSON: {exc}") from None
    return raw.encode("utf-8")


def parse_headers(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        headers = parse_json(raw)
    except ValueError as exc:
        raise ValueError(f"headers must be a JSON object: {exc}") from None
    if not isinstance(headers, dict):
        raise ValueError("headers must be a JSON object")
    return headers


def parse_time(raw: str) -> int:
    """Milliseconds since the epoch from Unix milliseconds or an ISO 8601 time (UTC if no zone)."""
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():  # not "²": isdigit() alone takes any digit
        if len(raw) > len(str(LAST_MS)) or int(raw) > LAST_MS:
            raise BadInput("time must be before the year 10000 (UTC)")
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"time must be like 2026-05-01T12:00 (UTC) or Unix milliseconds, not {raw[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    if ms < 0:
        raise BadInput("time must be after 1970")
    if ms > LAST_MS:
        raise BadInput("time must be before the year 10000 (UTC)")
    return ms
