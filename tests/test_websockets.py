"""What every websocket shares: the origin check, the cap per user, the close at sign-out."""

from __future__ import annotations

import asyncio
import html
import time
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from dashboard.asgi import application
from dashboard.live import sockets
from tests.kafka.test_tail import run
from tests.nats.test_tail import NatsTail, core_publish, tail_connections, ws_path

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


def _scope(origin: str | None, host: str | None = None, **extra: Any) -> dict[str, Any]:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if host is not None:
        headers.append((b"host", host.encode()))
    return {"type": "websocket", "headers": headers, **extra}


# -- the origin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin,host,extra,allowed",
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", {}, True),
        ("http://localhost:8000", "localhost:8000", {}, True),
        # The probe's case: the right host on another port.
        ("http://127.0.0.1:9999", "127.0.0.1:8000", {}, False),
        ("http://127.0.0.1", "127.0.0.1:8000", {}, False),
        ("https://127.0.0.1:8000", "127.0.0.1:8000", {}, False),
        ("http://evil.example:8000", "127.0.0.1:8000", {}, False),
        # A page of another host that points its name at Sluice (DNS rebinding).
        ("http://evil.example:8000", "evil.example:8000", {}, False),
        ("null", "127.0.0.1:8000", {}, False),
        (None, "127.0.0.1:8000", {}, False),
        ("http://127.0.0.1:notaport", "127.0.0.1:8000", {}, False),
        # wss: the page is https.
        ("https://127.0.0.1:8443", "127.0.0.1:8443", {"scheme": "wss"}, True),
        ("http://127.0.0.1:8443", "127.0.0.1:8443", {"scheme": "wss"}, False),
        # Without a Host (no browser): the allowed hosts on the scheme's port.
        ("http://127.0.0.1", None, {}, True),
        ("http://127.0.0.1:9999", None, {}, False),
    ],
)
def test_the_origin_must_match_scheme_host_and_port(origin, host, extra, allowed):
    assert sockets.origin_allowed(_scope(origin, host, **extra)) is allowed


