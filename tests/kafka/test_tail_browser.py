"""The live tail in Chromium, through the whole stack: hostile messages show inert, pause holds rows."""

from __future__ import annotations

import re

import pytest

# The browser tests' module-scoped Chromium, as the fixture `chromium` here.
from tests.test_browser import browser as chromium  # noqa: F401
from tests.test_browser import dismissed_dialogs, sign_in

pytestmark = pytest.mark.browser


def test_hostile_messages_show_inert_and_pause_stops_rows(
    stack,
    chromium,  # noqa: F811 - the fixture imported above
    make_topic,
    produce,
    unique_name,
):
    topic = make_topic(f"tail-{unique_name}", partitions=2)
    page = chromium.new_page()
    dialogs = dismissed_dialogs(page)
    rows = page.locator("#tail-rows tr.tail-row")
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/brokers/kafka/topics/{topic}/tail")
        page.get_by_text("Waiting for messages").wait_for(timeout=15_000)
        assert page.locator("#tail-rows tr.tail-mark").inner_text().startswith("Tail started")
        hostile = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
        produce(topic, [h.encode() for h in hostile], partition=0, key=b"<b>k</b>")
        page.wait_for_function(
            "() => document.querySelectorAll('#tail-rows tr.tail-row').length === 2"
        )
        bodies = sorted(rows.locator("td.tail-body").all_inner_texts())
        assert bodies == sorted(hostile)
        assert rows.first.locator("td").nth(3).inner_text() == "<b>k</b>"
        assert page.locator("#tail-rows img, #tail-rows script, #tail-rows b").count() == 0
        page.wait_for_timeout(300)  # an image's onerror would have fired by now
        assert dialogs == []

        page.get_by_role("button", name="Pause").click()
        page.get_by_role("button", name="Resume").wait_for(timeout=5_000)
        produce(topic, 3, partition=1)
        page.wait_for_selector('#tail-status[data-received="5"]', timeout=10_000)
        assert page.get_by_text("Paused: no new rows are shown").is_visible()
        assert rows.count() == 2

        page.get_by_role("button", name="Resume").click()
        page.get_by_text("3 messages came while paused").wait_for(timeout=5_000)
        produce(topic, [b"after the pause"], partition=1)
        page.wait_for_function(
            "() => document.querySelectorAll('#tail-rows tr.tail-row').length === 3"
        )
        assert rows.first.locator("td.tail-body").inner_text() == "after the pause"
        assert page.locator("#tail-conn").get_attribute("data-state") == "open"
        assert dialogs == []

        # A closed connection says so and offers to reconnect; the new tail is marked.
        page.evaluate("document.getElementById('tail')['htmx-internal-data'].webSocket.close()")
        # The code is the server's answer to the close (1000 or 1005, "no status").
        page.get_by_text(re.compile(r"^Connection closed \(\d+\)\.$")).wait_for(timeout=5_000)
        page.get_by_role("button", name="Reconnect").click()
        page.wait_for_function(
            "() => document.querySelectorAll('#tail-rows tr.tail-mark').length === 3"
        )
        assert page.locator("#tail-conn").inner_text() == "Live"
        assert page.locator("#tail-rows tr.tail-mark").first.inner_text().startswith("Tail started")
        assert rows.count() == 3
    finally:
        page.close()
