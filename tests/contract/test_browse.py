"""Browsing: the messages put in a source are read back through the adapter, with the ids a
job selects them by, and stay where they are."""

from __future__ import annotations

from collections import Counter

from brokers.base import connect
from tests.contract.kinds import Registration


def test_browsing_reads_every_message_back_and_leaves_it_in_place(kind: Registration) -> None:
    kind.require("browse")
    src = kind.dead_letters(4)
    adapter = connect(kind.name, kind.options(), timeout=5.0)
    try:
        first = adapter.read(src.key, 10)  # type: ignore[attr-defined]
        again = adapter.read(src.key, 10)  # type: ignore[attr-defined]
        cut = adapter.read(src.key, 10, truncate=4)  # type: ignore[attr-defined]
    finally:
        adapter.close()
    assert Counter(m.body for m in first) == Counter(src.bodies)
    assert {m.id for m in first} == set(src.ids)
    assert all(name in m.headers for m in first for name in kind.own_headers)
    assert [(m.id, m.body) for m in again] == [(m.id, m.body) for m in first]
    by_id = {m.id: m.body for m in first}
    assert [(m.body, m.size, m.truncated) for m in cut] == [
        (by_id[m.id][:4], len(by_id[m.id]), True) for m in cut
    ]
    assert kind.count_source(src) == 4
    assert kind.source_bodies(src) == Counter(src.bodies)
