"""The live tail: one websocket, one reader of the broker, rows and the rate pushed as they come.

Unlike the rest of the live pipeline (collector -> group_send -> thin
consumer), a tail is personal: each viewer chooses the topic, partition and
starting point, and nothing else in Sluice needs the messages. So the consumer
here owns a reader for as long as its socket is open.

    browser ── ws/tail/<broker>/<topic>?partition=&last= ──► KafkaTailConsumer
                                                               │ one thread per socket
                                                               ▼
                                                  Reader.start / poll / close
                                                  (kinds.kafka.tail.KafkaReader: a
                                                   KafkaConsumer with no group)

A `Reader` hides the broker: `start()` positions it (raising `BrokerError`),
`poll(timeout)` returns `Record`s, `close()` releases it. All three run on the
socket's own thread, one after the other, so the event loop never blocks and
the client is never used from two threads. Each kind's tail subclasses
`TailConsumer`, naming its page (`template`) and building its reader
(`make_reader`), and mounts its route (`Kind.websocket_urls`): Kafka in
dashboard/kinds/kafka/tail.py, NATS in dashboard/kinds/nats/tail.py (a core subscription).

What is pushed: HTML fragments, swapped by htmx's ws extension by id
(`#tail-rows` gets rows prepended, `#tail-status` the rate once a second,
`#tail-controls` the pause button, `#tail-error` what went wrong). Broker data
is escaped by the templates; binary bodies and keys show as hex.

Limits: at most MAX_ROWS_PER_SECOND rows a second are sent; above that,
every k-th message is (k from the last second's rate) and the status says
"showing 50 of 1,200 msg/s". The page keeps MAX_ROWS rows.

Close codes: 4401/4403 no session (or signed out since) or no role, 4429 too
many live views (all three from dashboard/live/sockets.py, as for the live socket),
4400 bad parameters, 4404 unknown broker or topic; 1013 ("try again later") when
the broker cannot be reached, which htmx's ws extension answers by reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from brokers import readable
from brokers.base import BrokerError
from dashboard import masking
from dashboard.live.sockets import GuardedSocket

MAX_ROWS = 500  # rows the page keeps
MAX_ROWS_PER_SECOND = 50  # rows sent a second; above that the tail samples
MAX_LAST = 100  # "from the last N" per partition, at most
RATE_WINDOW = 5.0  # seconds the shown rate is averaged over
POLL_SECONDS = 0.25  # one poll's wait; bounds how late a close can be
CHECK_SECONDS = 5.0  # after this long with nothing read, a reader checks its broker still answers
PREVIEW_BYTES = 1024  # of a body kept per record; the row shows less
BODY_CHARS = 200
KEY_CHARS = 80
HEADER_CHARS = 60
HEX_BYTES = 48

CLOSE_BAD_REQUEST, CLOSE_NOT_FOUND, CLOSE_TRY_LATER = 4400, 4404, 1013


# -- what a reader returns ----------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One message as the tail shows it; `body` is at most PREVIEW_BYTES of it."""

    body: bytes
    size: int  # the whole body's size
    position: int | None = None  # Kafka offset, NATS stream sequence; None for core NATS
    partition: int | None = None  # Kafka only
    subject: str = ""  # NATS only
    timestamp: float | None = None  # Unix seconds, when the broker stamps messages
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # Already in the topic when the tail began ("from the last N"): shown once,
    # not counted in the rate and not sampled.
    earlier: bool = False


class Reader(Protocol):
    """A source of live messages for one socket; every call runs on the socket's thread."""

    description: str  # what is read, for the page: "all 3 partitions, from the end"

    def start(self) -> None:
        """Connect and take position; BrokerError (retryable False: unknown topic) if not."""
        ...

    def poll(self, timeout: float) -> list[Record]:
        """What arrived since the last call, waiting up to `timeout` s for something.

        Raises BrokerError when the broker is gone (checked when nothing comes
        for CHECK_SECONDS: a silent broker and a quiet topic look alike otherwise).
        """
        ...

    def close(self) -> None: ...


# -- counting and sampling ----------------------------------------------------


class Meter:
    """Messages in, rows shown and messages the cap left out, over the last RATE_WINDOW seconds."""

    def __init__(self, now: float, window: float = RATE_WINDOW) -> None:
        self.started = now
        self.window = window
        self._events: deque[tuple[float, int, int, int]] = deque()

    def add(self, now: float, incoming: int, shown: int, skipped: int) -> None:
        if incoming or shown or skipped:
            self._events.append((now, incoming, shown, skipped))

    def rates(self, now: float) -> tuple[float, float, bool]:
        """(incoming/s, shown/s, whether the cap left any out); early on, since the start."""
        while self._events and self._events[0][0] <= now - self.window:
            self._events.popleft()
        span = min(self.window, max(now - self.started, 1.0))
        return (
            sum(e[1] for e in self._events) / span,
            sum(e[2] for e in self._events) / span,
            any(e[3] for e in self._events),
        )


