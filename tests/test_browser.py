"""In Debian's Chromium: sign in, and watch a queue's backlog change without reloading."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pytest
import requests

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


def dismissed_dialogs(page: Any) -> list[str]:
    """The messages of the dialogs `page` opens from now on, each dismissed."""
    messages: list[str] = []

    def dismiss(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return messages


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


def _dead_letters(amqp_url: str, name: str, count: int) -> None:
    """`count` messages rejected from `name` into `name`.dlq, with x-death."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = connection.channel()
    ch.exchange_declare(f"{name}.dlx", "fanout")
    ch.queue_declare(f"{name}.dlq")
    ch.queue_bind(f"{name}.dlq", f"{name}.dlx")
    ch.queue_declare(name, arguments={"x-dead-letter-exchange": f"{name}.dlx"})
    for n in range(count):
        ch.basic_publish(
            "", name, f'{{"order": {n}}}'.encode(), pika.BasicProperties(message_id=f"{name}-{n}")
        )
    taken = 0
    while taken < count:
        method, _, _ = ch.basic_get(name)
        if method is None:
            continue
        ch.basic_reject(method.delivery_tag, requeue=False)
        taken += 1
    connection.close()


def _drop(amqp_url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = connection.channel()
    for q in (name, f"{name}.dlq"):
        ch.queue_delete(q)
    ch.exchange_delete(f"{name}.dlx")
    connection.close()


def test_replay_dead_letters_and_watch_the_progress_bar_reach_the_end(stack, browser, unique_name):
    name = f"payments-{unique_name}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    _dead_letters(amqp_url, name, 3000)
    page = browser.new_page()
    try:
        sign_in(page, stack)
        dlq_key = quote(f"//{name}.dlq", safe="")
        # The collector finds the queue within an interval or two.
        for _ in range(30):
            page.goto(f"{stack.url}/brokers/rabbit/dead-letters/?queue={dlq_key}")
            if page.get_by_role("link", name=f"{name}.dlq").count():
                break
            page.wait_for_timeout(1000)
        row = page.locator("tr", has=page.get_by_role("link", name=f"{name}.dlq"))
        row.get_by_role("button", name="Look").click()
        page.wait_for_load_state()
        assert page.locator("table.groups").inner_text().count("rejected") == 1
        # "Select all" ticks every message shown, and makes the ticked ones the choice.
        page.check("input[name=select][value=all]")
        page.check("input[data-select-all=id]")
        ticks = page.locator("input[type=checkbox][name=id]")
        shown = ticks.count()
        assert shown > 0 and page.locator("input[name=id]:checked").count() == shown
        assert page.is_checked("input[name=select][value=ids]")
        page.check("input[name=select][value=all]")
        # The common choices first; the rest is behind "More".
        assert not page.is_visible("input[name=rate]")
        page.locator("details.more summary").click()
        page.fill("input[name=rate]", "1000")
        page.get_by_role("button", name="Dry run first…").click()
        page.wait_for_load_state()
        assert "Dry run" in page.content()
        assert f"(default exchange) → {name}" in page.locator("table").first.inner_text()
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_load_state()
        # Record every width the bar takes, as it is pushed over the websocket.
        page.evaluate(
            """() => { window.seen = [];
              setInterval(() => { const b = document.querySelector('[role=progressbar]');
                if (b) window.seen.push(Number(b.getAttribute('aria-valuenow'))); }, 100); }"""
        )
        page.wait_for_selector('#job-progress[data-state="done"]', timeout=60_000)
        bar = page.locator("[role=progressbar]")
        assert bar.get_attribute("aria-valuenow") == bar.get_attribute("aria-valuemax") == "3000"
        seen = page.evaluate("window.seen")
        assert any(0 < v < 3000 for v in seen), (
            f"no progress in between was shown: {sorted(set(seen))}"
        )
        assert page.locator("dd.replayed").inner_text() == "3,000"
    finally:
        page.close()
        _drop(amqp_url, name)


HOSTILE = [
    b"<script>window.pwned = 'script'</script>",
    b"<img src=x onerror=\"window.pwned='img'\">",
    b"\xff\xfe<script>window.pwned='utf8'</script>\x80",
    bytes(range(256)),
    b"<script>window.pwned='big'</script>" + b"A" * (10 * 1024 * 1024),
]


def test_hostile_bodies_and_odd_names_render_inert(stack, browser, unique_name):
    rabbit = stack.brokers["rabbitmq"]
    vhost = f"odd/vhost %#{unique_name}"
    queue = f"odd/na%me #1 ünï <b>{unique_name}</b>"
    api = rabbit["management_url"]
    auth = (rabbit["username"], rabbit["password"])
    requests.put(
        f"{api}/api/vhosts/{quote(vhost, safe='')}", auth=auth, timeout=10
    ).raise_for_status()
    requests.put(
        f"{api}/api/permissions/{quote(vhost, safe='')}/{rabbit['username']}",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=auth,
        timeout=10,
    ).raise_for_status()
    params = pika.URLParameters(rabbit["amqp_url"])
    params.virtual_host = vhost
    connection = pika.BlockingConnection(params)
    ch = connection.channel()
    ch.queue_declare(queue)
    for body in HOSTILE:
        ch.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(headers={"note": "<script>window.pwned='header'</script>"}),
        )
    connection.close()
    page = browser.new_page()
    try:
        sign_in(page, stack)
        for _ in range(30):
            page.goto(f"{stack.url}/?q={quote(unique_name)}")
            if page.get_by_role("link", name=queue).count():
                break
            page.wait_for_timeout(1000)
        page.get_by_role("link", name=queue).click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text().startswith(queue)
        page.get_by_role("link", name="Messages").click()
        page.wait_for_load_state()
        page.fill("input[name=count]", "10")
        page.get_by_role("button", name="Get and requeue").click()
        page.wait_for_load_state()
        assert page.locator("article.message").count() == len(HOSTILE)
        text = page.locator("main").inner_text()
        assert "<script>window.pwned = 'script'</script>" in text  # shown as text
        assert "Binary: not valid UTF-8." in text
        assert "Download the whole body" in text  # the 10 MB one, truncated
        assert page.evaluate("window.pwned") is None
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
    finally:
        page.close()
        requests.delete(f"{api}/api/vhosts/{quote(vhost, safe='')}", auth=auth, timeout=10)


