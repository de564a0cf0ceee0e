"""A corpus of hostile request parameters, and a way to learn which ones a view reads.

Used by the "no 500 anywhere" test: every route is asked once with nothing, the
parameters it reads are recorded (query string, form and JSON body alike), and then
each of them is sent every value below, one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

DEEP = 5000  # deeper than Python's recursion limit, as the probe sent

# Query-string and form values: negative, huge, non-numeric digits, unicode,
# nested JSON, catastrophic and oversized regexes, over-long names, control bytes.
TEXT_VALUES = [
    "-1",
    "0",
    "-99999999999999999999",
    str(10**23),
    str(10**30),
    str(2**63),
    "99999999999999999999",
    "1e309",
    "NaN",
    "-inf",
    "1.5",
    "²",
    "١٢٣",
    "",
    " ",
    "x" * 300,
    "ünïcødé ☃ 😀",
    "a/b%2F..#?&",
    "..%2f..%2f",
    "\x00\x01\x7f",
    "\r\n\tx",
    "=1+1",
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[]",
    "{}",
    "null",
    '{"x": [1, {"y": null}]}',
    "(a+)+$",
    "a{4294967296}",
    "(?P<x>",
    "<script>alert(1)</script>",
    "2026-13-45T99:99:99",
    "9999-12-31T23:59:59",
]

# Values for the keys of a JSON body: wrong types, huge, nested, empty.
JSON_VALUES: list[Any] = [
    None,
    True,
    -1,
    10**30,
    -(10**30),
    1.5,
    float("1e308"),
    "",
    "x" * 300,
    "²",
    "(a+)+$",
    [],
    [[1, 2], {"a": None}],
    {},
    {"a": {"b": [None]}},
    ["x"] * 3,
]

# Whole JSON bodies that are not what any API takes.
JSON_BODIES = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[]",
    b'"text"',
    b"1e999",
    b"null",
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
]

# Path segments: odd names a broker may hold, and ones it never would.
PATH_VALUES = [
    "no-such-thing",
    "%25",
    "%23hash",
    "sp%20ace",
    "%C3%BCn%C3%AFc%C3%B8d%C3%A9",
    "x" * 300,
    "..",
    "%00",
    "-1",
    str(10**30),
]


class Recorder:
    """The parameter names views read while it records, and the body it records JSON for."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.json_keys: set[str] = set()
        self.body: bytes | None = None


class _RecordingDict(dict):
    recorder: Recorder | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)

    def _note(self, key: Any) -> None:
        if self.recorder is not None and isinstance(key, str):
            self.recorder.json_keys.add(key)


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record the QueryDict keys and the request-body JSON keys that views look up."""
    recorder = Recorder()
    original_loads = json.loads

    def note(key: Any) -> None:
        if isinstance(key, str):
            recorder.names.add(key)

    def get(self: QueryDict, key: str, default: Any = None) -> Any:
        note(key)
        return MultiValueDict.get(self, key, default)

    def getitem(self: QueryDict, key: str) -> Any:
        note(key)
        return MultiValueDict.__getitem__(self, key)

    def getlist(self: QueryDict, key: str, default: Any = None) -> Any:
        note(key)
        return MultiValueDict.getlist(self, key, default)

    def contains(self: QueryDict, key: object) -> bool:
        note(key)
        return dict.__contains__(self, key)

    def loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        body = recorder.body
        if body is not None and s in (body, body.decode("utf-8", "replace")) and not kwargs:
            _RecordingDict.recorder = recorder
            return original_loads(s, object_hook=_RecordingDict)
        return original_loads(s, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QueryDict, "get", get)
        patch.setattr(QueryDict, "__getitem__", getitem)
        patch.setattr(QueryDict, "getlist", getlist)
        patch.setattr(QueryDict, "__contains__", contains)
        patch.setattr(json, "loads", loads)
        try:
            yield recorder
        finally:
            _RecordingDict.recorder = None
