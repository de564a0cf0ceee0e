"""Regular expressions typed by users, run over bytes in time linear in the text (RE2).

A filter's pattern runs over every record a page or a search reads. Python's
`re` backtracks: `(a+)+$` over 25 bytes takes seconds, doubling with each
byte, while the request holds a worker and the server's other requests wait.
RE2 (google-re2) never backtracks, so a search costs the same whatever the
pattern; what it cannot run that way (backreferences, lookaround) it refuses.

Patterns are compiled as Latin-1, so that, as with a bytes pattern in `re`,
text typed is matched as its UTF-8 bytes, `.` is one byte, and `\\w`, `\\d`,
`\\s` and `\\b` are ASCII. Unlike `re`, `$` matches only at the very end (no
final newline allowance) and `\\Z` is spelled `\\z`.

Every user-supplied pattern in Sluice is compiled here: `compile_search`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import re2

MAX_REPEAT = 1000  # RE2's limit for {n,m}; larger counts it reads as literal text
MAX_MEMORY = 8 << 20  # bytes one compiled pattern may use (RE2's default)

# A {n} or {n,m} repeat, or an escaped character (consumed so that \{ is skipped).
_REPEAT = re.compile(r"\\.|\{(\d+)(?:,(\d*))?\}", re.DOTALL)
# What RE2 says, and what it means to someone who wrote a Python or PCRE pattern.
_HINTS = (
    ("invalid escape sequence: \\1", "backreferences like \\1 are not supported"),
    ("invalid escape sequence: \\2", "backreferences like \\1 are not supported"),
    ("invalid escape sequence: \\Z", "write \\z for the end of the text"),
    ("invalid perl operator: (?=", "lookahead (?=...) is not supported"),
    ("invalid perl operator: (?!", "lookahead (?!...) is not supported"),
    ("invalid perl operator: (?<", "lookbehind (?<=...) is not supported"),
    ("invalid perl operator: (?P", "named backreferences (?P=name) are not supported"),
    ("invalid repetition size", f"repeats nested in repeats may come to {MAX_REPEAT} at most"),
    ("pattern too large", "it is too large to run within the memory allowed"),
)


class PatternError(ValueError):
    """A pattern that cannot be run; the message names the problem for the person who typed it."""


def _options() -> re2.Options:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = MAX_MEMORY
    options.log_errors = False  # a user's typo is not worth a line in the server's log
    return options


def compile_search(pattern: str) -> Callable[[bytes], bool]:
    """A test "does `pattern` occur anywhere in these bytes"; PatternError if it cannot run."""
    for m in _REPEAT.finditer(pattern):
        counts = [int(n) for n in m.groups() if n]
        if any(n > MAX_REPEAT for n in counts):
            raise PatternError(
                f"the regular expression is not valid: {m.group()} repeats more than"
                f" {MAX_REPEAT} times, the most allowed"
            )
    try:
        compiled = re2.compile(pattern.encode(), _options())
    except re2.error as exc:
        raise PatternError(f"the regular expression is not valid: {_explain(exc)}") from None
    search = compiled.search
    return lambda data: search(data) is not None


def _explain(exc: Exception) -> str:
    said = exc.args[0] if exc.args else ""
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    hint = next((h for key, h in _HINTS if key in text), "")
    return f"{text} ({hint})" if hint else text
