"""Bounded queueing for the web tier: a clear busy answer in seconds, never a queue of minutes.

`WebLimits` wraps the HTTP side of the ASGI application (dashboard/asgi.py). In each
worker process:

- At most SLUICE_WEB_CONCURRENCY requests are in progress. One more waits, in arrival
  order, up to SLUICE_WEB_QUEUE_SECONDS for a place, then gets 503 with Retry-After
  ("Sluice is busy: N requests ahead").
- A request whose answer has not started within SLUICE_REQUEST_TIMEOUT gets 504. Django
  runs a view in a thread that cannot be stopped, so the work keeps its place until it
  ends (Django is told that the client has gone, and what it still sends is dropped): the
  limit counts the work being done, not the clients still waiting for it.
- The probes (/healthz, /readyz, /metrics) have a few places of their own, so an
  orchestrator or Prometheus still gets an answer while pages queue.

Websockets never reach it: an open live view is a connection, not a request in progress.
"""

from __future__ import annotations

import asyncio
import collections
import html
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dashboard.security import CONTENT_SECURITY_POLICY, PERMISSIONS_POLICY

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
PROBE_PLACES = 4  # per worker: an orchestrator's probes and a scraper need no more


class Places:
    """`size` places, handed out in arrival order; a waiter gives up after `patience` seconds."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def ahead(self) -> int:
        """Requests a newcomer would be behind: those in progress and those waiting."""
        return self.taken + len(self._waiters)

    async def take(self, patience: float) -> bool:
        """Take a place, waiting at most `patience` seconds; False if none came free."""
        if self.taken < self.size and not self._waiters:
            self.taken += 1
            return True
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(place)
        try:
            await asyncio.wait_for(asyncio.shield(place), patience)
        except TimeoutError:
            self._leave(place)
            return False
        except asyncio.CancelledError:
            self._leave(place)
            raise
        return True

    def _leave(self, place: asyncio.Future[None]) -> None:
        if place.done():
            # Handed over just as the wait ended: pass it on rather than lose it.
            self.give_back()
        else:
            place.cancel()
            self._waiters.remove(place)

    def give_back(self) -> None:
        """Hand the place to the first waiter still waiting, or free it."""
        while self._waiters:
            place = self._waiters.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.taken -= 1


class WebLimits:
    """The HTTP app behind per-worker places, a short queue and a time limit (module docstring)."""

    def __init__(
        self, app: ASGIApp, *, concurrency: int, queue_seconds: float, request_timeout: float
    ) -> None:
        self.app = app
        self.queue_seconds = queue_seconds
        self.request_timeout = request_timeout
        self.pages = Places(concurrency)
        self.probes = Places(PROBE_PLACES)
        # Seconds a refused client is told to wait: about what it would have queued.
        self.retry_after = max(2, round(queue_seconds))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        places = self.probes if scope["path"] in PROBES else self.pages
        ahead = places.ahead()
        if not await places.take(self.queue_seconds):
            await _refuse(scope, send, 503, busy_message(ahead), retry_after=self.retry_after)
            return
        try:
            await self._answer_in_time(scope, receive, send)
        finally:
            places.give_back()

    async def _answer_in_time(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        late = asyncio.Event()

        async def send_unless_late(message: Message) -> None:
            nonlocal started
            if late.is_set():
                return  # the client has had its 504; the rest of this answer goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def receive_until_late() -> Message:
            if late.is_set():
                return {"type": "http.disconnect"}
            message = asyncio.ensure_future(receive())
            too_late = asyncio.ensure_future(late.wait())
            try:
                done, _ = await asyncio.wait(
                    {message, too_late}, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                message.cancel()
                too_late.cancel()
                raise
            too_late.cancel()
            if message in done:
                return message.result()
            message.cancel()
            # Django listens for the client's going: after the 504, it has gone.
            return {"type": "http.disconnect"}

        work = asyncio.ensure_future(self.app(scope, receive_until_late, send_unless_late))
        try:
            done, _ = await asyncio.wait({work}, timeout=self.request_timeout)
            if not done and not started:
                late.set()
                log.warning(
                    "%s %s: no answer within %s s; sent 504",
                    scope.get("method"),
                    scope["path"],
                    self.request_timeout,
                )
                await _refuse(scope, send, 504, timeout_message(self), retry_after=self.retry_after)
            # A streaming answer that has started runs to its end. Either way the work
            # keeps its place until it is over.
            await work
        except asyncio.CancelledError:
            work.cancel()
            raise


def busy_message(ahead: int) -> str:
    requests = "request" if ahead == 1 else "requests"
    return f"Sluice is busy: {ahead} {requests} ahead; try again in a few seconds."


def timeout_message(limits: WebLimits) -> str:
    return (
        f"Sluice did not finish this answer within {limits.request_timeout:g} s; it is busy, "
        "or the page asks for too much (a filter makes it smaller). Try again in a few seconds."
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  {refresh}<title>{title} · Sluice</title>
  <link rel="stylesheet" href="/static/css/sluice.css">
</head>
<body>
  <main>
    <section class="card empty">
      <h1>{title}</h1>
      <p>{message}</p>
    </section>
  </main>
</body>
</html>
"""


async def _refuse(scope: Scope, send: Send, status: int, message: str, *, retry_after: int) -> None:
    """The busy or timeout answer: a short page for a browser, JSON for anything else."""
    accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin1")
    if "text/html" in accept:
        title = "Sluice is busy" if status == 503 else "Sluice took too long"
        # A browser asks again by itself; a form is never posted twice.
        refresh = (
            f'<meta http-equiv="refresh" content="{retry_after}">\n  '
            if scope.get("method") == "GET"
            else ""
        )
        body = PAGE.format(title=title, message=html.escape(message), refresh=refresh).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": message, "retry_after": retry_after}).encode()
        content_type = b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"cache-control", b"no-store"),
                (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                (b"permissions-policy", PERMISSIONS_POLICY.encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