class Sampler:
    """At most `cap` rows a second: every k-th message, k from the last second's rate."""

    def __init__(self, cap: int = MAX_ROWS_PER_SECOND) -> None:
        self.cap = cap
        self._second = -1
        self._seen = 0  # messages in this second
        self._sent = 0  # rows sent in this second
        self._step = 1

    def choose(self, records: list[Record], now: float, send: bool = True) -> list[Record]:
        second = int(now)
        if second != self._second:
            before = self._seen if second == self._second + 1 else 0
            self._step = max(1, math.ceil(before / self.cap))
            self._second, self._seen, self._sent = second, 0, 0
        out = []
        for record in records:
            if send and self._seen % self._step == 0 and self._sent < self.cap:
                out.append(record)
                self._sent += 1
            self._seen += 1
        return out


# -- what the page gets -------------------------------------------------------


def preview(data: bytes | None, chars: int, cut: bool = False) -> dict[str, Any] | None:
    """Text if it is printable UTF-8, else hex; `cut` when `data` is only the start."""
    if data is None:
        return None
    text = _printable(data, cut)
    if text is None:
        shown = data[:HEX_BYTES].hex(" ")
        return {"text": shown, "binary": True, "cut": cut or len(data) > HEX_BYTES}
    return {"text": text[:chars], "binary": False, "cut": cut or len(text) > chars}


