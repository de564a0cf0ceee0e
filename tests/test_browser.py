"""In Debian's Chromium: sign in, and watch a queue's backlog change without reloading."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from dashboard import devservices
from tests.test_stack import DEADLINE, delete_queue, publish

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


# Module scope: Playwright's sync API keeps an event loop running while it is
# open, which would break asyncio.run() in the tests that come after.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = devservices.chromium(install=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def sign_in(page, stack) -> None:
    page.goto(f"{stack.url}/")
    assert "/login/" in page.url  # every page needs a session
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", stack.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.url}/")


def test_backlog_changes_live_without_a_reload(stack, browser, unique_name):
    queue = f"browser-{unique_name}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    publish(amqp_url, queue, 3)
    page = browser.new_page()
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/?q={quote(queue)}")
        row = page.locator(f'tr[data-key="//{queue}"] td.backlog')
        row.wait_for(timeout=30_000)
        page.wait_for_function(
            "sel => document.querySelector(sel) && document.querySelector(sel).textContent.trim() === '3'",
            arg=f'tr[data-key="//{queue}"] td.backlog',
            timeout=30_000,
        )
        # A marker on window would vanish with a reload.
        page.evaluate("window.sluiceMarker = 'still here'")
        publish(amqp_url, queue, 1234)
        page.wait_for_function(
            "sel => document.querySelector(sel) && document.querySelector(sel).textContent.trim() === '1,237'",
            arg=f'tr[data-key="//{queue}"] td.backlog',
            timeout=(DEADLINE + 5) * 1000,
        )
        assert page.evaluate("window.sluiceMarker") == "still here"
        assert page.locator("#live-state").get_attribute("data-state") == "open"
    finally:
        page.close()
        delete_queue(amqp_url, queue)


def test_hostile_names_render_as_text(stack, browser, unique_name):
    queue = f"<img src=x onerror=window.pwned=1> {unique_name}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    publish(amqp_url, queue, 1)
    page = browser.new_page()
    try:
        sign_in(page, stack)
        page.goto(f"{stack.url}/?q={quote(unique_name)}")
        link = page.get_by_text(queue, exact=True)
        link.wait_for(timeout=30_000)
        assert page.evaluate("window.pwned") is None
        assert page.locator("img[src=x]").count() == 0
        link.click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text().startswith(queue)
        assert page.evaluate("window.pwned") is None
    finally:
        page.close()
        delete_queue(amqp_url, queue)
