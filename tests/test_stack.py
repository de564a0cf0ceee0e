"""End to end: the real stack (daphne, Celery worker and beat) collecting real brokers."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import pika
import requests
import websockets

from tests.app_fixtures import wait_for
from tests.stack_fixtures import INTERVAL

# RabbitMQ's management plugin refreshes its own figures every 5 s; Sluice
# must show them within two of its own intervals after that.
RABBIT_STATS_INTERVAL = 5
DEADLINE = RABBIT_STATS_INTERVAL + 2 * INTERVAL + 1


def api(stack, token: str, path: str) -> dict:
    response = requests.get(
        f"{stack.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text[:300]
    return response.json()


def publish(amqp_url: str, queue: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue)
    channel.confirm_delivery()
    for i in range(count):
        channel.basic_publish("", queue, f"message {i}".encode())
    connection.close()


def delete_queue(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_delete(queue)
    connection.close()


def backlog_of(stack, token: str, queue: str) -> int | None:
    rows = api(stack, token, f"/brokers/rabbit/destinations?q={quote(queue)}")["destinations"]
    return rows[0]["backlog"] if rows else None


def test_published_messages_reach_the_api_and_page_within_two_intervals(stack, unique_name):
    token = stack.token("carol", "viewer")
    queue = f"e2e-{unique_name}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    try:
        publish(amqp_url, queue, 1)
        wait_for(lambda: backlog_of(stack, token, queue) == 1, timeout=30)
        publish(amqp_url, queue, 41)
        published = time.monotonic()
        wait_for(lambda: backlog_of(stack, token, queue) == 42, timeout=DEADLINE, every=0.25)
        assert time.monotonic() - published <= DEADLINE
        page = stack.login().get(f"{stack.url}/?q={quote(queue)}", timeout=10).text
        assert ">42</td>" in page
    finally:
        delete_queue(amqp_url, queue)


def test_a_down_broker_is_shown_and_the_others_keep_updating(stack):
    token = stack.token("carol", "viewer")

    def states() -> dict:
        return {b["name"]: b for b in api(stack, token, "/brokers")["brokers"]}

    first = wait_for(
        lambda: (
            (s := states())
            and s["gone"]["status"] == "down"
            and s["rabbit"]["last_collected"]
            and s
        ),
        timeout=30,
    )
    assert first["gone"]["error"]
    assert first["gone"]["down_since"]
    # Every other broker goes on being collected, interval after interval.
    later = wait_for(
        lambda: (
            (s := states())
            and all(
                s[n]["last_collected"] != first[n]["last_collected"]
                for n in ("rabbit", "kafka", "nats")
            )
            and s
        ),
        timeout=4 * INTERVAL + 5,
    )
    assert {later[n]["status"] for n in ("rabbit", "kafka", "nats")} == {"up"}
    assert later["gone"]["down_since"] == first["gone"]["down_since"]
    session = stack.login()
    for path in ("/", "/brokers/gone/", "/brokers/rabbit/"):
        assert session.get(f"{stack.url}{path}", timeout=10).status_code == 200


def test_a_websocket_viewer_receives_the_new_figures(stack, unique_name):
    queue = f"ws-{unique_name}"
    amqp_url = stack.brokers["rabbitmq"]["amqp_url"]
    session = stack.login()
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    ws_url = (
        stack.url.replace("http://", "ws://")
        + "/ws/live/?view="
        + quote(f"overview?q={queue}", safe="")
    )

    async def watch() -> str:
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie, "Origin": stack.url}
        ) as ws:
            publish(amqp_url, queue, 7)
            deadline = time.monotonic() + DEADLINE + 5
            while time.monotonic() < deadline:
                frame = await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic())
                html = frame if isinstance(frame, str) else frame.decode()
                if ">7</td>" in html:
                    return html
        raise AssertionError("no fragment with the new backlog arrived")

    try:
        html = asyncio.run(watch())
        assert 'id="live"' in html
        assert queue in html
    finally:
        delete_queue(amqp_url, queue)
