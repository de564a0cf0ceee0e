"""Dead letters on any kind: which a job selects, what a look keeps of them, how they group.

Where a dead letter came from is the kind's to say (`Kind.death_info`: x-death
headers for RabbitMQ, origin headers for Kafka, advisories for NATS); these
functions take that reading and touch no broker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from brokers import decode, readable
from brokers.base import Message
from brokers.readable import Unreadable
from brokers.schemas import Schema
from dashboard import decoding
from dashboard.models import DeadLetterScan


def text_of(body: bytes | None) -> str | None:
    """`body` as text when it is UTF-8; None when it is not, or is None."""
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


# A kind's reading of a dead letter (Kind.death_info): reason, original queue,
# exchange, routing key, count, time (Unix s) and, for RabbitMQ, its deaths.
DeathInfo = Callable[[Message], dict[str, Any]]


def matches(
    message: Message, rule: dict[str, Any], death_info: DeathInfo, schemas: Sequence[Schema] = ()
) -> bool:
    """Whether a message passes a filter: every given field must hold.

    `schemas` (dashboard.decoding.schemas()) read Avro and Protobuf bodies for
    `body_contains`; MessagePack, CBOR and compressed bodies need none.
    """
    info = death_info(message)
    for field in ("reason", "queue", "exchange", "routing_key"):
        wanted = rule.get(field)
        if wanted not in (None, "") and str(info.get(field, "")) != str(wanted):
            return False
    header = rule.get("header")
    if header:
        name, value = header.get("name", ""), header.get("value")
        if name not in message.headers:
            return False
        if value not in (None, "") and str(message.headers[name]) != str(value):
            return False
    needle = rule.get("body_contains")
    if needle and not body_contains(message, needle, info, schemas):
        return False
    since, until = rule.get("since"), rule.get("until")
    if since is not None or until is not None:
        when = readable.seconds(info.get("time"))
        if when is None:
            return False
        if since is not None and when < int(since):
            return False
        if until is not None and when > int(until):
            return False
    return True


def body_contains(
    message: Message, needle: str, info: dict[str, Any], schemas: Sequence[Schema] = ()
) -> bool:
    """Whether the body holds `needle`, as bytes or in its decoded structure (as JSON text).

    Decoding is tried only for a body that is compressed or not plain text, so a
    filter over text bodies costs what it did. Schemas are matched on the queue,
    topic or stream the message died in (`info["queue"]`) and its headers.
    """
    if needle.encode() in message.body:
        return True
    if not decode.worth_decoding(message.body):
        return False
    origin = str(info.get("queue") or "")
    found = decode.decode(message.body, schemas, (origin,), message.headers)
    return found is not None and needle in found.searchable()


def selector(selection: dict[str, Any], death_info: DeathInfo) -> Callable[[Message], bool]:
    """The test a job applies to each message, built once per job (ids become a set)."""
    if selection.get("all"):
        return lambda message: True
    if "ids" in selection:
        ids = frozenset(selection["ids"])
        return lambda message: message.id in ids
    if "filter" in selection:
        rule = selection["filter"]
        # Read once per job: a schema uploaded meanwhile applies to the next one.
        schemas = decoding.schemas() if rule.get("body_contains") else ()
        return lambda message: matches(message, rule, death_info, schemas)
    return lambda message: False


FILTER_FIELDS = {
    "reason",
    "queue",
    "exchange",
    "routing_key",
    "header",
    "body_contains",
    "since",
    "until",
}


def check_selection(selection: Any) -> dict[str, Any]:
    """The selection if it is well formed; ValueError saying what is wrong otherwise."""
    if not isinstance(selection, dict) or len(selection) != 1:
        raise ValueError('selection must be {"all": true}, {"ids": [...]} or {"filter": {...}}')
    if "all" in selection:
        if selection["all"] is not True:
            raise ValueError('selection "all" must be true')
    elif "ids" in selection:
        ids = selection["ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ValueError('selection "ids" must be a non-empty list of message ids')
        if len(ids) > 10000:
            raise ValueError("select at most 10,000 messages by id; use a filter for more")
    elif "filter" in selection:
        rule = selection["filter"]
        if not isinstance(rule, dict) or not rule:
            raise ValueError("a filter needs at least one field")
        unknown = set(rule) - FILTER_FIELDS
        if unknown:
            raise ValueError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        for field in ("reason", "queue", "exchange", "routing_key", "body_contains"):
            if rule.get(field) is not None and not isinstance(rule[field], str):
                raise ValueError(f'filter "{field}" must be text')
        header = rule.get("header")
        if header is not None and (
            not isinstance(header, dict)
            or not isinstance(header.get("name"), str)
            or not header["name"]
            or not isinstance(header.get("value", ""), str | None)
        ):
            raise ValueError('filter "header" must be {"name": "...", "value": "..."}')
        for bound in ("since", "until"):
            if rule.get(bound) is not None and not isinstance(rule[bound], int):
                raise ValueError(f'filter "{bound}" must be Unix seconds')
    else:
        raise ValueError('selection must be {"all": true}, {"ids": [...]} or {"filter": {...}}')
    return selection


def check_choice(
    data: dict[str, Any], selection: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job's selection (`selection` if already read, else from `data`) and edit, checked.

    ValueError saying what is wrong, including an edit of a message the
    selection does not name alone.
    """
    if selection is None:
        selection = check_selection(data.get("selection", {"all": True}))
    edit = check_edit(data["edit"]) if data.get("edit") else {}
    if edit and selection.get("ids") != [edit["id"]]:
        raise ValueError("an edit applies to one message: select exactly that message by id")
    return selection, edit