def test_trusted_origins_and_the_proxy_header_count(settings):
    settings.ALLOWED_HOSTS = ["sluice.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://sluice.example.com", "https://*.ops.example"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind_tls = [(b"x-forwarded-proto", b"https")]

    def allowed(origin: str, host: str, headers: list[Any] = ()) -> bool:  # type: ignore[assignment]
        scope = _scope(origin, host)
        scope["headers"] += list(headers)
        return sockets.origin_allowed(scope)

    # The proxy ends TLS: the socket reaches Sluice as ws://, its page was https://.
    assert allowed("https://sluice.example.com", "sluice.example.com", behind_tls)
    assert not allowed("https://sluice.example.com:8443", "sluice.example.com", behind_tls)
    assert allowed("https://a.ops.example", "sluice.example.com")
    assert not allowed("https://a.ops.example:444", "sluice.example.com")
    assert not allowed("http://a.ops.example", "sluice.example.com")
    assert not allowed("http://sluice.example.com", "sluice.example.com", behind_tls)


def test_a_socket_from_another_port_is_refused_at_the_handshake(personas):
    async def connect(origin: bytes) -> tuple[bool, Any]:
        ws = WebsocketCommunicator(
            application,
            "/ws/live/?view=overview",
            headers=[(b"origin", origin), (b"host", b"127.0.0.1:8000")],
        )
        ws.scope["user"] = personas["carol"]
        result = await ws.connect()
        await ws.disconnect()
        return result

    assert async_to_sync(connect)(b"http://127.0.0.1:8000")[0] is True
    assert async_to_sync(connect)(b"http://127.0.0.1:9999")[0] is False


# -- unknown paths -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/", "/", "/ws/live/extra", "/ws/tail/kafka"])
def test_an_unknown_path_is_refused_not_an_error(personas, path):
    async def go() -> tuple[bool, Any]:
        ws = WebsocketCommunicator(application, path, headers=[ORIGIN])
        ws.scope["user"] = personas["carol"]
        result = await ws.connect()
        await ws.disconnect()
        return result

    assert run(go) == (False, 4404)


# -- signing out ---------------------------------------------------------------------


def test_signing_out_closes_the_live_socket_and_the_tail(personas, nats_broker, js, nats):
    """The sockets of a session end with 4401 when it signs out; the tail lets go of NATS."""
    client = Client()
    client.force_login(personas["carol"])
    other = Client()  # the same user in another browser stays
    other.force_login(personas["carol"])

    def headers(c: Client) -> list[tuple[bytes, bytes]]:
        return [ORIGIN, (b"cookie", f"sessionid={c.cookies['sessionid'].value}".encode())]

    async def go() -> tuple[Any, Any, Any, NatsTail]:
        live = WebsocketCommunicator(application, "/ws/live/?view=overview", headers(client))
        elsewhere = WebsocketCommunicator(application, "/ws/live/?view=overview", headers(other))
        path = ws_path("nats", "signout.>")
        tail = NatsTail(AnonymousUser(), path)
        tail.ws = WebsocketCommunicator(application, path, headers(client))  # the session's user
        assert (await live.connect(timeout=5))[0]
        assert (await elsewhere.connect(timeout=5))[0]
        assert (await tail.open())[0]
        await tail.started()
        await sync_to_async(client.post)("/logout/")
        closed = await live.receive_output(timeout=5)
        await tail.until(lambda: tail.closed is not None)
        await live.disconnect()
        still = await elsewhere.receive_nothing(timeout=0.5)
        await elsewhere.disconnect()
        return closed, still, tail.closed, tail

    closed, still_open, tail_code, tail = run(go)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)
    assert tail_code == 4401
    assert "Signed out." in html.unescape(tail.text)
    assert still_open is True  # nothing came: the other session's socket is open
    deadline = time.monotonic() + 5
    while tail_connections(nats["monitoring_url"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tail_connections(nats["monitoring_url"]) == []


# -- the cap per user ----------------------------------------------------------------


@pytest.fixture
def places(personas: dict[str, Any]) -> Any:
    from django.conf import settings

    client = sockets._client(settings.REDIS_URL)
    key = sockets._places(personas["carol"].pk)
    client.delete(key)
    yield client, key
    client.delete(key)


def test_a_user_gets_at_most_the_cap_of_live_views(personas, nats_broker, places, settings):
    settings.SLUICE_WS_MAX_PER_USER = 3
    client, key = places
    # Places left by a server killed with its sockets open: lapsed, so they do not count.
    lapsed = time.time() - 1
    client.zadd(key, {f"dead-{n}": lapsed for n in range(5)})

    def live() -> WebsocketCommunicator:
        ws = WebsocketCommunicator(application, "/ws/live/?view=overview", headers=[ORIGIN])
        ws.scope["user"] = personas["carol"]
        return ws

    async def go() -> dict[str, Any]:
        open_ = [live() for _ in range(3)]
        for ws in open_:
            assert (await ws.connect(timeout=5))[0]
        extra = live()
        assert (await extra.connect(timeout=5))[0]
        refused = await extra.receive_output(timeout=5)
        await extra.disconnect()
        tail = NatsTail(personas["carol"], ws_path("nats", "cap.>"))
        assert (await tail.open())[0]
        await tail.until(lambda: tail.closed is not None)
        # One closes: its place is free for the next.
        await open_[0].disconnect()
        again = live()
        assert (await again.connect(timeout=5))[0]
        ttl = await asyncio.to_thread(client.ttl, key)
        for ws in [*open_[1:], again]:
            await ws.disconnect()
        return {"refused": refused, "tail": tail, "ttl": ttl}

    got = run(go)
    assert got["refused"]["type"] == "websocket.close"
    assert got["refused"]["code"] == sockets.CLOSE_TOO_MANY
    assert "at most 3 per user" in got["refused"]["reason"]
    assert got["tail"].closed == sockets.CLOSE_TOO_MANY
    assert "Too many live views open: at most 3 per user" in html.unescape(got["tail"].text)
    assert 0 < got["ttl"] <= sockets.SLOT_SECONDS  # the count itself expires
    assert client.zcard(key) == 0  # every socket gave its place back


# -- NATS's own subjects -------------------------------------------------------------


@pytest.mark.parametrize("subject", ["$SYS.>", "$JS.API.>", "$JS.ACK.orders.>", "$JSC.>", "$NRG.>"])
def test_a_viewer_cannot_tail_nats_system_subjects(personas, nats_broker, subject):
    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", subject))
        assert (await t.open())[0]
        await t.until(lambda: t.closed is not None)
        return t

    t = run(go)
    assert t.closed == 4400
    assert f"Cannot tail {subject.split('.')[0]}. subjects: they are NATS's own" in html.unescape(
        t.text
    )
    assert "Tail started" not in t.text


def test_a_wildcard_tail_leaves_nats_system_subjects_out(personas, nats_broker, js, unique_name):
    """`>` matches the JetStream API's requests too: they are not shown."""
    u = unique_name

    async def go() -> NatsTail:
        t = NatsTail(personas["carol"], ws_path("nats", ">"))
        assert (await t.open())[0]
        await t.started()
        # A stream's creation is a request on $JS.API.STREAM.CREATE.<name>.
        await asyncio.to_thread(js.add_stream, f"S{u}", [f"{u}.stored"])
        await asyncio.to_thread(core_publish, js, [(f"{u}.after", b"after")])
        await t.until(lambda: any(r["subject"] == f"{u}.after" for r in t.rows))
        await t.close()
        return t

    t = run(go)
    internal = [r["subject"] for r in t.rows if r["subject"].startswith("$")]
    assert internal == []


# -- the real server -----------------------------------------------------------------


def test_daphne_checks_the_port_and_closes_the_socket_at_sign_out(stack):
    import websockets

    session = stack.login()
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    url = stack.url.replace("http://", "ws://") + "/ws/live/?view=overview"
    other_port = stack.url.rsplit(":", 1)[0] + ":9999"

    async def go() -> int | None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                url, additional_headers={"Cookie": cookie, "Origin": other_port}
            ):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": stack.url}
        ) as ws:
            logout = await asyncio.to_thread(
                session.post,
                f"{stack.url}/logout/",
                headers={"X-CSRFToken": session.cookies["csrftoken"], "Origin": stack.url},
                timeout=10,
            )
            assert logout.status_code in (200, 302), logout.status_code
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(go()) == 4401
    # The session the socket had is gone.
    after = requests.get(f"{stack.url}/", headers={"Cookie": cookie}, timeout=10)
    assert after.url.endswith("/login/?next=/")
