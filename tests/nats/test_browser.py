"""In Chromium, through the whole stack: hostile NATS bodies and headers stay inert, browsed and tailed."""

from __future__ import annotations

import time

import pytest

from tests.nats.test_messages import raw_publish

# The browser tests' module-scoped Chromium, as the fixture `chromium` here.
from tests.test_browser import browser as chromium  # noqa: F401
from tests.test_browser import dismissed_dialogs, sign_in

pytestmark = pytest.mark.browser

# Each would set window.pwned or open a dialog if the page ran it.
SCRIPT = b"<script>window.pwned='value'; alert('value')</script>"
IMG = b"<img src=x onerror=\"window.pwned='img'; alert('img')\">"
MESSAGES = [
    # (subject suffix, headers, body)
    ("a", [(b"note", SCRIPT), (b"note", IMG)], SCRIPT),
    ("b", [(b"<script>alert('name')</script>", IMG), (b"bin", b"\xff\x00<b>")], IMG),
    ("c", [(b"h", b"\x80<script>alert(1)</script>")], b"\xff\xfe" + SCRIPT + b"\x80"),
    ("d", [], bytes(range(256))),
    ("e", [], b'{"html": "<script>alert(\'json\')</script>", "n": [1, {"<i>": null}]}'),
]


def assert_inert(page, dialogs: list[str]) -> None:
    page.wait_for_timeout(300)  # an image's onerror would have fired by now
    assert dialogs == []
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0
    assert page.locator("main script:not([src^='/static/'])").count() == 0  # only tail.js
    # The tail marks header names with <b> itself; no other <b> or <i> comes from the data.
    assert page.locator("main i, main b:not(.tail-header > b)").count() == 0


def test_hostile_messages_are_inert_on_the_stream_page_and_the_tail(
    stack,
    chromium,  # noqa: F811 - the fixture imported above
    js,
    unique_name,
):
    u = unique_name
    stream = f"S{u}"
    js.add_stream(stream, [f"{u}.>"], allow_direct=True)
    url = stack.brokers["nats"]["url"]
    for suffix, headers, body in MESSAGES:
        raw_publish(url, f"{u}.<i>{suffix}", headers, body)
    page = chromium.new_page()
    dialogs = dismissed_dialogs(page)
    try:
        sign_in(page, stack)
        deadline = time.monotonic() + 10
        while True:  # the stream stores a raw publish just after the server read it
            page.goto(f"{stack.url}/brokers/nats/streams/{stream}/messages")
            if page.locator("article.nats-msg").count() == 5 or time.monotonic() > deadline:
                break
            page.wait_for_timeout(200)
        cards = page.locator("article.nats-msg")
        assert cards.count() == 5
        assert_inert(page, dialogs)
        first = cards.nth(0)
        assert first.locator(".nats-subject").inner_text() == f"{u}.<i>a"
        assert first.locator("pre.body").first.inner_text() == SCRIPT.decode()
        assert first.locator("table.nats-headers td.mono").all_inner_texts() == ["note", "note"]
        assert IMG.decode() in first.locator("table.nats-headers").inner_text()
        second = cards.nth(1)
        assert "<script>alert('name')</script>" in second.locator("table.nats-headers").inner_text()
        assert "hex ff 00 3c 62 3e" in second.locator("table.nats-headers").inner_text()
        assert "Binary: not valid UTF-8." in cards.nth(2).inner_text()
        assert "00000000  00 01 02 03" in cards.nth(3).inner_text()
        assert "<script>alert('json')</script>" in cards.nth(4).locator(".json-tree").inner_text()

        page.goto(f"{stack.url}/brokers/nats/nats/tail/?subject={u}.%3E")
        page.get_by_text("Waiting for messages").wait_for(timeout=15_000)
        for suffix, headers, body in MESSAGES:
            raw_publish(url, f"{u}.<i>{suffix}", headers, body, reply="_INBOX.<b>x</b>")
        page.wait_for_function(
            "() => document.querySelectorAll('#tail-rows tr.tail-row').length === 5"
        )
        rows = page.locator("#tail-rows tr.tail-row")
        bodies = rows.locator("td.tail-body").all_inner_texts()
        assert SCRIPT.decode() in bodies and IMG.decode() in bodies
        assert f"{u}.<i>a" in rows.locator("td.tail-subject").all_inner_texts()
        assert "_INBOX.<b>x</b>" in rows.first.inner_text()
        assert "<script>alert('name')</script>=" in page.locator("#tail-rows").inner_text()
        assert_inert(page, dialogs)
        assert page.locator("#tail-conn").get_attribute("data-state") == "open"
    finally:
        page.close()
