"""Property-based tests of the readers of broker data: whatever a producer wrote in an AMQP
header table (x-death included), a Kafka record's headers and time, or a NATS header block,
what pages, filters and replay call never raises, and what it returns renders.

Pure functions and templates: no broker. Example counts are modest to keep the run short.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.template.loader import render_to_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import Message
from brokers.kafka.browse import Record
from brokers.kafka.filters import compile_filters
from brokers.kafka.transfer import as_message as kafka_message
from brokers.nats.transfer import as_message as nats_message
from brokers.nats.wire import from_api, header_pairs, parse_time
from brokers.rabbitmq.amqp import RawProperties, encode_properties, json_safe, replay_target
from brokers.rabbitmq.browse import _message_from_api
from brokers.rabbitmq.deadletters import history
from dashboard.jobs import deadletters
from dashboard.kinds.kafka import deadletters as kafka_deadletters
from dashboard.kinds.kafka.views.messages import record_json, record_view
from dashboard.kinds.nats import deadletters as nats_deadletters
from dashboard.kinds.nats.views.messages import msg_json, msg_view
from dashboard.kinds.rabbitmq import deadletters as rabbit_deadletters
from dashboard.views import messageview

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES: list[dict[str, Any]] = [
    {"reason": "rejected"},
    {"queue": "orders", "routing_key": "k"},
    {"since": 0, "until": 2**40},
    {"header": {"name": "x-death", "value": ""}},
    {"body_contains": "a"},
]

# -- AMQP ------------------------------------------------------------------------------------

keys = st.text(max_size=12)
# What AMQP can carry: 64-bit integers, decimals of a 32-bit value and a scale, timestamps.
amqp_decimals = st.builds(
    lambda unscaled, scale: Decimal(unscaled).scaleb(-scale),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 255),
)
amqp_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    amqp_decimals,
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)),
)
amqp_values = st.recursive(
    amqp_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
# x-death entries with the fields RabbitMQ writes, each holding anything at all.
death_entries = st.fixed_dictionaries(
    {},
    optional={
        name: amqp_values
        for name in ("count", "reason", "queue", "time", "exchange", "routing-keys")
    },
)
x_death = st.one_of(st.lists(death_entries | amqp_values, max_size=4), amqp_values)
amqp_tables = st.builds(
    lambda table, deaths, first: {**table, "x-death": deaths, **first},
    st.dictionaries(keys, amqp_values, max_size=5),
    x_death,
    st.fixed_dictionaries(
        {},
        optional={
            "x-first-death-queue": amqp_values,
            "x-first-death-reason": amqp_values,
            "x-first-death-exchange": amqp_values,
        },
    ),
)


def check_rabbit_message(message: Message) -> None:
    """Everything the pages, job filters and replay do with a RabbitMQ message."""
    h = history(message.headers)
    assert h.count >= len(h.deaths)
    for mode in ("auto", "exchange", "queue"):
        target = replay_target(message, mode)
        assert target is None or all(isinstance(part, str) for part in target)
    info = rabbit_deadletters.death_info(message)
    assert all(isinstance(info[f], str) for f in ("reason", "queue", "exchange", "routing_key"))
    assert info["time"] is None or isinstance(info["time"], int)
    summary = deadletters.summary(message, rabbit_deadletters.death_info)
    json.dumps(summary, allow_nan=False)  # it is stored in a JSONField
    for rule in RULES:
        deadletters.matches(message, rule, rabbit_deadletters.death_info)
    assert deadletters.groups([summary], "reason")
    s = messageview.shown(message, rabbit_deadletters.death_info)
    assert s["m"].id in render_to_string("dashboard/_message.html", {"s": s})


@EXAMPLES
@given(amqp_values)
def test_json_safe_makes_any_amqp_value_json(value: Any) -> None:
    json.dumps(json_safe(value), allow_nan=False)


@EXAMPLES
@given(amqp_tables, st.integers(0, 2**64 - 1), st.binary(max_size=40))
def test_any_header_table_read_off_the_wire_reads_and_renders(
    headers: dict[str, Any], timestamp: int, body: bytes
) -> None:
    props = {"timestamp": timestamp, "message_id": "msg-1"}
    raw = RawProperties(encode_properties(props, headers))
    json.dumps(raw.headers, allow_nan=False)
    message = Message(body=body, id="msg-1", properties=raw.props, headers=dict(raw.headers))
    check_rabbit_message(message)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@EXAMPLES
@given(
    st.dictionaries(keys, json_values, max_size=4),
    json_values,
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "count": json_values,
                "time": json_values,
                "routing-keys": json_values,
                "queue": json_values,
            },
        ),
        max_size=3,
    ),
)
def test_any_message_the_management_api_returns_reads_and_renders(
    headers: dict[str, Any], timestamp: Any, deaths: list[Any]
) -> None:
    item = {
        "properties": {"timestamp": timestamp, "headers": {**headers, "x-death": deaths}},
        "payload": base64.b64encode(b"body").decode(),
        "payload_encoding": "base64",
        "payload_bytes": 4,
    }
    message = _message_from_api(item)
    assert message.id.startswith("sha256:")
    check_rabbit_message(message)


# -- Kafka -----------------------------------------------------------------------------------

kafka_headers = st.lists(
    st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=20)), max_size=6
)


@EXAMPLES
@given(
    kafka_headers,
    st.integers(-1, 2**63 - 1),
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=10),
)
def test_any_kafka_record_reads_filters_and_renders(
    headers: list[tuple[str, bytes | None]], timestamp: int, value: bytes | None, key: bytes | None
) -> None:
    record = Record("t", 0, 7, timestamp, "create", key, value, tuple(headers), len(value or b""))
    view = record_view(record)
    html = render_to_string(
        "dashboard/kafka/_record.html",
        {"s": view, "broker": {"name": "k"}, "topic": "t", "can_operate": True},
    )
    assert 'data-offset="7"' in html
    json.dumps(record_json(record))
    for name, raw in headers[:2]:
        wanted = raw.decode("utf-8", "replace") if raw else None
        compile_filters({"header": name or "h", "header_value": wanted}).select([record])
    message = kafka_message(record)
    info = kafka_deadletters.death_info(message)
    assert isinstance(info["reason"], str)
    json.dumps(deadletters.summary(message, kafka_deadletters.death_info), allow_nan=False)
    for rule in RULES:
        deadletters.matches(message, rule, kafka_deadletters.death_info)


# -- NATS ------------------------------------------------------------------------------------

header_lines = st.lists(
    st.tuples(
        st.binary(max_size=12), st.sampled_from([b": ", b":", b"", b" : "]), st.binary(max_size=16)
    ),
    max_size=6,
)
header_blocks = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda status, lines: (
            b"NATS/1.0"
            + status
            + b"\r\n"
            + b"".join(n + s + v + b"\r\n" for n, s, v in lines)
            + b"\r\n"
        ),
        st.sampled_from([b"", b" 404", b" 503 No Responders", b" x"]),
        header_lines,
    ),
)


@EXAMPLES
@given(header_blocks)
def test_any_nats_header_block_gives_name_value_pairs(block: bytes) -> None:
    pairs = header_pairs(block)
    assert all(isinstance(n, str) and isinstance(v, bytes) for n, v in pairs)


@EXAMPLES
@given(st.text(max_size=40) | st.none() | st.integers())
def test_any_nats_time_stamp_parses_or_is_none(value: Any) -> None:
    moment = parse_time(value)
    assert moment is None or moment.tzinfo is not None


@EXAMPLES
@given(header_blocks, st.text(max_size=40), st.binary(max_size=40))
def test_any_stored_nats_message_reads_and_renders(block: bytes, when: str, body: bytes) -> None:
    raw = {
        "seq": 3,
        "subject": "a.b",
        "time": when,
        "hdrs": base64.b64encode(block).decode(),
        "data": base64.b64encode(body).decode(),
    }
    stored = from_api("S", raw, 1024)
    json.dumps(msg_json(stored))
    html = render_to_string(
        "dashboard/nats/_msg.html", {"s": msg_view(stored), "broker": {"name": "n"}, "stream": "S"}
    )
    assert 'data-seq="3"' in html
    message = nats_message(stored, 0)
    assert isinstance(nats_deadletters.death_info(message)["reason"], str)
    json.dumps(deadletters.summary(message, nats_deadletters.death_info), allow_nan=False)


@pytest.mark.parametrize(
    "value, shown",
    [
        (2**63 - 1, "unreadable: a time out of range (9223372036854775807)"),
        ("soon", "unreadable: not a Unix time ('soon')"),
        (0, "0 (1970-01-01 00:00:00 UTC)"),
    ],
)
def test_an_amqp_timestamp_property_shows_its_time_or_why_not(value: Any, shown: str) -> None:
    assert str(messageview.timestamp_text(value)) == shown
