"""In Debian's Chromium: no page of Sluice, nor the admin, breaks its Content-Security-Policy."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.kafka.test_offsets import commit
from tests.test_browser import browser as chromium  # noqa: F401
from tests.test_stack import delete_queue, publish

pytestmark = pytest.mark.browser

# Page routes that answer no HTML page to a GET: downloads, POST-only actions, the API.
NOT_PAGES = {
    "message-body",
    "kafka-body",
    "nats-body",
    "audit-export",
    "masking-raw",
    "deadletters-scan",
    "deadletters-act",
    "deadletters-edit",
    "deadletters-export",
    "deadletters-headers",
    "nats-deadletters-act",
    "nats-deadletters-edit",
    "nats-deadletters-capture",
    "job-control",
    "incident-ack",
    "incident-snooze",
    "reset-control",
    "search-cancel",
    "search-export",
    "logout",
    "healthz",
    "readyz",
    "metrics",
}

LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.sluiceCsp({page: location.pathname + location.search, directive: e.violatedDirective,
                    blocked: e.blockedURI, sample: e.sample, at: e.sourceFile + ':' + e.lineNumber});
});
"""


def _page_routes() -> set[str]:
    from django.urls import URLResolver, get_resolver

    names: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                if "admin" not in str(p.pattern):
                    walk(p.url_patterns, prefix + str(p.pattern))
            elif p.name and not (prefix + str(p.pattern)).startswith("api/"):
                names.add(p.name)

    walk(get_resolver().url_patterns, "")
    return names - NOT_PAGES


def _listed(api: Any, broker: str, q: str, kinds: set[str]) -> dict[str, str]:
    """kind -> key of the destinations matching `q`, once every kind in `kinds` is collected."""

    def ready() -> dict[str, str] | None:
        rows = api("GET", f"/brokers/{broker}/destinations?q={quote(q)}")["destinations"]
        found = {r["kind"]: r["key"] for r in rows}
        return found if kinds <= set(found) else None

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{broker}: {kinds} matching {q!r} not collected in time")