def apply_edit(
    edit: dict[str, Any], message: Message, headers: dict[str, Any]
) -> tuple[bytes | None, dict[str, Any]]:
    """The edited body and headers for one message. Broker headers (x-...) stay as they were."""
    body = base64.b64decode(edit["body_base64"]) if "body_base64" in edit else None
    if "headers" in edit:
        # Kept as they are: the broker's and Sluice's own headers, and binary values
        # the edit does not name (an edit form shows only text and JSON values).
        broker_owned = {
            k: v
            for k, v in headers.items()
            if k.lower().startswith("x-")
            or k.startswith("sluice-")
            or (isinstance(v, bytes) and k not in edit["headers"])
        }
        edited = {
            k: v for k, v in edit["headers"].items() if not k.lower().startswith(("x-", "sluice-"))
        }
        headers = {**edited, **broker_owned}
    return body, headers


def edit_from_form(post: Any) -> dict[str, Any]:
    """The edit the edit form posts (edit_id, edit_body, edit_headers), its body's line
    breaks already as shown (views.params.typed). ValueError if the headers are not JSON."""
    edit: dict[str, Any] = {"id": post["edit_id"]}
    if "edit_body" in post:
        edit["body_base64"] = base64.b64encode(post["edit_body"].encode("utf-8")).decode()
    if post.get("edit_headers", "").strip():
        try:
            edit["headers"] = json.loads(post["edit_headers"])
        except ValueError as exc:
            raise ValueError(f"the headers must be a JSON object: {exc}") from None
        except RecursionError:
            raise ValueError("the headers are nested too deeply") from None
    return edit


def check_edit(edit: Any) -> dict[str, Any]:
    if not isinstance(edit, dict) or not isinstance(edit.get("id"), str):
        raise ValueError('edit must be {"id": ..., "body_base64"?: ..., "headers"?: {...}}')
    if "body_base64" in edit:
        try:
            base64.b64decode(edit["body_base64"], validate=True)
        except (ValueError, TypeError):
            raise ValueError("edit body_base64 is not valid base64") from None
    if "headers" in edit:
        if not isinstance(edit["headers"], dict):
            raise ValueError("edit headers must be an object")
        owned = [k for k in edit["headers"] if k.lower().startswith(("x-", "sluice-"))]
        if owned:
            raise ValueError(
                f"headers owned by the broker or Sluice cannot be edited: {', '.join(owned)}"
            )
    return edit


def latest_scans(broker: Any) -> dict[str, Any]:
    """The latest look at each dead-letter queue or topic, by its key (of the last 500 looks)."""
    scans: dict[str, Any] = {}
    for scan in DeadLetterScan.objects.filter(broker=broker).order_by("-at")[:500]:
        scans.setdefault(scan.queue, scan)
    return scans


def summary(message: Message, death_info: DeathInfo) -> dict[str, Any]:
    """What the dead-letters page keeps of a message: enough to group, filter and pick it."""
    info = death_info(message)
    text = text_of(message.body)
    preview = (text if text is not None else message.body[:64].hex(" "))[:200]
    return {
        "id": message.id,
        "reason": info["reason"],
        "queue": info["queue"],
        "exchange": info["exchange"],
        "routing_key": info["routing_key"],
        "time": info["time"],
        "count": info["count"],
        "size": message.size or len(message.body),
        # Every header but the death history (kept above, in its parts), so
        # that grouping can use any of them, `x-exception` included.
        "headers": {
            k: _plain(v)
            for k, v in message.headers.items()
            if k != "x-death" and not k.startswith("x-first-death-")
        },
        "preview": preview,
        "binary": text is None,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return json.dumps(value, default=str)
    except (RecursionError, ValueError):  # nested deeper than a page can show
        return str(readable.unreadable("nested too deep to show", type(value).__name__))


GROUPS = {
    "reason": "reason",
    "queue": "original queue",
    "exchange": "original exchange",
    "routing_key": "routing key",
}


def groups(messages: list[dict[str, Any]], by: str, header: str = "") -> list[tuple[str, int]]:
    """Counts per value of `by` (a GROUPS key, or "header" with `header` named), largest first."""
    counts: dict[str, int] = {}
    for m in messages:
        value = m.get("headers", {}).get(header, "(none)") if by == "header" else m.get(by, "")
        counts[str(value) if value not in ("", None) else "(none)"] = (
            counts.get(str(value) if value not in ("", None) else "(none)", 0) + 1
        )
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def when(ts: Any) -> datetime | Unreadable | None:
    """Unix seconds as a UTC datetime; Unreadable out of range; None for none (or 0)."""
    return readable.utc_time(ts) if ts else None
