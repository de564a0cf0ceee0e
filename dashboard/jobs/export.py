"""Export dead letters as NDJSON: one object per message, streamed as it is read.

An export is a job's read pass with nothing sent and nothing settled: the
kind checks the source and selection as it would for a replay (so the same
filter selects the same messages, over the same fixed range), and gives the
reader (`Kind.export_reader`). Messages are read a batch at a time, encoded,
and handed on; none is kept, so an export of any size runs in the memory of
one batch. When it ends, finished or cut off, one audit record says how many
messages were written and the SHA-256 of exactly the bytes sent.

Each line is an object a publish can take back:
`{"position", "id", "exchange", "routing_key", "properties", "headers",
"body" or "body_base64", "size", "redelivered", "death"}`. `exchange` and
`routing_key` mean what they mean in `brokers.base.Message` for the kind;
`death` is where the kind says the dead letter came from and why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async

from brokers.base import BrokerError, Message, Transfer
from dashboard.auth import audit
from dashboard.jobs import deadletters
from dashboard.jobs.deadletters import DeathInfo
from dashboard.jobs.guard import Invalid
from dashboard.kinds import kind_of
from dashboard.masking import NONE, Masker
from dashboard.models import Broker, Job

log = logging.getLogger(__name__)

BATCH = 1000
FETCH_TIMEOUT = 2.0
ACTION = "messages.export"
PREVIEW_ACTION = "messages.export.preview"  # a look at a file's first lines


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def line(message: Message, death_info: DeathInfo, masker: Masker = NONE) -> bytes:
    """One message as one NDJSON line (with its newline), masked as `masker` says."""
    message = masker.message(message)
    obj: dict[str, Any] = {
        "position": message.position,
        "id": message.id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "properties": message.properties,
        "headers": message.headers,
    }
    try:
        obj["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        obj["body_base64"] = base64.b64encode(message.body).decode("ascii")
    obj["size"] = message.size or len(message.body)
    if message.truncated:
        obj["truncated"] = True
    obj["redelivered"] = message.redelivered
    if masker:
        # Masked for its reader: an import refuses the line rather than publish the masks.
        obj["masked"] = True
    info = death_info(message)
    obj["death"] = {k: info.get(k) for k in ("reason", "queue", "exchange", "routing_key", "time")}
    # ASCII whatever the bodies hold, so no byte of a body can end a line early;
    # and <, > and & (which JSON has only inside strings) escaped, so that nothing
    # that shows the file can take a body for markup.
    text = json.dumps(obj, default=_json_default, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("ascii") + b"\n"


def of_dead_letters(
    user: Any, broker: Broker, source: str, selection: Any, masker: Masker = NONE
) -> Export:
    """An export of a dead-letter source's messages that `selection` (as a job's) chooses.

    The same checks a replay of this selection would pass, fixing its range now;
    the kind's reader is the job's read pass (`Kind.export_reader`).
    """
    kind = kind_of(broker)
    fields = kind.check_job(broker, {"action": "replay", "source": source, "selection": selection})
    chosen: dict[str, Any] = fields["selection"]
    job = Job(broker=broker, created_by=user.get_username(), **fields)  # never saved
    return Export(
        user,
        broker,
        fields["source"],
        chosen,
        deadletters.selector(chosen, kind.death_info),
        lambda: kind.export_reader(job),
        effect=kind.export_effect(broker, fields["source"]),
        wanted=set(chosen["ids"]) if "ids" in chosen else None,
        masker=masker,
    )


def filename(broker: Broker, source: str, now: datetime | None = None) -> str:
    """`<broker>-<source>-<UTC time>.ndjson`, with anything but [A-Za-z0-9._-] as "_"."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    raw = f"{broker.name}-{source}-{moment}"
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in raw)
    return safe[:180] + ".ndjson"


