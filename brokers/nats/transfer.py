"""`SequenceTransfer`: replay NATS dead letters through JetStream, a cursor moving only after PubAcks.

The job engine's `Transfer` for NATS. A job reads one stream by sequence,
between a first sequence and an end fixed when the job was created:

    advisories  the capture stream (brokers.nats.deadletters): each advisory
                points at a message in another stream, fetched by sequence;
    stream      a dead-letter stream itself, read message by message.

Reading removes nothing, so "settling" moves the job's own cursor (kept by the
caller in `Job.cursor`), never a consumer's state. Each copy is published
with JetStream and counts as delivered once its PubAck came back, a
"duplicate" PubAck included: the target stream already holds that copy.

Every copy carries `Nats-Msg-Id: sluice:<stream>:<seq>:<subject>`, the
message's own place and where it goes (plus a hash of the body when the job
edited it). Not the job's id: sending the same message to the same subject
again, by this job after a crash or by a new job, is then dropped by the
target stream within its duplicate window (2 minutes by default). A message's
own Nats-Msg-Id moves to `sluice-original-msg-id`, or the target stream would
drop the copy as a duplicate of the original.

If the process dies:
  - after reading, before publishing: the cursor has not moved; the messages
    are read again;
  - while publishing, before every PubAck: some copies may be stored; they are
    sent again on resume and the target stream drops them (same Nats-Msg-Id),
    or keeps a second copy if the duplicate window has passed;
  - after the PubAcks, before the cursor is saved: the same;
  - with `delete_after`: the cursor is saved with the originals to delete
    before they are deleted, and a resumed run deletes them first. An original
    is therefore deleted only after its copy's PubAck, and never left behind.
Nothing is lost: a message is behind the cursor only once its copy is stored
or it was kept on purpose (not selected, refused, no longer in its stream).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brokers.base import Message, Outgoing, Sent
from brokers.nats.client import StoredMsg
from brokers.nats.deadletters import Advisory, parse_advisory
from brokers.nats.pipeline import DeadLetterClient

# Headers naming the subject a message of a dead-letter stream came from, most specific first.
# Nats-Subject is what a stream's RePublish adds.
ORIGIN_HEADERS = ("x-original-subject", "Nats-Original-Subject", "Nats-Subject")
# Headers that say why it failed.
REASON_HEADERS = ("x-exception-message", "x-exception", "x-error", "x-reason")
# Headers of the original that would make JetStream refuse or misfile the copy.
DROPPED_HEADERS = (
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Msg-Id",
)
MSG_ID = "Nats-Msg-Id"
ORIGINAL_MSG_ID = "sluice-original-msg-id"
# A stored Nats-Rollup would make the target stream purge the subject (or itself)
# when the copy lands: a replay never deletes. It travels aside, under this name.
ROLLUP = "nats-rollup"
ORIGINAL_ROLLUP = "sluice-original-rollup"

SaveCursor = Callable[[int, list[list[Any]]], None]


@dataclass(frozen=True)
class Held:
    """What a transfer keeps of each message it handed out (`Message.handle`)."""

    position: int  # its sequence in the stream the job reads (capture or dead-letter stream)
    stream: str  # the stream holding the message itself
    seq: int
    present: bool  # False: the stream no longer holds it, or it was not read
    pairs: tuple[tuple[str, bytes], ...] = ()  # its headers as stored, repeated names included
    advisory: Advisory | None = None
    fetched: bool = True  # False: outside the job's selection, so its message was not read


def header_text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def header_dict(pairs: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    """Headers by name (the first value of a repeated name), for filters and lineage."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, header_text(value))
    return out


def _unix(stored: StoredMsg | None) -> int | None:
    return int(stored.time.timestamp()) if stored is not None and stored.time else None


def msg_id(stream: str, seq: int, subject: str, body: bytes | None = None) -> str:
    """The Nats-Msg-Id of a copy: the same for the same message sent to the same subject."""
    base = f"sluice:{stream}:{seq}:{subject}"
    return base if body is None else f"{base}:{hashlib.sha256(body).hexdigest()[:16]}"


def as_message(stored: StoredMsg, position: int) -> Message:
    """A message of a dead-letter stream; its id is "<stream>:<seq>"."""
    return Message(
        body=stored.body,
        id=f"{stored.stream}:{stored.seq}",
        exchange=stored.subject,
        routing_key=stored.subject,
        properties={
            "nats_stream": stored.stream,
            "seq": stored.seq,
            "timestamp": _unix(stored),
            "present": True,
        },
        headers=header_dict(stored.headers),
        position=stored.seq,
        size=stored.size,
        handle=Held(position, stored.stream, stored.seq, True, stored.headers),
    )


