"""What every websocket shares: the origin check, the per-user cap, the close at sign-out.

- `SameOrigin` (dashboard/asgi.py) lets a socket through only from a page Sluice
  served: its Origin is the request's own scheme, host and port (the host one of
  ALLOWED_HOSTS), or one of CSRF_TRUSTED_ORIGINS. Channels' own validator
  compares host names only, so any port on an allowed host got in.
- `GuardedSocket` is the base of the live and tail consumers: it checks the
  user, joins the group of the session (`user_logged_out` sends it
  "session.ended", so the sockets of a session close when it signs out), and
  holds one of the user's SLUICE_WS_MAX_PER_USER places.
- Places are counted in Redis, one sorted set per user: a socket's entry expires
  SLOT_SECONDS after its last renewal, so a server killed with its sockets open
  leaves no phantom entries for long.
- `NoSuchSocket` answers any other path: refused at the handshake, not an exception.

Close codes: 4401 no session or signed out, 4403 no role, 4429 too many live
views, 1013 Redis unreachable (try again later).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from dashboard.auth import role_of

log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT, CLOSE_NO_ROLE, CLOSE_TOO_MANY, CLOSE_TRY_LATER = 4401, 4403, 4429, 1013
SLOT_SECONDS = 60  # an open socket's place lapses this long after its last renewal
RENEW_SECONDS = 20
DEFAULT_PORTS = {"http": 80, "https": 443}

# -- the origin -------------------------------------------------------------------


def _header(scope: dict[str, Any], name: bytes) -> list[str]:
    return [v.decode("latin1") for k, v in scope.get("headers", []) if k == name]


def _normal(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's port filled in; None if it names no host."""
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


def _secure(scope: dict[str, Any]) -> bool:
    if scope.get("scheme") == "wss":
        return True
    # Behind a proxy that ends TLS, as Django's request.is_secure() decides it.
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if not proxy:
        return False
    name = proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
    values = _header(scope, name)
    return bool(values) and values[0].split(",")[0].strip() == proxy[1]


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]  # as Django's request.get_host()
    return hosts


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the socket comes from a page of this site (see the module's docstring)."""
    origins = _header(scope, b"origin")
    if len(origins) != 1:
        return False
    parts = urlsplit(origins[0])
    origin = _normal(parts.scheme, parts.netloc) if parts.scheme in DEFAULT_PORTS else None
    if origin is None:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        t = urlsplit(trusted)
        if t.scheme != origin[0]:
            continue
        if "*" in t.netloc:
            if is_same_domain(parts.netloc.lower(), t.netloc.lower().removeprefix("*")):
                return True
        elif _normal(t.scheme, t.netloc) == origin:
            return True
    scheme = "https" if _secure(scope) else "http"
    hosts = _header(scope, b"host")
    if not hosts:
        # No browser leaves Host out; a client that does is held to the allowed
        # hosts on the scheme's own port.
        return (
            origin[0] == scheme
            and origin[2] == DEFAULT_PORTS[scheme]
            and validate_host(origin[1], _allowed_hosts())
        )
    domain, _ = split_domain_port(hosts[0])
    return (
        bool(domain)
        and validate_host(domain, _allowed_hosts())
        and (_normal(scheme, hosts[0]) == origin)
    )


class SameOrigin:
    """ASGI middleware: websockets from other origins are refused at the handshake."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


# -- the session's group ------------------------------------------------------------


def _session_group(session_key: str) -> str:
    # A digest: the session key signs its user in, and group names are Redis keys.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def session_group(scope: dict[str, Any]) -> str | None:
    key = getattr(scope.get("session"), "session_key", None)
    return _session_group(key) if key else None


def end_session_sockets(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """On `user_logged_out` (before the session is flushed): close its sockets."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if not key:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(
            _session_group(key), {"type": "session.ended"}
        )
    except (redis.RedisError, OSError) as exc:
        # Signing out must work with Redis down; its sockets have lost Redis too.
        log.warning("Could not close the websockets of a session that signed out: %s", exc)