def _unreachable(api: Any) -> str:
    """The id of the incident the stack's broker on a closed port opens."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for incident in api("GET", "/incidents?state=open")["incidents"]:
            if incident["broker"] == "gone" and incident["cause"] == "unreachable":
                return str(incident["id"])
        time.sleep(1)
    raise AssertionError("the unreachable broker opened no incident in time")


def _urls(stack: Any, make_topic: Any, js: Any, u: str) -> list[str]:
    """One URL of every page route, over objects made here on the stack's brokers."""
    from kafka import KafkaProducer

    api = stack.api_client("csp-bob", "operator")
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    queue, dlq = f"csp-{u}", f"csp-{u}.dlq"
    publish(amqp_url, queue, 3)
    publish(amqp_url, dlq, 2)
    bootstrap = stack.brokers["kafka"]["bootstrap_servers"]
    topic, group = make_topic(f"csp-{u}"), f"csp-group-{u}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for n in range(5):
        producer.send(topic, key=b"k%d" % n, value=b'{"n": %d}' % n, partition=0)
    producer.flush()
    producer.close()
    commit(bootstrap, group, {(topic, 0): 2})
    stream, subject = f"CSP{u}", f"csp{u}"
    js.add_stream(stream, [f"{subject}.>"], allow_direct=True)
    js.publish(f"{subject}.a", b'{"a": 1}')
    js.add_consumer(stream, f"c{u}")
    rabbit = _listed(api, "rabbit", queue, {"queue"})
    kafka = _listed(api, "kafka", u, {"topic", "group"})
    nats = _listed(api, "nats", u, {"stream", "consumer"})
    job = api(
        "POST",
        "/jobs",
        {
            "broker": "rabbit",
            "action": "move",
            "source": f"//{dlq}",
            "selection": {"all": True},
            "destination": {"queue": queue},
            "dry_run": True,
        },
    )
    search = api("POST", f"/brokers/kafka/topics/{topic}/searches", {"body": "n"})
    reset = api("POST", f"/brokers/kafka/groups/{group}/reset", {"to": "earliest", "dry_run": True})
    incident = _unreachable(api)

    def d(broker: str, key: str) -> str:
        return f"/brokers/{broker}/d/{quote(key, safe='')}"

    return [
        "/",
        "/brokers/rabbit/",
        "/brokers/kafka/",
        "/brokers/nats/",
        "/brokers/gone/",
        d("rabbit", rabbit["queue"]),
        d("kafka", kafka["topic"]),
        d("kafka", kafka["group"]),
        d("nats", nats["stream"]),
        d("nats", nats["consumer"]),
        "/brokers/rabbit/exchanges/",
        f"/brokers/rabbit/messages/{quote(rabbit['queue'], safe='')}",
        "/brokers/rabbit/publish/",
        "/brokers/rabbit/dead-letters/",
        "/brokers/kafka/dead-letters/",
        "/brokers/nats/nats/dead-letters/",
        f"/brokers/kafka/topics/{topic}/messages",
        f"/brokers/kafka/topics/{topic}/search",
        f"/brokers/kafka/topics/{topic}/tail",
        f"/brokers/kafka/groups/{group}/reset",
        f"/brokers/kafka/resets/{reset['id']}/",
        f"/searches/{search['id']}/",
        "/brokers/nats/nats/connections/",
        f"/brokers/nats/streams/{stream}/messages",
        "/brokers/nats/nats/publish/",
        "/brokers/nats/nats/request/",
        f"/brokers/nats/nats/tail/?subject={quote(subject + '.>')}",
        "/jobs/",
        f"/jobs/{job['id']}/",
        "/incidents/",
        f"/incidents/{incident}/",
        "/audit/",
        "/masking/",
        "/brokers/rabbit/import/",
        "/admin/",
        "/admin/dashboard/broker/",
        "/admin/dashboard/broker/add/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
    ]


def test_no_page_breaks_the_content_security_policy(stack, chromium, make_topic, js, unique_name):  # noqa: F811
    from django.urls import resolve

    violations: list[dict[str, Any]] = []
    context = chromium.new_context()
    context.expose_function("sluiceCsp", lambda report: violations.append(report))
    context.add_init_script(LISTENER)
    page = context.new_page()
    page.on(
        "console",
        lambda m: (
            violations.append({"page": page.url, "console": m.text})
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    visited: set[str] = set()
    try:
        urls = _urls(stack, make_topic, js, unique_name)
        page.goto(f"{stack.url}/login/")
        visited.add("login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", stack.admin_password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{stack.url}/")
        for url in urls:
            answer = page.goto(f"{stack.url}{url}", wait_until="load")
            assert answer is not None and answer.status == 200, (url, answer and answer.status)
            assert "script-src 'self'" in answer.headers.get("content-security-policy", ""), url
            if page.locator("[ws-connect]").count():
                # The socket opens: connect-src lets the page reach its own ws://.
                # (A selector: Playwright's string predicates are an eval the CSP refuses.)
                page.locator("#live-state[data-state=open]").wait_for(
                    state="attached", timeout=15_000
                )
            page.wait_for_timeout(200)
            if not url.startswith("/admin/"):
                visited.add(resolve(urlsplit(url).path).url_name)
        # An htmx swap and the theme toggle, under the policy too.
        page.goto(f"{stack.url}/")
        with page.expect_response(lambda r: "q=" in r.url):
            page.fill("input[name=q]", unique_name)
        page.click("[data-theme-toggle]")
        page.wait_for_timeout(300)
    finally:
        context.close()
        delete_queue(stack.brokers["rabbitmq"]["amqp_url"], f"csp-{unique_name}")
        delete_queue(stack.brokers["rabbitmq"]["amqp_url"], f"csp-{unique_name}.dlq")
    assert violations == [], "\n".join(map(str, violations))
    assert _page_routes() - visited == set(), "page routes this test does not visit"
