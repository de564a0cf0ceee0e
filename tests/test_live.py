"""Live updates: a collection pushes the re-rendered fragment to the websocket of each view."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from brokers.base import Destination as D
from brokers.base import Health, Snapshot
from dashboard.asgi import application
from dashboard.collection import collector
from dashboard.live import fragments, watch
from dashboard.live import push as live
from dashboard.models import Broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clean_registry():
    watch._redis().delete(watch.VIEWS_KEY)
    yield
    watch._redis().delete(watch.VIEWS_KEY)


def snapshot(backlog: int) -> Snapshot:
    return Snapshot(
        Health(backlog=backlog),
        (D(kind="queue", name="orders", key="//orders", vhost="/", backlog=backlog),),
    )


def test_websocket_receives_the_updated_fragment(personas):
    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://x"}
    )
    collector.store(broker, snapshot(5), now=1000.0)

    async def run() -> str:
        ws = WebsocketCommunicator(
            application,
            "/ws/live/?view=overview%3Fq%3Dorders",
            headers=[(b"origin", b"http://127.0.0.1")],
        )
        ws.scope["user"] = personas["carol"]
        connected, _ = await ws.connect()
        assert connected
        from channels.db import database_sync_to_async

        def collect_again() -> int:
            collector.store(broker, snapshot(4242), now=1005.0)
            return live.broadcast("rabbit")

        assert await database_sync_to_async(collect_again)() == 1
        html = await ws.receive_from(timeout=5)
        await ws.disconnect()
        return html

    html = async_to_sync(run)()
    assert html.startswith('\n<div id="live">') or '<div id="live">' in html[:50]
    assert ">4,242</td>" in html


def test_viewers_of_one_view_share_one_render(personas):
    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://x"}
    )
    collector.store(broker, snapshot(1), now=1000.0)

    async def run() -> tuple[int, list[str]]:
        sockets = []
        for _ in range(5):
            ws = WebsocketCommunicator(
                application, "/ws/live/?view=overview", headers=[(b"origin", b"http://127.0.0.1")]
            )
            ws.scope["user"] = personas["carol"]
            assert (await ws.connect())[0]
            sockets.append(ws)
        from channels.db import database_sync_to_async

        renders = await database_sync_to_async(live.broadcast)("rabbit")
        received = [await ws.receive_from(timeout=5) for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        return renders, received

    renders, received = async_to_sync(run)()
    assert renders == 1
    assert len(set(received)) == 1
    assert watch.watched() == []  # everyone left


def test_views_of_other_brokers_are_not_rendered(personas):
    Broker.objects.create(name="a", kind="rabbitmq", options={"management_url": "http://x"})
    Broker.objects.create(name="b", kind="rabbitmq", options={"management_url": "http://x"})
    view = watch.parse("broker/a")
    assert view is not None
    watch.watch(view)
    assert live.broadcast("b") == 0
    assert live.broadcast("a") == 1


def test_an_idle_websocket_still_gets_the_next_update(personas):
    """A viewer can wait longer than the channel layer's 5 s blocking read."""
    import asyncio

    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://x"}
    )
    collector.store(broker, snapshot(1), now=1000.0)

    async def run() -> str:
        ws = WebsocketCommunicator(
            application, "/ws/live/?view=overview", headers=[(b"origin", b"http://127.0.0.1")]
        )
        ws.scope["user"] = personas["carol"]
        assert (await ws.connect())[0]
        await asyncio.sleep(7)
        from channels.db import database_sync_to_async

        def collect_again() -> int:
            collector.store(broker, snapshot(77), now=1005.0)
            return live.broadcast("rabbit")

        assert await database_sync_to_async(collect_again)() == 1
        html = await ws.receive_from(timeout=5)
        await ws.disconnect()
        return html

    assert ">77</td>" in async_to_sync(run)()


def test_each_push_carries_the_generation_it_shows(personas):
    """A client counts the generations it saw: one collection moves it on by one."""
    import re

    broker = Broker.objects.create(
        name="rabbit", kind="rabbitmq", options={"management_url": "http://x"}
    )
    collector.store(broker, snapshot(1), now=1000.0)

    async def run() -> list[str]:
        ws = WebsocketCommunicator(
            application, "/ws/live/?view=overview", headers=[(b"origin", b"http://127.0.0.1")]
        )
        ws.scope["user"] = personas["carol"]
        assert (await ws.connect())[0]
        from channels.db import database_sync_to_async

        received = []
        for backlog, now in ((2, 1005.0), (3, 1010.0)):

            def collect_again(backlog: int = backlog, now: float = now) -> int:
                with fragments.collecting():  # as the worker collects (dashboard/tasks.py)
                    collector.store(broker, snapshot(backlog), now=now)
                return live.broadcast("rabbit")

            assert await database_sync_to_async(collect_again)() == 1
            received.append(await ws.receive_from(timeout=5))
        await ws.disconnect()
        return received

    first, second = async_to_sync(run)()
    numbers = [re.match(r"<!-- generation (\d+) -->", html) for html in (first, second)]
    assert numbers[0] and numbers[1]
    assert int(numbers[1][1]) == int(numbers[0][1]) + 1
    assert ">3</td>" in second