def dead_letter(advisory: Advisory, stored: StoredMsg | None, fetched: bool = True) -> Message:
    """The message an advisory points at (or an empty stand-in if it is gone), with the advisory.

    `fetched` False: the message was not read (present is then None, unknown).
    """
    properties: dict[str, Any] = {
        "nats_stream": advisory.stream,
        "seq": advisory.stream_seq,
        "consumer": advisory.consumer,
        "reason": advisory.why,
        "deliveries": advisory.deliveries,
        "dead_at": advisory.time,
        "advisory_seq": advisory.seq,
        "timestamp": _unix(stored),
        "present": (stored is not None) if fetched else None,
    }
    pairs = stored.headers if stored else ()
    return Message(
        body=stored.body if stored else b"",
        id=f"{advisory.stream}:{advisory.stream_seq}",
        exchange=stored.subject if stored else "",
        routing_key=stored.subject if stored else "",
        properties=properties,
        headers=header_dict(pairs),
        position=advisory.stream_seq,
        size=stored.size if stored else 0,
        handle=Held(
            advisory.seq,
            advisory.stream,
            advisory.stream_seq,
            stored is not None,
            pairs,
            advisory,
            fetched,
        ),
    )


def origin_subject(message: Message) -> str | None:
    """Where a dead letter came from: the stored subject, or for a dead-letter stream an origin header."""
    if "consumer" in message.properties:
        return message.exchange or None
    for name in ORIGIN_HEADERS:
        value = message.headers.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def read_dead_letters(
    client: DeadLetterClient,
    kind: str,
    source: str,
    seq: int,
    limit: int,
    end: int,
    wanted: Callable[[Advisory], bool] | None = None,
    subject: str | None = None,
) -> tuple[list[Message], int, int]:
    """Up to `limit` dead letters from `seq` on: (messages, next sequence, gaps met).

    Gaps are sequences with nothing to replay: removed from the source, not a
    dead-letter advisory, or (with `subject`, an advisory subject the server filters
    on) another stream's or consumer's. Messages of advisories `wanted` turns down
    are not read (the job will not select them).
    """
    on = subject if kind == "advisories" else None
    stored, next_seq = client.read(source, seq, limit, end=end, subject=on)
    if kind == "stream":
        return [as_message(m, m.seq) for m in stored], next_seq, next_seq - seq - len(stored)
    advisories = [a for a in (parse_advisory(m) for m in stored) if a is not None]
    read = {a.seq for a in advisories if wanted is None or wanted(a)}
    where: dict[str, list[int]] = {}
    for a in advisories:
        if a.seq in read:
            where.setdefault(a.stream, []).append(a.stream_seq)
    found = {name: client.get_each(name, seqs) for name, seqs in where.items()}
    messages = [
        dead_letter(a, found[a.stream].get(a.stream_seq), True)
        if a.seq in read
        else dead_letter(a, None, False)
        for a in advisories
    ]
    return messages, next_seq, next_seq - seq - len(advisories)


class SequenceTransfer:
    """A `Transfer` over sequences [next, end) of one stream, publishing copies with JetStream.

    `save(next, deletes)` persists the cursor: `next` is the first sequence
    not yet dealt with, `deletes` the [stream, seq] originals to delete (only
    with `delete_after`). `skipped(n)` is told of sequences with nothing to
    replay, so that the job's total can drop them.
    """

    def __init__(
        self,
        client: DeadLetterClient,
        kind: str,
        source: str,
        end: int,
        next_seq: int,
        save: SaveCursor,
        skipped: Callable[[int], None] | None = None,
        delete_after: bool = False,
        pending_deletes: list[list[Any]] | None = None,
        publish_timeout: float = 10.0,
        wanted: Callable[[Advisory], bool] | None = None,
        subject: str | None = None,
    ) -> None:
        if kind not in ("advisories", "stream"):
            raise ValueError(f"unknown source kind {kind!r}")
        self.client = client
        self.kind = kind
        self.source = source
        self.end = end
        self.next = next_seq
        self._read = next_seq
        self._scanned = next_seq
        self._save = save
        self._skipped = skipped
        self.delete_after = delete_after
        self.publish_timeout = publish_timeout
        self.wanted = wanted
        self.subject = subject
        if pending_deletes:
            # A run died between saving the cursor and deleting: finish that first.
            self._delete(pending_deletes)
            self._save(self.next, [])

    # -- Transfer -----------------------------------------------------------

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        while not out and self._read < self.end:
            got, self._read, gaps = read_dead_letters(
                self.client,
                self.kind,
                self.source,
                self._read,
                limit,
                self.end,
                self.wanted,
                self.subject,
            )
            if gaps and self._skipped:
                self._skipped(gaps)
            out = got
        self._scanned = self._read
        return out

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        items: list[tuple[str, bytes, list[tuple[str, str]]]] = []
        places: list[int] = []
        results: list[Sent | None] = []
        for outgoing in batch:
            held: Held = outgoing.message.handle
            if not held.fetched:
                results.append(Sent(False, error="not read: outside the job's selection"))
                continue
            if not held.present:
                results.append(Sent(False, error=f"no longer in stream {held.stream}"))
                continue
            if not outgoing.exchange:
                results.append(Sent(False, error="no subject to send it to"))
                continue
            body = outgoing.message.body if outgoing.body is None else outgoing.body
            headers = copy_headers(outgoing, held)
            places.append(len(results))
            results.append(None)
            items.append((outgoing.exchange, body, headers))
        return publish_all(self.client, items, places, results, self.publish_timeout)

    def settle(self, messages: list[Message]) -> None:
        # Called once per batch, after `keep` for the kept ones: the whole
        # batch is dealt with, so the cursor moves past everything read.
        deletes: list[list[Any]] = []
        if self.delete_after:
            deletes = [
                [m.handle.stream, m.handle.seq]
                for m in messages
                if m.handle.present and "nats_stream" in m.properties
            ]
        self.next = max(self.next, self._scanned)
        self._save(self.next, deletes)
        if deletes:
            self._delete(deletes)
            self._save(self.next, [])

    def keep(self, messages: list[Message], headers: dict[str, Any]) -> None:
        # A stream keeps every message anyway; `settle`, which follows, moves the cursor.
        pass

    def release(self, messages: list[Message]) -> None:
        if messages:
            self._read = min(m.handle.position for m in messages)
            self._scanned = self._read

    def pending(self) -> int | None:
        return max(0, self.end - self.next)

    def close(self) -> None:
        self.client.close()

    def _delete(self, deletes: list[list[Any]]) -> None:
        by_stream: dict[str, list[int]] = {}
        for stream, seq in deletes:
            by_stream.setdefault(str(stream), []).append(int(seq))
        for stream, seqs in by_stream.items():
            self.client.delete_each(stream, seqs)