# -- places per user ----------------------------------------------------------------


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _places(user_id: Any) -> str:
    return f"sluice:ws:places:{user_id}"


def take_place(user_id: Any, socket: str, cap: int) -> bool:
    """Count `socket` among the user's open sockets, unless `cap` are open already."""
    client, key, now = _client(settings.REDIS_URL), _places(user_id), time.time()
    pipe = client.pipeline()  # MULTI/EXEC: no other socket counts in between
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zadd(key, {socket: now + SLOT_SECONDS})
    pipe.zcard(key)
    pipe.expire(key, SLOT_SECONDS)
    count = pipe.execute()[2]
    if count > cap:
        client.zrem(key, socket)
        return False
    return True


def renew_place(user_id: Any, socket: str) -> None:
    client, key = _client(settings.REDIS_URL), _places(user_id)
    client.zadd(key, {socket: time.time() + SLOT_SECONDS})
    client.expire(key, SLOT_SECONDS)


def free_place(user_id: Any, socket: str) -> None:
    _client(settings.REDIS_URL).zrem(_places(user_id), socket)


# -- the consumers ------------------------------------------------------------------


class GuardedSocket(AsyncWebsocketConsumer):
    """Checks the user (`admit`), then joins the session's group and takes a place (`settle`)."""

    _place: tuple[Any, str] | None = None
    _group: str | None = None
    _renewer: asyncio.Task[None] | None = None

    async def admit(self) -> bool:
        """True if the user has a role; else the socket is refused with 4401 or 4403."""
        user = self.scope.get("user")
        if await database_sync_to_async(role_of)(user) is None:
            # 4401/4403 tell the page's script not to retry with the same session.
            signed_in = getattr(user, "is_authenticated", False)
            await self.close(code=CLOSE_NO_ROLE if signed_in else CLOSE_SIGNED_OUT)
            return False
        return True

    async def settle(self) -> bool:
        """True if the socket may stay (the caller accepts it once ready), else it is
        accepted and ended at once (`end`), so that the page learns why."""
        user_id, cap = self.scope["user"].pk, settings.SLUICE_WS_MAX_PER_USER
        try:
            group = session_group(self.scope)
            if group:
                await self.channel_layer.group_add(group, self.channel_name)
                self._group = group
            taken = await asyncio.to_thread(take_place, user_id, self.channel_name, cap)
        except (redis.RedisError, OSError) as exc:
            await self.accept()
            await self.end(f"Live updates are unavailable: {exc}", CLOSE_TRY_LATER)
            return False
        if not taken:
            await self.accept()
            message = f"Too many live views open: at most {cap} per user. Close some, then reload."
            await self.end(message, CLOSE_TOO_MANY)
            return False
        self._place = (user_id, self.channel_name)
        self._renewer = asyncio.create_task(self._renew())
        return True

    async def _renew(self) -> None:
        while self._place is not None:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await asyncio.to_thread(renew_place, *self._place)
            except (redis.RedisError, OSError) as exc:
                log.warning("Could not renew a websocket's place: %s", exc)

    async def end(self, message: str, code: int) -> None:
        """Let go of everything and close with `code`; a subclass may show `message` first."""
        await self.release()
        # A close frame's reason is at most 123 bytes.
        await self.close(code=code, reason=message.encode()[:123].decode("utf-8", "ignore"))

    async def release(self) -> None:
        """Give back the place and leave the session's group; safe to call twice."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
        place, self._place = self._place, None
        group, self._group = self._group, None
        try:
            if place is not None:
                await asyncio.to_thread(free_place, *place)
            if group is not None:
                await self.channel_layer.group_discard(group, self.channel_name)
        except (redis.RedisError, OSError) as exc:
            # The place lapses by itself, and the group's entry expires.
            log.warning("Could not release a websocket's place: %s", exc)

    async def session_ended(self, event: dict[str, Any]) -> None:
        await self.end("Signed out.", CLOSE_SIGNED_OUT)


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any path no route names: refused at the handshake, as an unknown page is a 404."""

    channel_layer_alias = None

    async def connect(self) -> None:
        await self.close(code=4404)
