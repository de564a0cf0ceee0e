"""`DeadLetterClient`: a NATS client that reads, publishes and deletes many messages at once.

Talks to: one NATS server's client port, through `brokers.nats.client.NatsClient`
(nats-py on a private event loop in a thread of its own, used synchronously),
which it extends with what a replay needs at speed: reads by sequence (batched
direct gets on nats-server 2.11+, else many requests in flight), JetStream
publishes and message deletes, each pipelined: every request goes out before
any answer is awaited, and one wait covers them all.

Reading never uses a consumer, and keeps a message's headers exactly as stored
(in order, repeated names included), even those named like the ones a direct
get appends.

Options: those of `NatsClient` (url, user, password, token), and a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from brokers.base import BrokerError
from brokers.nats import internals
from brokers.nats.client import NatsClient
from brokers.nats.wire import (
    Missing,
    PubAck,
    StoredMsg,
    from_api,
    from_direct,
    parse_time,
    status_of,
)

# The batched direct get (`{"seq": n, "batch": m}`) came with nats-server 2.11.
BATCH_GET_SINCE = (2, 11)
# Requests in flight at once when reading or deleting one message per request.
PIPELINE = 1000
BATCH = 1000  # messages asked for per batched direct get


@dataclass(frozen=True)
class StreamInfo:
    """A stream's configuration and state, as much as dead letters need."""

    name: str
    subjects: tuple[str, ...]
    allow_direct: bool
    duplicate_window: float  # seconds in which a repeated Nats-Msg-Id is dropped
    messages: int
    first_seq: int
    last_seq: int
    first_ts: float | None  # Unix seconds
    last_ts: float | None
    max_age: float  # seconds; 0: no limit
    max_bytes: int  # -1: no limit
    retention: str
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def unix(value: Any) -> float | None:
    """A server timestamp as Unix seconds; None for none or Go's zero time."""
    moment = parse_time(value)
    return moment.timestamp() if moment else None


