"""Filters over Kafka records: by key, by header, by body (substring, regex or JSON path).

Pure Python, no client library: the browse page, the search runner and the
API compile the same spec with `compile_filters` and apply it to whole lists of
records at once (`Matcher.select`), so a scan of millions of records pays one
list comprehension per filter rather than a function call per record.

Everything is matched on the raw bytes the broker returned: text typed by the
user is encoded as UTF-8, and a regex runs over bytes (so `\\w` and friends
mean ASCII) in RE2, in time linear in the record, whatever the pattern (see
`brokers.linear_regex`; no backreferences or lookaround). The JSON-path subset
is small on purpose and cannot run code:

    $.order.id == 42        dotted names, [index], ["odd key"], then == or !=
    $.items[0].sku != "x"   and a JSON literal: number, "string", true, false, null
    $.customer.email        no comparison: the path exists
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from brokers.linear_regex import PatternError, compile_search

KEY_MODES = ("substring", "exact")
BODY_MODES = ("substring", "regex", "json")
MAX_PATTERN = 500  # characters of a filter; longer ones are refused

# A name written bare after a dot in a path.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
# Names made of these appear verbatim, quoted, in any JSON text holding them,
# unless the producer escaped plain characters as \uXXXX (checked separately).
_VERBATIM = re.compile(r"[A-Za-z0-9 _\-.:@#$%&*+=,;~!?()\[\]{}<>|^']*")


class FilterError(ValueError):
    """A filter that cannot be compiled; the message says what to fix."""


class RecordLike(Protocol):
    """What filters read of a record: kafka-python's ConsumerRecord has these."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


