"""In Chromium, through the whole stack: an incident appears live, is acknowledged, and leaves.

A RabbitMQ queue loses its consumer while messages keep arriving; the worker's
triage opens "consumers lost" and the overview's On fire section, pushed over
the websocket after each collection, shows it without a reload. An operator
acknowledges it there; a viewer sees it but has no button, and the server
refuses the viewer's acknowledgement all the same.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import quote

import pika
import pytest
import requests

# The browser tests' module-scoped Chromium, as the fixture `chromium` here.
from tests.app_fixtures import wait_for
from tests.stack_fixtures import INTERVAL, Stack
from tests.test_browser import browser as chromium  # noqa: F401
from tests.test_stack import DEADLINE, delete_queue

pytestmark = pytest.mark.browser

PERSONAS = {"bob": ("operator", "bob-operates-7340"), "carol": ("viewer", "carol-watches-1189")}
QUIET = re.compile(r"(\d+) more acknowledged or snoozed")


def persona(stack: Stack, name: str) -> str:
    """Make `name` a user of the stack with its persona's role and password; return the password."""
    role, password = PERSONAS[name]
    stack.manage(
        "shell",
        "-c",
        f"from dashboard.auth import ensure_user; ensure_user({name!r}, {role!r}, {password!r})",
    )
    return password


def sign_in_as(page: Any, stack: Stack, name: str, password: str) -> None:
    page.goto(f"{stack.url}/login/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.url}/")


def quiet_count(page: Any) -> int:
    """The On fire section's "N more acknowledged or snoozed", 0 when it says nothing of them."""
    found = QUIET.search(page.locator("#on-fire").inner_text())
    return int(found.group(1)) if found else 0


def test_an_incident_appears_live_is_acknowledged_and_leaves(stack, chromium, unique_name):  # noqa: F811
    queue = f"fire-{unique_name}"
    key = f"//{queue}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    passwords = {name: persona(stack, name) for name in PERSONAS}
    token = stack.token("carol", "viewer")
    history = f"{stack.url}/api/v1/brokers/rabbit/destinations/{quote(key, safe='')}/history"

    def samples_with_a_consumer() -> int:
        r = requests.get(history, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        return sum(1 for p in r.json()["points"] if p["consumers"] > 0) if r.ok else 0

    reader = pika.BlockingConnection(pika.URLParameters(amqp_url))
    operator = chromium.new_context()
    viewer = chromium.new_context()
    try:
        channel = reader.channel()
        channel.queue_declare(queue)
        channel.basic_consume(queue, lambda ch, method, props, body: None, auto_ack=True)
        # Two collections see the consumer, so the window remembers it had one.
        wait_for(lambda: samples_with_a_consumer() >= 2, timeout=DEADLINE + 4 * INTERVAL)

        page = operator.new_page()
        sign_in_as(page, stack, "bob", passwords["bob"])
        assert page.locator("body.can-operate").count() == 1
        page.locator("#on-fire").wait_for()
        quiet_before = quiet_count(page)
        page.evaluate("window.sluiceMarker = 'still here'")  # a reload would lose it

        # The consumer goes away; messages keep arriving.
        reader.close()
        publisher = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            for i in range(25):
                publisher.channel().basic_publish("", queue, f"order {i}".encode())
        finally:
            publisher.close()

        incident = page.locator(
            '#on-fire li.incident[data-cause="consumers_lost"]',
            has=page.locator("a.where", has_text=re.compile(rf"^{re.escape(queue)}$")),
        )
        incident.wait_for(timeout=(DEADLINE + 4 * INTERVAL) * 1000)
        assert page.evaluate("window.sluiceMarker") == "still here"
        assert "lost its 1 consumer(s)" in incident.locator("p.cause").inner_text()
        public_id = incident.get_attribute("data-incident")
        acknowledge = incident.locator("button", has_text="Acknowledge")
        assert acknowledge.is_visible()

        # A viewer sees the incident, with no button to acknowledge it...
        seen = viewer.new_page()
        sign_in_as(seen, stack, "carol", passwords["carol"])
        theirs = seen.locator(f'#on-fire li.incident[data-incident="{public_id}"]')
        theirs.wait_for()
        assert seen.locator("body.can-operate").count() == 0
        assert not theirs.locator("button", has_text="Acknowledge").is_visible()
        assert not theirs.locator("button", has_text="Snooze").is_visible()
        # ...and a hand-made acknowledgement is refused, with the page's own CSRF token (the
        # one htmx sends: fragments pushed over the websocket carry no form token).
        csrf = seen.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
        refused = seen.request.post(
            f"{stack.url}/incidents/{public_id}/ack",
            headers={"X-CSRFToken": csrf, "Referer": f"{stack.url}/"},
        )
        assert refused.status == 403
        assert "This needs the operator role." in refused.text()  # the role, not the token

        # The operator acknowledges it: it leaves the section, and stays gone.
        acknowledge.click()
        page.locator(f'#on-fire li.incident[data-incident="{public_id}"]').wait_for(
            state="detached", timeout=10_000
        )
        page.wait_for_function(
            "want => { const e = document.querySelector('#on-fire');"
            " return e && e.textContent.includes(want + ' more acknowledged or snoozed'); }",
            arg=str(quiet_before + 1),
            timeout=10_000,
        )
        # The next push, after a collection, renders the section from the database: the
        # marked section is replaced, and the incident is still not in it.
        page.evaluate("document.querySelector('#on-fire').dataset.beforePush = 'yes'")
        page.wait_for_function(
            "() => { const e = document.querySelector('#on-fire');"
            " return e && !e.dataset.beforePush; }",
            timeout=(4 * INTERVAL + 5) * 1000,
        )
        assert page.locator(f'#on-fire li.incident[data-incident="{public_id}"]').count() == 0
        assert quiet_count(page) == quiet_before + 1
        assert page.evaluate("window.sluiceMarker") == "still here"

        # The audit log tells who acknowledged what.
        page.goto(f"{stack.url}/audit/?action=incident.acknowledge")
        row = page.locator("tbody tr", has_text=public_id)
        assert row.count() == 1
        cells = row.locator("td")
        assert cells.nth(1).inner_text() == "bob"
        assert cells.nth(2).inner_text() == "incident.acknowledge"
        assert cells.nth(3).inner_text() == "rabbit"
        assert cells.nth(4).inner_text() == key
        assert "cause=consumers_lost" in cells.nth(7).inner_text()
        # Carol's refused try left no entry.
        assert page.locator("tbody tr", has_text="carol").count() == 0
    finally:
        operator.close()
        viewer.close()
        if reader.is_open:
            reader.close()
        with contextlib.suppress(Exception):  # a shared broker: cleanup must not hide the result
            delete_queue(amqp_url, queue)