class Export:
    """One export: what to read and what of it to write, read from `open()` on.

    `selected` says which messages are written, `open_reader` gives the reader;
    `selection` is what the audit record says was chosen, and `effect` what
    reading did to the source ("" for nothing). Iterate it (or stream
    `for_asgi()` under ASGI) for the NDJSON bytes; once opened, `close()` always
    ends it, read to the end or not, and writes the audit record once.
    """

    def __init__(
        self,
        user: Any,
        broker: Broker,
        source: str,
        selection: dict[str, Any],
        selected: Callable[[Message], bool],
        open_reader: Callable[[], Transfer],
        effect: str = "",
        wanted: set[str] | None = None,
        masker: Masker = NONE,
    ) -> None:
        self.user, self.broker = user, broker
        self.source, self.selection, self.effect = source, selection, effect
        self.action = ACTION
        self.masker = masker
        self._death_info: DeathInfo = kind_of(broker).death_info
        self._selected = selected
        self._open_reader = open_reader
        self._wanted = wanted  # ids: once each is written, nothing further is read
        self._reader: Transfer | None = None
        self.read = self.count = self.bytes = 0
        self.complete = False
        self.error = ""
        self._digest = hashlib.sha256()
        self._started = time.monotonic()
        self._closed = False

    def open(self) -> Export:
        """Start reading the source; Invalid if the broker cannot be read."""
        try:
            self._reader = self._open_reader()
        except BrokerError as exc:
            raise Invalid(f"could not read {self.source}: {exc}") from None
        self._started = time.monotonic()
        return self

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        finally:
            self.close()

    def _chunks(self) -> Iterator[bytes]:
        reader = self._reader
        if reader is None:
            raise RuntimeError("an export is read only once, after open()")
        wanted = self._wanted
        try:
            while True:
                batch = reader.fetch(BATCH, FETCH_TIMEOUT)
                if not batch:
                    break
                lines = []
                for message in batch:
                    self.read += 1
                    if self._selected(message):
                        lines.append(line(message, self._death_info, self.masker))
                        if wanted is not None:
                            wanted.discard(message.id)
                if lines:
                    chunk = b"".join(lines)
                    self._digest.update(chunk)
                    self.count += len(lines)
                    self.bytes += len(chunk)
                    yield chunk
                if wanted is not None and not wanted:
                    break  # every chosen message is written: read no further
            self.complete = True
        except BrokerError as exc:
            # Headers are sent: the download ends short, and the audit says why.
            self.error = str(exc)
            log.warning("export of %s on %s stopped: %s", self.source, self.broker.name, exc)

    def for_asgi(self) -> Streamed:
        """What an ASGI server streams: the same bytes, read in Django's sync thread."""
        return Streamed(self)

    async def aiter(self) -> AsyncIterator[bytes]:
        chunks = iter(self)
        step = sync_to_async(lambda: next(chunks, None), thread_sensitive=True)
        try:
            while (chunk := await step()) is not None:
                yield chunk
        finally:
            await sync_to_async(self.close, thread_sensitive=True)()

    def close(self) -> None:
        if self._closed or self._reader is None:
            return
        self._closed = True
        try:
            self._reader.close()
        except BrokerError:
            pass
        self._reader = None
        audit(
            self.user,
            self.action,
            broker=self.broker.name,
            destination=self.source,
            count=self.count,
            result="ok" if self.complete or self.action != ACTION else "partial",
            selection=self.selection,
            read=self.read,
            bytes=self.bytes,
            sha256=self._digest.hexdigest(),
            seconds=round(time.monotonic() - self._started, 3),
            **({"error": self.error} if self.error else {}),
            **(
                {}
                if self.complete or self.error or self.action != ACTION
                else {"stopped": "the download was cut off"}
            ),
            **({"effect": self.effect} if self.effect else {}),
            **({"masked_by": [r.name for r in self.masker.rules]} if self.masker else {}),
        )


class Streamed:
    """An export as an async iterable that Django can still close (StreamingHttpResponse
    registers `close` of what it is given), so an abandoned download ends the read."""

    def __init__(self, export: Export) -> None:
        self._export = export
        self.close = export.close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._export.aiter()