# A filter step: takes records, returns those that pass.
Step = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Matcher:
    """A compiled filter spec; `select` keeps the records that pass every step."""

    spec: dict[str, str]
    steps: tuple[Step, ...] = ()
    # Bytes every matching record holds (in its key, a header or its value),
    # so a batch of records without them holds no match.
    needles: tuple[bytes, ...] = ()
    # The same for a JSON path, unless the text spells characters as \uXXXX.
    json_needles: tuple[bytes, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def unbounded(self) -> bool:
        """True when nothing rules out a batch: every record must be looked at."""
        return not (self.needles or self.json_needles)

    def may_match(self, raw: bytes | bytearray) -> bool:
        """False only if no record stored in `raw` (a batch's records, uncompressed) can pass."""
        if not all(n in raw for n in self.needles):
            return False
        if self.json_needles and b"\\u" not in raw:
            return all(n in raw for n in self.json_needles)
        return True

    def select(self, records: list[Any]) -> list[Any]:
        for step in self.steps:
            if not records:
                break
            records = step(records)
        return records

    def matches(self, record: RecordLike) -> bool:
        return bool(self.select([record]))

    def describe(self) -> str:
        """The spec in words, for pages and audit records."""
        parts = []
        s = self.spec
        if s.get("key"):
            parts.append(f"key {'is' if s.get('key_mode') == 'exact' else 'contains'} {s['key']!r}")
        if s.get("header"):
            value = s.get("header_value")
            parts.append(f"header {s['header']!r}" + (f" is {value!r}" if value else " is present"))
        if s.get("body"):
            verb = {"regex": "matches", "json": "has"}.get(s.get("mode", ""), "contains")
            parts.append(f"body {verb} {s['body']!r}")
        return ", ".join(parts) or "every message"


def clean_spec(data: Any) -> dict[str, str]:
    """The filter fields of a form or JSON object, normalised; FilterError on bad modes."""
    get = data.get if hasattr(data, "get") else (lambda _k, _d=None: None)
    spec: dict[str, str] = {}
    for field in ("key", "header", "header_value", "body"):
        value = get(field) or ""
        if not isinstance(value, str):
            raise FilterError(f"{field} must be text")
        if len(value) > MAX_PATTERN:
            raise FilterError(f"{field} is longer than {MAX_PATTERN} characters")
        if value:
            spec[field] = value
    key_mode = get("key_mode") or "substring"
    mode = get("mode") or "substring"
    if key_mode not in KEY_MODES:
        raise FilterError(f"key_mode must be one of {', '.join(KEY_MODES)}")
    if mode not in BODY_MODES:
        raise FilterError(f"mode must be one of {', '.join(BODY_MODES)}")
    if "key" in spec:
        spec["key_mode"] = key_mode
    if "body" in spec:
        spec["mode"] = mode
    if "header_value" in spec and "header" not in spec:
        raise FilterError("a header value needs the header's name")
    return spec


def compile_filters(data: Any) -> Matcher:
    """A Matcher for a spec (see `clean_spec`); FilterError says what is wrong with it."""
    spec = clean_spec(data)
    steps: list[Step] = []
    needles: list[bytes] = []
    json_needles: list[bytes] = []
    if "header" in spec:
        steps.append(_header_step(spec["header"], spec.get("header_value")))
        needles += [spec["header"].encode(), spec.get("header_value", "").encode()]
    if "key" in spec:
        steps.append(_key_step(spec["key"].encode(), spec["key_mode"] == "exact"))
        needles.append(spec["key"].encode())
    if "body" in spec:
        body, mode = spec["body"], spec["mode"]
        if mode == "substring":
            steps.append(_contains_step(body.encode()))
            needles.append(body.encode())
        elif mode == "regex":
            steps.append(_regex_step(body))
        else:
            path = parse_path(body)
            steps.extend(_json_steps(path))
            json_needles += path.needles()
    return Matcher(
        spec, tuple(steps), tuple(n for n in needles if n), tuple(n for n in json_needles if n)
    )


# -- steps -------------------------------------------------------------------


def _key_step(wanted: bytes, exact: bool) -> Step:
    if exact:
        return lambda rs: [r for r in rs if r.key == wanted]
    return lambda rs: [r for r in rs if r.key is not None and wanted in r.key]


def _header_step(name: str, value: str | None) -> Step:
    if value is None:
        return lambda rs: [r for r in rs if any(k == name for k, _ in r.headers)]
    wanted = value.encode()
    return lambda rs: [r for r in rs if (name, wanted) in r.headers]


def _contains_step(needle: bytes) -> Step:
    return lambda rs: [r for r in rs if r.value is not None and needle in r.value]


def _regex_step(pattern: str) -> Step:
    try:
        found = compile_search(pattern)
    except PatternError as exc:
        raise FilterError(str(exc)) from None
    return lambda rs: [r for r in rs if r.value is not None and found(r.value)]


# -- JSON path ---------------------------------------------------------------

_MISSING = object()


@dataclass(frozen=True)
class JsonPath:
    """`$.a.b[0] == literal`, parsed: steps are str (object key) or int (array index)."""

    steps: tuple[str | int, ...]
    op: str = ""  # "==", "!=" or "" (the path exists)
    literal: Any = None

    def find(self, data: Any) -> Any:
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(data, list) or not -len(data) <= step < len(data):
                    return _MISSING
            elif not isinstance(data, dict) or step not in data:
                return _MISSING
            data = data[step]
        return data

    def test(self, raw: bytes) -> bool:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return False
        found = self.find(data)
        if found is _MISSING:
            return False
        if not self.op:
            return True
        same = _json_equal(found, self.literal)
        return same if self.op == "==" else not same

    def needles(self) -> list[bytes]:
        """Byte strings any matching JSON text contains, unless it uses \\u escapes."""
        out = [f'"{s}"'.encode() for s in self.steps if isinstance(s, str) and _verbatim(s)]
        if self.op == "==":
            lit = self.literal
            if lit is None or isinstance(lit, bool):
                out.append(json.dumps(lit).encode())  # true, false, null: never escaped
            elif isinstance(lit, str) and _verbatim(lit):
                out.append(f'"{lit}"'.encode())
        return out


def _verbatim(text: str) -> bool:
    return bool(text) and _VERBATIM.fullmatch(text) is not None


def _json_equal(a: Any, b: Any) -> bool:
    # In Python True == 1 and 1 == 1.0; in JSON only the second holds.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def parse_path(text: str) -> JsonPath:
    """Parse `$.a.b[0]["c d"] == <JSON literal>`; FilterError points at the mistake."""
    src = text.strip()
    if not src.startswith("$"):
        raise FilterError("a JSON path starts with $, e.g. $.order.id == 42")
    i = 1
    steps: list[str | int] = []
    while i < len(src) and src[i] in ".[":
        if src[i] == ".":
            m = _NAME.match(src, i + 1)
            if not m:
                raise FilterError(f"expected a name after '.' at position {i + 1} of the path")
            steps.append(m.group())
            i = m.end()
            continue
        close = src.find("]", i)
        if close < 0:
            raise FilterError(f"'[' at position {i + 1} is never closed")
        inner = src[i + 1 : close].strip()
        if re.fullmatch(r"-?\d+", inner):
            steps.append(int(inner))
        elif len(inner) >= 2 and inner[0] == inner[-1] == '"':
            try:
                steps.append(json.loads(inner))
            except ValueError:
                raise FilterError(f"bad quoted name {inner} in the path") from None
        else:
            raise FilterError(f'[{inner}] must be an index like [0] or a name like ["a b"]')
        i = close + 1
    rest = src[i:].strip()
    if not rest:
        return JsonPath(tuple(steps))
    op = rest[:2]
    if op not in ("==", "!="):
        raise FilterError(f"expected == or != after the path, found {rest[:10]!r}")
    literal_text = rest[2:].strip()
    try:
        literal = json.loads(literal_text)
    except ValueError:
        raise FilterError(
            f'the value after {op} must be JSON: a number, "a string", true, false or null'
            f" (found {literal_text[:40]!r})"
        ) from None
    if isinstance(literal, (dict, list)):
        raise FilterError("compare with a single value, not an object or array")
    return JsonPath(tuple(steps), op, literal)


def _json_steps(path: JsonPath) -> list[Step]:
    steps: list[Step] = []
    needles = path.needles()
    if needles:
        # Cheap test on the raw bytes before parsing: a JSON text that holds
        # the path and the value must contain these, unless it spelled
        # characters as \uXXXX, which sends it on to the full parse.
        def prefilter(rs: list[Any]) -> list[Any]:
            return [
                r
                for r in rs
                if r.value is not None and (b"\\u" in r.value or all(n in r.value for n in needles))
            ]

        steps.append(prefilter)
    test = path.test
    steps.append(lambda rs: [r for r in rs if r.value is not None and test(r.value)])
    return steps
