"""Mask rules: read from the broker file, checked at start, and what each role sees."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from brokers.base import Message
from dashboard import config, masking
from dashboard.masking import MASK, Masker, MaskError, parse_path, rule_from

CARD = "4111 1111 1111 1111"


def rule(**kw: Any) -> masking.Rule:
    return rule_from({"name": "r", **kw}, "[[mask]] #1")


def test_json_paths_mask_what_they_name_and_nothing_else() -> None:
    body = {
        "card": {"number": CARD, "brand": "visa"},
        "items": [{"pan": "1"}, {"pan": "2", "sku": "x"}],
        "customer": {"contact": {"email": "ann@example.com"}, "name": "Ann"},
        "list": [10, 20],
    }
    m = Masker([rule(json_paths=["$.card.number", "$.items[*].pan", "$..email", "$.list[1]"])])
    got = json.loads(m.body(json.dumps(body).encode()))
    assert got["card"] == {"number": MASK, "brand": "visa"}
    assert got["items"] == [{"pan": MASK}, {"pan": MASK, "sku": "x"}]
    assert got["customer"] == {"contact": {"email": MASK}, "name": "Ann"}
    assert got["list"] == [10, MASK]
    # A path that names nothing leaves the body as it was, byte for byte.
    same = b'{"a": 1,  "b": [2]}'
    assert Masker([rule(json_paths=["$.zzz"])]).body(same) == same


def test_patterns_mask_text_anywhere_even_in_binary_or_broken_json() -> None:
    m = Masker([rule(patterns=["card", "email"])])
    text = f"paid with {CARD} by ann@example.com, order 12345".encode()
    assert m.body(text) == f"paid with {MASK} by {MASK}, order 12345".encode()
    binary = b"\xff\x00ann@example.com\x80"
    assert m.body(binary) == b"\xff\x00" + MASK.encode() + b"\x80"
    assert CARD.encode() not in m.body(b'{"broken": "' + CARD.encode())


def test_headers_and_properties_are_masked_by_name_and_by_pattern() -> None:
    m = Masker([rule(headers=["Authorization"], patterns=["email"])])
    message = Message(
        body=b"{}",
        id="1",
        routing_key="user:ann@example.com",
        headers={"authorization": "Bearer s3cret", "x-death": [{"reason": "ann@example.com"}]},
        properties={"correlation_id": "ann@example.com", "priority": 3},
    )
    masked = m.message(message)
    assert masked.headers["authorization"] == MASK
    assert masked.headers["x-death"] == [{"reason": MASK}]
    assert masked.properties == {"correlation_id": MASK, "priority": 3}
    assert masked.routing_key == f"user:{MASK}"
    assert message.headers["authorization"] == "Bearer s3cret"  # the original is untouched


@pytest.mark.parametrize(
    "raw,words",
    [
        ({"json_paths": ["card"]}, "must start with $"),
        ({"json_paths": ["$.a[x]"]}, "cannot read it"),
        ({"patterns": ["(a"]}, "not a regular expression"),
        ({"patterns": ["(a)\\1"]}, "not a regular expression"),
        ({}, "masks nothing"),
        ({"headers": "x", "colour": "red"}, "unknown key"),
        ({"headers": ["x"], "operators": "yes"}, "true or false"),
    ],
)
def test_a_bad_rule_is_refused_with_the_reason(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(MaskError, match=re.escape(words)):
        rule(**raw)


def test_paths_parse_to_steps() -> None:
    assert parse_path("$.a[0]..b[*]") == (("key", "a"), ("index", "0"), ("deep", "b"), ("any", "*"))
    with pytest.raises(MaskError):
        parse_path("$")


@pytest.fixture
def broker_file(tmp_path: Path, settings: Any) -> Path:
    path = tmp_path / "brokers.toml"
    path.write_text(
        """
[[mask]]
name = "cards"
broker = "rabbit"
destinations = ["orders*"]
json_paths = ["$.card"]
operators = true

[[mask]]
name = "emails"
patterns = ["email"]
"""
    )
    settings.SLUICE_CONFIG = str(path)
    return path


def test_who_sees_what(broker_file: Path, personas: dict[str, Any]) -> None:
    body = b'{"card": "4111", "email": "ann@example.com"}'

    def seen(persona: str, broker: str = "rabbit", dest: str = "orders.dlq", raw: bool = False):
        return json.loads(masking.masker(personas[persona], broker, dest, raw).body(body))

    assert seen("carol") == {"card": MASK, "email": MASK}  # a viewer: every rule
    assert seen("bob") == {"card": MASK, "email": "ann@example.com"}  # operators: where marked
    assert seen("alice") == seen("bob")  # an admin, as an operator...
    assert seen("alice", raw=True) == json.loads(body)  # ...unless opted in to raw values
    assert seen("bob", raw=True) == seen("bob")  # an opt-in is an admin's alone
    assert seen("carol", dest="payments") == {"card": "4111", "email": MASK}
    assert seen("carol", broker="kafka") == {"card": "4111", "email": MASK}
    # The file is read again when it changes.
    broker_file.write_text('[[mask]]\nname = "none"\nheaders = ["x"]\n')
    assert seen("carol") == json.loads(body)


def test_a_bad_rule_in_the_broker_file_fails_the_check_at_start(tmp_path: Path) -> None:
    path = tmp_path / "brokers.toml"
    path.write_text('[[mask]]\nname = "x"\npatterns = ["(unclosed"]\n')
    with pytest.raises(config.ConfigError, match=r"\[\[mask\]\] #1 \('x'\): pattern"):
        config.read(path, check_variables=False)