def publish_all(
    client: DeadLetterClient,
    items: list[tuple[str, bytes, list[tuple[str, str]]]],
    places: list[int],
    results: list[Sent | None],
    timeout: float,
) -> list[Sent]:
    """Publish `items` pipelined; `results` with the answer of each put at its place.

    A "duplicate" PubAck counts as delivered: the target stream holds that copy already.
    """
    if items:
        answers = client.publish_many(items, timeout)
        for place, (ack, error) in zip(places, answers, strict=True):
            if ack is None:
                results[place] = Sent(False, error=error)
            elif ack.duplicate:
                note = f"already in stream {ack.stream} (Nats-Msg-Id duplicate, seq {ack.seq})"
                results[place] = Sent(True, error=note)
            else:
                results[place] = Sent(True)
    return [r if r is not None else Sent(False, error="not sent") for r in results]


def copy_headers(outgoing: Outgoing, held: Held) -> list[tuple[str, str]]:
    """The copy's headers: the stored ones in order (repeated names kept), with the job's changes.

    A stored header the job left as it was goes out as stored; one the job
    dropped (its pass marker) is left out; new ones (the lineage) come last.
    The message's own Nats-Msg-Id and Nats-Rollup are kept aside (sluice-original-*)
    and our Nats-Msg-Id is set.
    """
    wanted = outgoing.headers
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, raw in held.pairs:
        if name not in wanted:
            continue
        value = header_text(raw)
        if name in seen:
            out.append((name, value))  # a repeated name: as it was
            continue
        seen.add(name)
        out.append((name, value if wanted[name] == value else _text(wanted[name])))
    out.extend((name, _text(v)) for name, v in wanted.items() if name not in seen)
    aside = {MSG_ID: ORIGINAL_MSG_ID}
    headers = [(ORIGINAL_ROLLUP if n.lower() == ROLLUP else aside.get(n, n), v) for n, v in out]
    headers = [(n, v) for n, v in headers if n not in DROPPED_HEADERS]
    headers.append((MSG_ID, msg_id(held.stream, held.seq, outgoing.exchange, outgoing.body)))
    return headers


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return header_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SubjectSender:
    """Publishes whole batches with JetStream for an import, each counted once its PubAck is in.

    The headers go as given, under the rules a replay's copies follow: Nats-Rollup
    and the message's own Nats-Msg-Id travel aside, Nats-Expected-* are dropped,
    and `msg_id(outgoing)` names the copy, so that sending it again (a resumed
    import) is dropped by the target stream within its duplicate window.
    """

    def __init__(
        self,
        client: DeadLetterClient,
        msg_id: Callable[[Outgoing], str],
        publish_timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.msg_id = msg_id
        self.publish_timeout = publish_timeout

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        from brokers.nats.wire import header_problem

        items: list[tuple[str, bytes, list[tuple[str, str]]]] = []
        places: list[int] = []
        results: list[Sent | None] = []
        for outgoing in batch:
            headers = [(name, _text(value)) for name, value in outgoing.headers.items()]
            aside = {MSG_ID: ORIGINAL_MSG_ID}
            headers = [
                (ORIGINAL_ROLLUP if n.lower() == ROLLUP else aside.get(n, n), v)
                for n, v in headers
                if n not in DROPPED_HEADERS
            ]
            problem = next((p for n, v in headers if (p := header_problem(n, v))), "")
            if problem or not outgoing.exchange:
                results.append(Sent(False, error=problem or "no subject to send it to"))
                continue
            headers.append((MSG_ID, self.msg_id(outgoing)))
            body = outgoing.message.body if outgoing.body is None else outgoing.body
            places.append(len(results))
            results.append(None)
            items.append((outgoing.exchange, body, headers))
        return publish_all(self.client, items, places, results, self.publish_timeout)

    def close(self) -> None:
        self.client.close()