def _printable(data: bytes, cut: bool) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A body cut inside a multi-byte character is still text.
        if not (cut and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"):
            return None
        text = data[: exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r" or ord(c) == 127 for c in text):
        return None
    return text


def masked(record: Record, masker: masking.Masker) -> Record:
    """The record as `masker` lets it be seen: its body is a preview, so a JSON path over a
    body cut short withholds it (masking.HIDDEN)."""
    if not masker:
        return record
    return replace(
        record,
        body=masker.body(record.body),
        key=masker.raw("key", record.key),
        headers=tuple((n, masker.raw(n, v)) for n, v in record.headers),
    )


def row(record: Record) -> dict[str, Any]:
    """What a row needs; the template escapes all of it."""
    moment = readable.utc_time(record.timestamp)
    when = moment if isinstance(moment, datetime) else None
    return {
        "partition": record.partition,
        "subject": record.subject,
        "position": record.position,
        "when": f"{when:%H:%M:%S}.{when.microsecond // 1000:03d}" if when else "",
        # A producer's clock can say anything: out of range shows as unreadable.
        "when_full": f"{when:%Y-%m-%d %H:%M:%S.%f} UTC" if when else str(moment or ""),
        "key": preview(record.key, KEY_CHARS),
        "headers": [
            {"name": name, "value": preview(value, HEADER_CHARS)} for name, value in record.headers
        ],
        "body": preview(record.body, BODY_CHARS, cut=record.size > len(record.body)),
        "size": record.size,
        "earlier": record.earlier,
    }


def _fragment(part: str, template: str, **ctx: Any) -> str:
    return render_to_string(f"{template}#{part}", {"oob": True, **ctx})


# -- the websocket ------------------------------------------------------------


class TailConsumer(GuardedSocket):
    """One tail per socket: checks the user, starts a reader, pushes rows and the rate."""

    # Only the sign-out reaches a tail through the channel layer (GuardedSocket).
    # The page whose partials (rows, status, controls, error) are pushed: each kind's own.
    template = ""

    reader: Reader | None = None
    masker: masking.Masker = masking.NONE
    paused = False
    missed = 0  # messages that came while paused
    received = 0  # messages that came since the start
    shown = 0  # rows sent since the start
    _thread: ThreadPoolExecutor | None = None
    _tasks: tuple[asyncio.Task[None], ...] = ()

    async def connect(self) -> None:
        if not await self.admit() or not await self.settle():
            return
        await self.accept()
        kwargs = self.scope["url_route"]["kwargs"]
        query = dict(parse_qsl(self.scope.get("query_string", b"").decode("utf-8", "replace")))
        try:
            self.reader = await database_sync_to_async(self.make_reader)(kwargs, query)
            self.masker = await database_sync_to_async(self._masker)(kwargs, query)
        except Refused as exc:
            await self._fail(exc.message, exc.code)
            return
        self.meter, self.sampler = Meter(time.monotonic()), Sampler()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-tail")
        self._tasks = (asyncio.create_task(self._read()),)

    def make_reader(self, kwargs: Mapping[str, str], query: Mapping[str, str]) -> Reader:
        """The reader this socket asks for, or Refused; runs in a thread (it reads the database).

        Each kind's consumer says (dashboard/kinds/<kind>/tail.py).
        """
        raise NotImplementedError

    def _fragment(self, part: str, **ctx: Any) -> str:
        return _fragment(part, template=self.template, **ctx)

    def _masker(self, kwargs: Mapping[str, str], query: Mapping[str, str]) -> masking.Masker:
        """What this socket's user may see of the topic or subject (dashboard.masking)."""
        session = self.scope.get("session")
        raw = bool(session.get(masking.RAW_SESSION_KEY)) if session is not None else False
        place = kwargs.get("topic") or query.get("subject", "")
        return masking.masker(self.scope.get("user"), kwargs.get("broker", ""), place, raw)

    async def disconnect(self, code: int) -> None:
        await self._stop()
        await self.release()

    async def end(self, message: str, code: int) -> None:
        await self._fail(message, code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """{"action": "pause"} or {"action": "resume"}, as htmx's ws-send sends the form."""
        try:
            action = json.loads(text_data or "{}").get("action")
        except (ValueError, AttributeError):
            return
        if action == "pause" and not self.paused:
            self.paused, self.missed = True, 0
        elif action == "resume" and self.paused:
            self.paused = False
            n = self.missed
            note = f"Resumed; {n:,} message{'s' if n != 1 else ''} came while paused and are not shown."
            await self._push(self._fragment("rows", rows=[{"mark": note}]))
        else:
            return
        await self._push(self._fragment("controls", paused=self.paused), self._status())

    # -- reading and telling ------------------------------------------------

    async def _read(self) -> None:
        """Start the reader, then poll it and send what the cap lets through."""
        assert self.reader is not None and self._thread is not None
        loop = asyncio.get_running_loop()
        reader, thread = self.reader, self._thread
        try:
            await loop.run_in_executor(thread, reader.start)
        except BrokerError as exc:
            await self._fail(exc.message, CLOSE_TRY_LATER if exc.retryable else CLOSE_NOT_FOUND)
            return
        self.meter, self.sampler = Meter(time.monotonic()), Sampler()
        started = f"Tail started at {datetime.now(UTC):%H:%M:%S} UTC: {reader.description}."
        await self._push(
            self._fragment("error", error=""),
            self._fragment("rows", rows=[{"mark": started}]),
            self._status(),
        )
        # The rate goes out on its own clock, so a slow poll cannot hold it up.
        self._tasks += (asyncio.create_task(self._tick()),)
        while True:
            try:
                records = await loop.run_in_executor(thread, reader.poll, POLL_SECONDS)
            except BrokerError as exc:
                await self._fail(exc.message, CLOSE_TRY_LATER)
                return
            now = time.monotonic()
            earlier = [r for r in records if r.earlier][-MAX_ROWS:]
            live = [r for r in records if not r.earlier]
            chosen = self.sampler.choose(live, now, send=not self.paused)
            # While paused nothing is shown, but that is not sampling.
            skipped = 0 if self.paused else len(live) - len(chosen)
            self.meter.add(now, len(live), len(chosen), skipped)
            self.received += len(live)
            self.shown += len(chosen)
            if self.paused:
                self.missed += len(live)
            if earlier or chosen:
                # Newest first: the page prepends, so the newest row ends up on top.
                rows = sorted(earlier + chosen, key=_order, reverse=True)
                await self._push(
                    self._fragment("rows", rows=[row(masked(r, self.masker)) for r in rows])
                )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._push(self._status())

    async def _push(self, *fragments: str) -> None:
        """One websocket message per fragment: a browser parses a `<tbody>` only
        as the first element of a message, so fragments are never joined."""
        for fragment in fragments:
            await self.send(text_data=fragment)

    def _status(self) -> str:
        rate, shown_rate, sampled = self.meter.rates(time.monotonic())
        return self._fragment(
            "status",
            s={
                "rate": rate,
                "shown_rate": shown_rate,
                "rate_attr": f"{rate:.1f}",
                "sampling": sampled and not self.paused,
                "paused": self.paused,
                "missed": self.missed,
                "received": self.received,
                "shown": self.shown,
                "cap": MAX_ROWS_PER_SECOND,
                "window": int(RATE_WINDOW),
                "description": self.reader.description if self.reader else "",
            },
        )

    # -- ending ---------------------------------------------------------------

    async def _fail(self, message: str, code: int) -> None:
        """Say what went wrong, let go of the broker, and close with `code`."""
        try:
            await self._push(self._fragment("error", error=message, code=code))
        finally:
            await self._stop()
            await self.release()
            await self.close(code=code)

    async def _stop(self) -> None:
        """Stop the tasks (not the one calling), then close the reader on its thread."""
        tasks, self._tasks = self._tasks, ()
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            if self.reader is not None:
                # Queued behind any poll still running: the client is never used by two threads.
                await asyncio.get_running_loop().run_in_executor(thread, self.reader.close)
        finally:
            # The close has run, so the thread is idle: joining it takes a moment, and
            # off the event loop. A socket that has closed leaves no thread behind.
            await asyncio.to_thread(thread.shutdown, wait=True)


def _order(record: Record) -> tuple[float, int, int]:
    return (record.timestamp or 0.0, record.partition or 0, record.position or 0)


class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
