"""Masking: what viewers (and, where a rule says so, operators) must not see of a message.

Rules come from the broker file (SLUICE_CONFIG), reviewed like the rest of it:

    [[mask]]
    name = "cards"
    broker = "rabbit-prod"          # optional: every broker
    destinations = ["orders*"]      # optional: every destination (fnmatch, name or key)
    json_paths = ["$.card.number", "$..email"]
    headers = ["authorization", "x-customer-email"]
    patterns = ["card", "email", "\\\\b\\\\d{3}-\\\\d{2}-\\\\d{4}\\\\b"]
    operators = true                # also for operators; viewers always

A JSON path names values in a JSON body (`$.a.b`, `$.a[0]`, `$.a[*].b`, and
`$..b` for `b` at any depth); a header rule, a header's value by its name
(any case); a pattern, text anywhere in the body, the headers or the
properties: `card` and `email` are built in, anything else is a regular
expression run in linear time (RE2). A masked value reads MASK.

Masking changes what is shown, never what is sent: it makes a masked copy of
a message for a page, an API answer, a tail, a search result or an export,
and replays, moves and imports copy the original bytes. Admins see masked
values too, unless they opt in to raw values for their session, which is
audited (`views.pages.raw_values`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import re2
from django.conf import settings

from brokers.base import Message
from brokers.linear_regex import MAX_REPEAT, PatternError, _options

log = logging.getLogger(__name__)

MASK = "••••"
MASK_BYTES = MASK.encode()
HIDDEN = b"(withheld: masking rules apply, and this part of the body cannot be read as JSON)"
PRESETS = {
    # 13 to 19 digits, in groups split by spaces or dashes: card numbers (PANs).
    "card": r"\b\d(?:[ -]?\d){12,18}\b",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
}
RAW_SESSION_KEY = "sluice_raw_values"
NO_EDIT = (
    "Masking rules apply to this message for you, so it cannot be edited here: a replay "
    "of an edited copy would send what you saw, masks included. Replay it unedited, or "
    "ask an admin, who may opt in to raw values."
)
WITHHELD = (
    "Masking rules apply to this message, and its body is not text they can read: "
    "it is not downloaded. An admin may opt in to raw values on the Masking page."
)  # set when an admin opted in to raw values


class MaskError(ValueError):
    """A rule that cannot be used; the message says which and why."""


# -- JSON paths ------------------------------------------------------------------

_STEP = re.compile(r"\.\.([^.\[\]]+)|\.([^.\[\]]+)|\[(\d+|\*)\]")


def parse_path(text: str) -> tuple[tuple[str, str], ...]:
    """`$.a[0].b`, `$..b`, `$.a[*]` as steps: ("key", "a"), ("index", "0"), ("any", "*"),
    ("deep", "b"); MaskError if it is not one."""
    if not text.startswith("$") or text == "$":
        raise MaskError(f"JSON path {text!r} must start with $ and name something, e.g. $.card")
    steps: list[tuple[str, str]] = []
    at = 1
    for m in _STEP.finditer(text, 1):
        if m.start() != at:
            break
        deep, key, index = m.groups()
        if deep is not None:
            steps.append(("deep", deep))
        elif key is not None:
            steps.append(("any", "*") if key == "*" else ("key", key))
        else:
            steps.append(("any", "*") if index == "*" else ("index", index))
        at = m.end()
    if at != len(text):
        raise MaskError(f"JSON path {text!r}: cannot read it from {text[at:]!r} on")
    return tuple(steps)


def _mask_at(value: Any, steps: tuple[tuple[str, str], ...]) -> tuple[Any, bool]:
    """`value` with what `steps` name replaced by MASK, and whether anything was."""
    if not steps:
        return MASK, True
    (how, name), rest = steps[0], steps[1:]
    changed = False
    if how == "deep":
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k == name:
                    v, hit = _mask_at(v, rest)
                else:
                    v, hit = _mask_at(v, steps)
                out[k], changed = v, changed or hit
            return out, changed
        if isinstance(value, list):
            items = [_mask_at(v, steps) for v in value]
            return [v for v, _ in items], any(hit for _, hit in items)
        return value, False
    if isinstance(value, dict):
        keys = list(value) if how == "any" else ([name] if how == "key" and name in value else [])
        if not keys:
            return value, False
        out = dict(value)
        for k in keys:
            out[k], hit = _mask_at(value[k], rest)
            changed = changed or hit
        return out, changed
    if isinstance(value, list):
        if how == "any":
            places = range(len(value))
        elif how == "index" and int(name) < len(value):
            places = range(int(name), int(name) + 1)
        else:
            return value, False
        out_list = list(value)
        for i in places:
            out_list[i], hit = _mask_at(value[i], rest)
            changed = changed or hit
        return out_list, changed
    return value, False


# -- rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    broker: str = ""  # "" for every broker
    destinations: tuple[str, ...] = ()  # () for every destination
    json_paths: tuple[tuple[tuple[str, str], ...], ...] = ()
    headers: frozenset[str] = frozenset()  # lower case
    patterns: tuple[Callable[[bytes], bytes], ...] = ()
    operators: bool = False

    def covers(self, broker: str, destination: str) -> bool:
        if self.broker and self.broker != broker:
            return False
        return not self.destinations or any(
            fnmatch.fnmatchcase(destination, p) for p in self.destinations
        )


def _replacer(pattern: str) -> Callable[[bytes], bytes]:
    text = PRESETS.get(pattern, pattern)
    if any(int(n) > MAX_REPEAT for n in re.findall(r"\{(\d+)", text)):
        raise MaskError(f"pattern {pattern!r} repeats more than {MAX_REPEAT} times")
    try:
        compiled = re2.compile(text.encode(), _options())
    except re2.error as exc:
        raise MaskError(
            f"pattern {pattern!r} is not a regular expression RE2 runs: {exc}"
        ) from None
    sub = compiled.sub
    return lambda data: sub(MASK_BYTES, data)


def _strings(raw: dict[str, Any], key: str, label: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MaskError(f"{label}: {key} must be a list of text")
    return tuple(value)


def rule_from(raw: Any, label: str) -> Rule:
    """One [[mask]] table as a Rule; MaskError saying what is wrong."""
    if not isinstance(raw, dict):
        raise MaskError(f"{label}: write it as a [[mask]] table")
    unknown = set(raw) - {
        "name", "broker", "destinations", "json_paths", "headers", "patterns", "operators",
    }  # fmt: skip
    if unknown:
        raise MaskError(f"{label}: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MaskError(f"{label}: needs a name")
    operators = raw.get("operators", False)
    if not isinstance(operators, bool):
        raise MaskError(f"{label}: operators must be true or false")
    broker = raw.get("broker", "")
    if not isinstance(broker, str):
        raise MaskError(f"{label}: broker must be a broker's name")
    try:
        paths = tuple(parse_path(p) for p in _strings(raw, "json_paths", label))
        patterns = tuple(_replacer(p) for p in _strings(raw, "patterns", label))
    except (MaskError, PatternError) as exc:
        raise MaskError(f"{label}: {exc}") from None
    rule = Rule(
        name=name,
        broker=broker,
        destinations=_strings(raw, "destinations", label),
        json_paths=paths,
        headers=frozenset(h.lower() for h in _strings(raw, "headers", label)),
        patterns=patterns,
        operators=operators,
    )
    if not (rule.json_paths or rule.headers or rule.patterns):
        raise MaskError(f"{label}: masks nothing: give json_paths, headers or patterns")
    return rule


def read_rules(path: str | Path) -> list[Rule]:
    """The [[mask]] tables of the broker file; MaskError if one is wrong."""
    data = tomllib.loads(Path(path).read_text())
    tables = data.get("mask", [])
    if not isinstance(tables, list):
        raise MaskError("write each mask rule as a [[mask]] table")
    return [rule_from(raw, f"[[mask]] #{n}") for n, raw in enumerate(tables, start=1)]


_cache: dict[str, Any] = {"key": None, "rules": []}


def rules() -> list[Rule]:
    """The file's rules, read again when it changes. A file whose rules cannot be read
    masks everything it can (every pattern and header of the last good read) and logs why."""
    path = settings.SLUICE_CONFIG
    if not path:
        return []
    try:
        stat = Path(path).stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        return list(_cache["rules"])
    if _cache["key"] != key:
        try:
            _cache["rules"] = read_rules(path)
        except (MaskError, OSError, tomllib.TOMLDecodeError) as exc:
            log.error("mask rules in %s not read, the last ones stay: %s", path, exc)
        _cache["key"] = key
    return list(_cache["rules"])


# -- who sees what ---------------------------------------------------------------


class Masker:
    """What one reader may see of one destination's messages: `message(m)` masks a copy."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.headers = frozenset().union(*(r.headers for r in rules)) if rules else frozenset()
        self.paths = [p for r in rules for p in r.json_paths]
        self.patterns = [p for r in rules for p in r.patterns]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def body(self, data: bytes) -> bytes:
        """The body with what the rules name masked. A body that looks like JSON but
        does not read as JSON (cut short for a preview, say) cannot have its fields
        found, so with JSON paths to mask it is withheld whole: HIDDEN."""
        if not self.rules or not data:
            return data
        if self.paths and data.lstrip()[:1] in (b"{", b"["):
            try:
                value = json.loads(data)
            except (ValueError, RecursionError, UnicodeDecodeError):
                return HIDDEN
            changed = False
            for steps in self.paths:
                value, hit = _mask_at(value, steps)
                changed = changed or hit
            if changed:
                data = json.dumps(value, ensure_ascii=False).encode()
        for sub in self.patterns:
            data = sub(data)
        return data

    def shown(self, value: Any) -> Any:
        """Any JSON-like structure a page or API answer holds of messages (search results,
        dead-letter summaries), with every text in it masked as a body would be."""
        if not self.rules:
            return value
        if isinstance(value, dict):
            return {k: self.value(str(k), v) for k, v in value.items()}
        return self.value("", value)

    def value(self, name: str, value: Any) -> Any:
        """A header's or property's value as this reader may see it."""
        if name.lower() in self.headers:
            return MASK
        if not self.patterns:
            return value
        if isinstance(value, str):
            return self.body(value.encode()).decode("utf-8", "replace")
        if isinstance(value, bytes):
            return self.body(value)
        if isinstance(value, list):
            return [self.value(name, v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(str(k), v) for k, v in value.items()}
        return value

    def raw(self, name: str, value: bytes | None) -> bytes | None:
        """A header's or key's bytes as this reader may see them."""
        if value is None or not self.rules:
            return value
        shown = self.value(name, value)
        return shown.encode() if isinstance(shown, str) else shown

    def download(self, data: bytes) -> bytes | None:
        """A whole body to download as this reader may see it; None when it cannot be
        masked: bytes that are not text may be an encoding whose fields no rule can find."""
        if not self.rules:
            return data
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self.body(data)

    @property
    def mask(self) -> Callable[[bytes], bytes] | None:
        """What messageview applies to a decoded body: None when nothing is masked."""
        return self.body if self.rules else None

    def message(self, message: Message) -> Message:
        if not self.rules:
            return message
        body = self.body(message.body)
        return replace(
            message,
            body=body,
            headers={k: self.value(k, v) for k, v in message.headers.items()},
            properties={k: self.value(k, v) for k, v in message.properties.items()},
            routing_key=str(self.value("routing_key", message.routing_key)),
            truncated=message.truncated,
        )


NONE = Masker([])


def masker(user: Any, broker: str, destination: str, raw: bool = False) -> Masker:
    """What `user` may see of `destination` on `broker`: viewers get every rule that covers
    it, operators those marked `operators`, admins the same unless `raw` (their opt-in)."""
    from dashboard.auth import ADMIN, OPERATOR, has_role

    if raw and has_role(user, ADMIN):
        return NONE
    operator = has_role(user, OPERATOR)
    found = [r for r in rules() if r.covers(broker, destination) and (r.operators or not operator)]
    return Masker(found) if found else NONE


def for_request(request: Any, broker: str, destination: str) -> Masker:
    """`masker` for the signed-in user of `request`, with an admin's opt-in from the session."""
    session = getattr(request, "session", None)
    raw = bool(session.get(RAW_SESSION_KEY)) if session is not None else False
    return masker(request.user, broker, destination, raw)


# Fields of a listed dead letter that pick it for an action: shown as they are.
PICKS = ("id", "advisory", "seq", "position", "time", "dead_at", "stored_at", "size", "count")


def rows(maskers: Callable[[str], Masker], listed: list[dict[str, Any]], place: Any) -> list[Any]:
    """Listed dead letters (the dicts a dead-letters page shows), each masked for the reader
    by `maskers(place(row))`; the fields that pick a message for an action stay as they are."""
    out = []
    for row in listed:
        masker = maskers(str(place(row)))
        if masker:
            shown = masker.shown({k: v for k, v in row.items() if k not in PICKS})
            row = {**row, **shown}
        out.append(row)
    return out


def cached(request: Any, broker: str) -> Callable[[str], Masker]:
    """`for_request` for each destination asked, worked out once per request."""
    seen: dict[str, Masker] = {}

    def get(destination: str) -> Masker:
        if destination not in seen:
            seen[destination] = for_request(request, broker, destination)
        return seen[destination]

    return get