def test_an_export_preview_of_hostile_dead_letters_stays_inert(stack, browser, unique_name):
    """The file's first lines shown before a download: bodies as escaped text, nothing run."""
    rabbit = stack.brokers["rabbitmq"]
    queue = f"{unique_name} <i>x</i>.dlq"
    connection = pika.BlockingConnection(pika.URLParameters(rabbit["amqp_url"]))
    ch = connection.channel()
    ch.queue_declare(queue)
    for body in HOSTILE[:4]:
        ch.basic_publish("", queue, body, pika.BasicProperties(headers={"x-e": "<b>bold</b>"}))
    connection.close()
    page = browser.new_page()
    dialogs = dismissed_dialogs(page)
    try:
        sign_in(page, stack)
        url = f"{stack.url}/brokers/rabbit/dead-letters/?queue={quote('//' + queue)}"
        for _ in range(30):
            page.goto(url)
            if page.get_by_role("button", name="preview").count():
                break
            page.wait_for_timeout(1000)
        page.get_by_role("button", name="preview").click()
        page.wait_for_load_state()
        assert "Export of //" in page.locator("h1").inner_text()
        text = page.locator("pre.ndjson").inner_text()
        assert text.count("\n") >= len(HOSTILE[:4]) - 1
        assert "\\u003cscript\\u003ewindow.pwned = 'script'\\u003c/script\\u003e" in text
        assert "body_base64" in text  # the bodies that are not UTF-8
        assert page.evaluate("window.pwned") is None and dialogs == []
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
        with page.expect_download() as download:
            page.get_by_role("button", name="Download all of it as NDJSON").or_(
                page.get_by_role("button", name="Download it as NDJSON")
            ).click()
        saved = download.value.path()
        with open(saved, "rb") as f:
            assert f.read().count(b"\n") == len(HOSTILE[:4])
        assert download.value.suggested_filename.endswith(".ndjson")
    finally:
        page.close()
        delete_queue(rabbit["amqp_url"], queue)
