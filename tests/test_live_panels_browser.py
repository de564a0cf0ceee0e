"""In Chromium, through the whole stack: the Kafka and NATS panels follow each collection
without a reload, and a rule the reader opened stays open across updates."""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import pytest
from kafka.structs import OffsetAndMetadata, TopicPartition

# The browser tests' module-scoped Chromium, as the fixture `chromium` here.
from brokers.nats.client import NatsClient
from tests.test_browser import browser as chromium  # noqa: F401
from tests.test_browser import sign_in
from tests.test_stack import DEADLINE

pytestmark = pytest.mark.browser


def text_is(page, selector: str, expected: str) -> None:
    """Wait until the element's text is `expected` (collections come every few seconds)."""
    page.wait_for_function(
        "([sel, want]) => { const e = document.querySelector(sel);"
        " return e && e.textContent.trim() === want; }",
        arg=[selector, expected],
        timeout=(DEADLINE + 10) * 1000,
    )


def test_a_kafka_group_panel_follows_its_lag_and_keeps_the_rule_open(
    stack,
    chromium,  # noqa: F811
    make_topic,
    kafka_admin,
    produce,
    unique_name,
):
    topic = make_topic(f"live-{unique_name}")
    group = f"live-{unique_name}-group"
    produce(topic, 5)
    kafka_admin.alter_group_offsets(
        group, {TopicPartition(topic, 0): OffsetAndMetadata(1, None, -1)}
    )
    page = chromium.new_page()
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/brokers/kafka/d/{quote(f'group/{group}', safe='')}", timeout=30_000)
        if page.locator("#kafka-group").count() == 0:  # not collected yet when the page loaded
            page.wait_for_timeout((DEADLINE + 2) * 1000)
            page.reload()
        text_is(page, "#kafka-group .group-lag", "4 messages")
        page.click("#kafka-group-rule summary")
        assert page.locator("#kafka-group-rule").get_attribute("open") is not None
        page.evaluate("window.sluiceMarker = 'still here'")

        produce(topic, 10)
        text_is(page, "#kafka-group .group-lag", "14 messages")
        # The panel's partition table moved too, and nothing reloaded the page.
        row = f'#kafka-group tr[data-partition="{topic}/0"]'
        assert page.locator(f"{row} td.backlog").inner_text() == "14"
        assert page.locator(f"{row} td").nth(3).inner_text() == "15"  # the end offset
        assert page.evaluate("window.sluiceMarker") == "still here"
        assert page.locator("#kafka-group-rule").get_attribute("open") is not None
    finally:
        page.close()
        with contextlib.suppress(Exception):  # a shared broker: cleanup must not hide the result
            kafka_admin.delete_consumer_groups([group])


def test_the_nats_server_panel_follows_its_connections(stack, chromium):  # noqa: F811
    url = stack.brokers["nats"]["url"]
    page = chromium.new_page()
    extra: list[NatsClient] = []
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/brokers/nats/", timeout=30_000)
        link = page.locator("#nats-server .server-connections")
        link.wait_for(timeout=(DEADLINE + 10) * 1000)
        page.evaluate("window.sluiceMarker = 'still here'")
        # Ten more clients: the count on the page rises by ten at a collection.
        # Other tests' clients come and go, so the wait is for at least ten more.
        before = int(link.inner_text().replace(",", ""))
        for _ in range(10):
            extra.append(NatsClient({"url": url}, name="live-panel"))
        page.wait_for_function(
            "([sel, low]) => { const e = document.querySelector(sel);"
            " return e && parseInt(e.textContent.replace(/,/g, ''), 10) >= low; }",
            arg=["#nats-server .server-connections", before + 10],
            timeout=(DEADLINE + 10) * 1000,
        )
        assert page.evaluate("window.sluiceMarker") == "still here"
    finally:
        for client in extra:
            client.close()
        page.close()