class DeadLetterClient(NatsClient):
    """A `NatsClient` that also reads, publishes and deletes many messages at once."""

    _infos: dict[str, StreamInfo]
    _jetstream: Any = None

    @property
    def server_version(self) -> tuple[int, ...]:
        version = internals.server_version(self._nc)
        try:
            return tuple(int(p) for p in version.split("-")[0].split("."))
        except ValueError:
            return (0,)

    # -- the JetStream API ----------------------------------------------------

    def api(self, what: str, req: dict[str, Any] | None = None, stream: str = "") -> dict[str, Any]:
        """One `$JS.API.<what>` request; a refusal for want of permission says so."""
        self._errors = []
        try:
            return self._run(self._api(what, req, stream))
        except BrokerError as exc:
            if any("permissions violation" in str(e).lower() for e in self._errors):
                raise BrokerError(
                    f"the server refused: these credentials may not publish to $JS.API.{what} "
                    "(permissions violation)",
                    retryable=False,
                ) from exc
            raise

    def info(self, name: str, fresh: bool = False) -> StreamInfo:
        """The stream's configuration and state; Missing if there is none."""
        if not hasattr(self, "_infos"):
            self._infos = {}
        if fresh or name not in self._infos:
            self._infos[name] = _stream_info(self.api(f"STREAM.INFO.{name}", None, name))
        return self._infos[name]

    def streams_for(self, subject: str) -> list[str]:
        """The streams whose subjects take `subject` (wildcards allowed)."""
        return list(self.api("STREAM.NAMES", {"subject": subject}).get("streams") or [])

    def add_stream(self, config: dict[str, Any]) -> StreamInfo:
        return _stream_info(self.api(f"STREAM.CREATE.{config['name']}", config, config["name"]))

    # -- reading by sequence --------------------------------------------------

    def _batches(self, stream: str) -> bool:
        return self.info(stream).allow_direct and self.server_version >= BATCH_GET_SINCE

    def read(
        self,
        stream: str,
        seq: int,
        limit: int,
        end: int | None = None,
        subject: str | None = None,
    ) -> tuple[list[StoredMsg], int]:
        """Up to `limit` messages of `stream` from `seq` on, below `end` if given; gaps skipped.

        Also returns the sequence to read next: everything below it was looked at.
        With `subject` (wildcards allowed), only the messages on it: the server picks
        them (`next_by_subj`) and sends no other.
        """
        stop = end if end is not None else self.info(stream).last_seq + 1
        limit = min(limit, max(0, stop - seq))
        if limit <= 0:
            return [], max(seq, stop)
        if subject is not None:
            return self._read_subject(stream, seq, limit, stop, subject)
        if self._batches(stream):
            got = self._run(self._batch(stream, seq, limit), wait=self.timeout * 3)
            got = [m for m in got if m.seq < stop]
            # A batch cut short means nothing more is stored before `stop`.
            return got, (got[-1].seq + 1 if len(got) == limit else stop)
        found = self.get_each(stream, range(seq, seq + limit))
        return [m for m in found.values() if m is not None], seq + limit

    def _read_subject(
        self, stream: str, seq: int, limit: int, stop: int, subject: str
    ) -> tuple[list[StoredMsg], int]:
        if self._batches(stream):
            got = self._run(self._batch(stream, seq, limit, subject), wait=self.timeout * 3)
        else:
            got = self._run(
                self._next_each(stream, seq, limit, stop, subject), wait=self.timeout * 3
            )
        kept = [m for m in got if m.seq < stop]
        # Fewer than asked: nothing more on the subject before `stop`.
        return kept, (kept[-1].seq + 1 if len(kept) == limit else stop)

    async def _next_each(
        self, stream: str, seq: int, limit: int, stop: int, subject: str
    ) -> list[StoredMsg]:
        """One get after another of the next message on `subject`: servers before 2.11."""
        got: list[StoredMsg] = []
        direct = self.info(stream).allow_direct
        while len(got) < limit and seq < stop:
            one = await self._get(stream, {"seq": seq, "next_by_subj": subject}, direct, None)
            if one is None:
                break
            got.append(one)
            seq = one.seq + 1
        return got

    def get_each(self, stream: str, seqs: Iterable[int]) -> dict[int, StoredMsg | None]:
        """The messages at these sequences; None for those the stream no longer holds."""
        wanted = sorted(set(seqs))
        out: dict[int, StoredMsg | None] = dict.fromkeys(wanted)
        if not wanted:
            return out
        try:
            batches = self._batches(stream)
        except Missing:
            return out  # the stream itself is gone
        if batches and wanted[-1] - wanted[0] + 1 <= 2 * len(wanted):
            # Dense (the dead letters of one burst): read the span, keep those asked.
            seq = wanted[0]
            while seq <= wanted[-1]:
                span = min(BATCH, wanted[-1] - seq + 1)
                got = self._run(self._batch(stream, seq, span), wait=self.timeout * 3)
                for m in got:
                    if m.seq in out:
                        out[m.seq] = m
                if len(got) < span:
                    break  # nothing more in the stream
                seq = got[-1].seq + 1
            return out
        direct = self.info(stream).allow_direct
        for start in range(0, len(wanted), PIPELINE):
            part = wanted[start : start + PIPELINE]
            each = self._run(self._each(stream, part, direct), wait=self.timeout * 3)
            out.update(zip(part, each, strict=True))
        return out

    async def _batch(
        self, stream: str, seq: int, batch: int, subject: str | None = None
    ) -> list[StoredMsg]:
        """One batched direct get: up to `batch` messages from `seq` (on `subject` if
        given), until the server's EOB."""
        inbox = self._nc.new_inbox()
        got: list[StoredMsg] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def collect(msg: Msg) -> None:
            if status_of(msg):  # 204 end of batch, or 404 when nothing is left
                if not done.done():
                    done.set_result(None)
                return
            got.append(from_direct(stream, msg))

        sub = await self._nc.subscribe(inbox, cb=collect)
        try:
            asked: dict[str, Any] = {"seq": seq, "batch": batch}
            if subject is not None:
                asked["next_by_subj"] = subject
            request = json.dumps(asked).encode()
            await self._nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
            await asyncio.wait_for(done, self.timeout * 2)
        finally:
            await sub.unsubscribe()
        return got

    async def _each(self, stream: str, seqs: list[int], direct: bool) -> list[StoredMsg | None]:
        async def one(seq: int) -> StoredMsg | None:
            if direct:
                request = json.dumps({"seq": seq}).encode()
                msg = await self._nc.request(
                    f"$JS.API.DIRECT.GET.{stream}", request, timeout=self.timeout
                )
                return None if status_of(msg) else from_direct(stream, msg)
            try:
                answer = await self._api(f"STREAM.MSG.GET.{stream}", {"seq": seq}, stream, seq)
            except Missing:
                return None
            return from_api(stream, answer["message"], None)

        return list(await asyncio.gather(*(one(s) for s in seqs)))

    # -- writing ----------------------------------------------------------------

    def publish_many(
        self, items: Sequence[tuple[str, bytes, Sequence[tuple[str, str]]]], timeout: float
    ) -> list[tuple[PubAck | None, str]]:
        """Publish every (subject, body, headers) with JetStream, pipelined: (PubAck, "") or (None, why)."""
        return self._run(self._publish_many(items, timeout), wait=timeout + 2)

    async def _publish_many(
        self, items: Sequence[tuple[str, bytes, Sequence[tuple[str, str]]]], timeout: float
    ) -> list[tuple[PubAck | None, str]]:
        # Every message goes out before any PubAck is awaited; the PubAcks come
        # back on one wildcard inbox (nats-py's publish_async), matched by token.
        js = self._js()
        futures: list[asyncio.Future[Any] | str] = []
        for subject, body, headers in items:
            if len(body) > self._nc.max_payload:
                futures.append(
                    f"larger than the server's max_payload ({self._nc.max_payload:,} bytes)"
                )
                continue
            try:
                futures.append(
                    await js.publish_async(subject, body, headers=internals.outgoing(headers))
                )
            except nats.errors.Error as exc:
                futures.append(str(exc).removeprefix("nats: ") or type(exc).__name__)
        waiting = [f for f in futures if not isinstance(f, str)]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        out: list[tuple[PubAck | None, str]] = []
        for (subject, _, _), future in zip(items, futures, strict=True):
            if isinstance(future, str):
                out.append((None, future))
            elif not future.done():
                future.cancel()
                out.append(
                    (
                        None,
                        f"no PubAck within {timeout:g} s (it may be stored; a resend is deduplicated)",
                    )
                )
            elif isinstance(future.exception(), nats.js.errors.NoStreamResponseError):
                out.append((None, f"no stream stores subject {subject}"))
            elif isinstance(future.exception(), nats.js.errors.APIError):
                error = future.exception()
                out.append((None, f"JetStream refused it: {getattr(error, 'description', error)}"))
            elif future.exception() is not None:
                out.append((None, str(future.exception()) or "not acknowledged"))
            else:
                ack = future.result()
                out.append((PubAck(str(ack.stream), int(ack.seq), bool(ack.duplicate)), ""))
        return out

    def _js(self) -> Any:
        """nats-py's JetStream context, made once: its PubAck inbox is subscribed on first use."""
        if getattr(self, "_jetstream", None) is None:
            self._jetstream = self._nc.jetstream(publish_async_max_pending=1_000_000)
        return self._jetstream

    def delete_each(self, stream: str, seqs: Iterable[int]) -> int:
        """Delete these messages from `stream`; returns how many were still there."""
        wanted = sorted(set(seqs))

        async def delete(part: list[int]) -> list[bool]:
            async def one(seq: int) -> bool:
                try:
                    req = {"seq": seq, "no_erase": True}
                    await self._api(f"STREAM.MSG.DELETE.{stream}", req, stream, seq)
                    return True
                except Missing:
                    return False

            return list(await asyncio.gather(*(one(s) for s in part)))

        deleted = 0
        for start in range(0, len(wanted), PIPELINE):
            part = wanted[start : start + PIPELINE]
            deleted += sum(self._run(delete(part), wait=self.timeout * 3))
        return deleted


def _stream_info(answer: dict[str, Any]) -> StreamInfo:
    config = answer.get("config") or {}
    state = answer.get("state") or {}
    return StreamInfo(
        name=str(config.get("name", "")),
        subjects=tuple(config.get("subjects") or ()),
        allow_direct=bool(config.get("allow_direct")),
        duplicate_window=(config.get("duplicate_window") or 0) / 1e9,
        messages=int(state.get("messages", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        first_ts=unix(state.get("first_ts")),
        last_ts=unix(state.get("last_ts")),
        max_age=(config.get("max_age") or 0) / 1e9,
        max_bytes=int(config.get("max_bytes", -1)),
        retention=str(config.get("retention", "")),
        config=config,
    )
