"""In Debian's Chromium: hostile Kafka keys, headers and values render inert, browsed and searched."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from kafka import KafkaProducer

from dashboard import devservices
from tests.kafka_fixtures import read_all
from tests.test_browser import CHROMIUM_ARGS, dismissed_dialogs, sign_in

pytestmark = pytest.mark.browser

# Each would set window.pwned or open a dialog if the page ran it.
SCRIPT = b"<script>window.pwned='value'; alert('value')</script>"
IMG = b"<img src=x onerror=\"window.pwned='img'; alert('img')\">"
RECORDS = [
    # (key, headers, value)
    (b"<script>window.pwned='key'</script>", [("note", SCRIPT)], SCRIPT),
    (
        b"\xff<img src=x onerror=alert('key')>",
        [("<script>alert('name')</script>", IMG), ("bin", b"\xff\x00<b>")],
        IMG,
    ),
    (None, [("h", b"\x80<script>alert(1)</script>")], b"\xff\xfe" + SCRIPT + b"\x80"),
    (b"bytes", [], bytes(range(256))),
    (b"json", [], b'{"html": "<script>alert(\'json\')</script>", "n": [1, {"<i>": null}]}'),
    (b"big", [], SCRIPT + b"A" * (3 * 1024 * 1024)),
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = devservices.chromium(install=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def assert_inert(page, dialogs: list[str]) -> None:
    assert dialogs == []
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0


def test_hostile_keys_headers_and_values_render_inert(
    stack, browser, make_topic, unique_name, kafka
):
    topic = make_topic(f"hostile-{unique_name}")
    producer = KafkaProducer(
        bootstrap_servers=kafka["bootstrap_servers"], acks="all", max_request_size=8 << 20
    )
    for key, headers, value in RECORDS:
        producer.send(topic, value, key=key, headers=headers)
    producer.flush()
    producer.close()
    page = browser.new_page()
    dialogs = dismissed_dialogs(page)
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/brokers/kafka/topics/{topic}/messages?count=20")
        assert page.locator("article.kafka-record").count() == len(RECORDS)
        text = page.locator("main").inner_text()
        assert "<script>window.pwned='key'</script>" in text  # the key, shown as text
        assert "<script>alert('name')</script>" in text  # a header name
        assert "<img src=x onerror=\"window.pwned='img'; alert('img')\">" in text
        assert "ff 3c 69 6d 67" in text  # a key that is not UTF-8, in hex
        assert "Binary: not valid UTF-8." in text
        assert "Download the whole value" in text  # the 3 MB one, cut
        assert_inert(page, dialogs)

        # A whole-topic search, run by the stack's Celery worker, shows the same inert.
        query = urlencode({"body": "script", "mode": "substring"})
        page.goto(f"{stack.url}/brokers/kafka/topics/{topic}/search?{query}")
        page.get_by_role("button", name="Search the whole topic").click()
        page.wait_for_selector('#search-progress[data-state="done"]', timeout=60_000)
        assert page.locator("[role=progressbar]").get_attribute("aria-valuenow") == str(
            len(RECORDS)
        )
        assert page.locator("table.search-results tbody tr").count() == 4
        assert "<script>window.pwned='value'" in page.locator("main").inner_text()
        assert_inert(page, dialogs)
    finally:
        page.close()


@pytest.mark.parametrize(
    "value",
    [
        b'\r\n{"id": 9,\r\n "note": "<b>bold</b>"}',  # CRLF only, one leading
        b"\nline one\nline two\n",  # LF only, one leading and one trailing
        b"one\r\ntwo\nthree",  # both kinds: copied as base64
        b"one\rtwo",  # a bare CR: the same
        b"\xff\x00binary",
    ],
    ids=["crlf", "lf", "mixed", "cr", "binary"],
)
def test_re_produce_in_chromium_sends_the_record_byte_for_byte(
    stack, browser, make_topic, produce, unique_name, kafka, value
):
    """The real browser's textarea handling (CRLF on submit, a leading newline) keeps
    every byte of a record copied with Re-produce…"""
    source = make_topic(f"src-{unique_name}")
    target = make_topic(f"dst-{unique_name}")
    produce(source, [value], key=b"k-1", headers=[("tenant", b"acme")])
    page = browser.new_page()
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/brokers/kafka/topics/{source}/messages?count=5")
        page.click("a.reproduce")
        page.wait_for_selector(".kafka-copied")
        page.fill("input[name=topic]", target)
        page.click("button.primary")
        page.wait_for_selector(".kafka-published", timeout=15_000)
    finally:
        page.close()
    [copy] = read_all(kafka["bootstrap_servers"], target)
    assert (copy.key, copy.value, copy.headers) == (b"k-1", value, [("tenant", b"acme")])
