"""Import an NDJSON file of messages as a publish job: checked whole, then sent by the job engine.

The file is what an export writes (dashboard.jobs.export), or anything with one
JSON object per line holding `body` (text) or `body_base64`, and optionally
`headers`, `properties`, `exchange` and `routing_key`. It is read line by line
and every line checked before anything is stored: a file with one bad line is
refused with the line numbers and reasons, and nothing is created. The lines
are then kept with the job (`ImportLines`, blocks of 1,000), so the job can run
in a worker, be cancelled, resumed and re-run from where it stood.

The job is an engine job like a replay (`action = "import"`): dry run first,
rate limit, batches sent with the broker's confirmation, an outcome per line
(the message id is `line <n>`), lineage headers, progress and an audit record.
Its "source" is the file: `ImportTransfer` reads it from the job's cursor, and
"settling" moves the cursor, saved only after the batch's confirms and outcomes.
A worker killed mid-batch resumes from the last saved line: what it had sent
unconfirmed is sent again and counted as duplicates, as for any job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import transaction

from brokers.base import BrokerError, Message, Outgoing, Sender, Sent
from dashboard.auth import audit
from dashboard.jobs import engine as jobs
from dashboard.jobs.guard import Invalid
from dashboard.kinds import kind_of
from dashboard.models import Broker, ImportLines, Job

BLOCK = 1000
MAX_ERRORS = 20
MAX_LINE = 64 * 1024 * 1024  # bytes one line may hold
SPOOL_IN_MEMORY = 4 * 1024 * 1024  # bytes of checked lines held in memory before disk
ACTION = "import"


def _unbase64(value: Any) -> Any:
    """A header value as an export writes it: {"base64": ...} was binary."""
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def check_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(the line's object, "") if it can be published, else (None, why)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        return None, f"not JSON: {str(exc)[:80]}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    has_text, has_b64 = "body" in obj, "body_base64" in obj
    if has_text == has_b64:
        return None, 'needs exactly one of "body" (text) and "body_base64"'
    if has_text and not isinstance(obj["body"], str):
        return None, '"body" must be text; use "body_base64" for bytes'
    if has_b64:
        if not isinstance(obj["body_base64"], str):
            return None, '"body_base64" must be base64 text'
        try:
            base64.b64decode(obj["body_base64"], validate=True)
        except (binascii.Error, ValueError):
            return None, '"body_base64" is not valid base64'
    if obj.get("masked"):
        return (
            None,
            "it was exported with masking rules applied: its masked values would be published",
        )
    if isinstance(obj.get("properties"), dict) and obj["properties"].get("present") is False:
        return None, "its message had left its stream when it was exported: there is no body"
    if obj.get("truncated"):
        return None, "its body was cut short when it was exported: it cannot be sent whole"
    for name in ("headers", "properties"):
        if name in obj and not isinstance(obj[name], dict | None):
            return None, f'"{name}" must be an object'
    for name in ("exchange", "routing_key"):
        if name in obj and not isinstance(obj[name], str | None):
            return None, f'"{name}" must be text'
    return obj, ""


def message_of(raw: bytes, n: int) -> Message:
    """Line `n` (0-based) of a checked file as a message: its id is `line <n + 1>`."""
    obj = json.loads(raw)
    body = (
        base64.b64decode(obj["body_base64"])
        if "body_base64" in obj
        else str(obj["body"]).encode("utf-8")
    )
    return Message(
        body=body,
        id=f"line {n + 1}",
        exchange=obj.get("exchange") or "",
        routing_key=obj.get("routing_key") or "",
        properties=dict(obj.get("properties") or {}),
        headers={str(k): _unbase64(v) for k, v in (obj.get("headers") or {}).items()},
        position=n + 1,
        size=len(body),
    )


class Checked:
    """A file read and checked: its good lines spooled (to disk past a few MiB), or the
    first errors found."""

    def __init__(self) -> None:
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.lines = 0
        self.bytes = 0
        self.errors: list[str] = []
        self.bad = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """(number of its first line, the block's lines) for every BLOCK lines kept."""
        self.spool.seek(0)
        first = 0
        while True:
            block = list(itertools.islice(self.spool, BLOCK))
            if not block:
                return
            yield first, b"".join(block)
            first += len(block)


def check_file(chunks: Iterable[bytes], max_lines: int | None = None) -> Checked:
    """Every line of the file checked; blank lines are skipped. The good lines go to a
    spool file, so the file's size costs no memory: one line at a time is read."""
    limit = max_lines or settings.SLUICE_IMPORT_MAX_LINES
    checked = Checked()
    number = 0
    for raw in _lines(chunks, checked):
        number += 1
        if raw is None:
            checked.bad += 1
            checked.errors.append(f"line {number} is longer than {MAX_LINE:,} bytes")
            break
        if not raw.strip():
            continue
        _, why = check_line(raw)
        if why:
            checked.bad += 1
            if len(checked.errors) < MAX_ERRORS:
                checked.errors.append(f"line {number}: {why}")
            continue
        checked.lines += 1
        if checked.lines > limit:
            checked.errors.append(f"more than {limit:,} messages: split the file")
            checked.bad += 1
            break
        if not checked.errors:
            checked.spool.write(raw.rstrip(b"\r\n") + b"\n")
    if not checked.lines and not checked.errors:
        checked.errors.append("the file holds no messages")
    return checked


def _lines(chunks: Iterable[bytes], checked: Checked) -> Iterator[bytes | None]:
    """The file's lines as they arrive; None, and no more, for a line over MAX_LINE."""
    rest = bytearray()
    for chunk in chunks:
        checked.bytes += len(chunk)
        checked._digest.update(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            rest += chunk[start:end]
            yield bytes(rest)
            rest.clear()
            start = end + 1
        rest += chunk[start:]
        if len(rest) > MAX_LINE:
            yield None
            return
    if rest:
        yield bytes(rest)


def create(
    user: Any, broker: Broker, chunks: Iterable[bytes], name: str, data: dict[str, Any]
) -> Job:
    """Check the file and the destination, then store a previewed import job. Invalid if any
    line or the destination is wrong: then nothing is stored."""
    kind = kind_of(broker)
    target = kind.import_target(broker, data)
    try:
        rate, batch = jobs.check_pace(data, 500, 5000)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    checked = check_file(chunks)
    if checked.errors:
        more = checked.bad - len(checked.errors)
        raise Invalid(
            "not imported, nothing was stored: "
            + "; ".join(checked.errors)
            + (f"; and {more:,} more bad lines" if more > 0 else "")
        )
    route = kind.import_route(target)
    targets: Counter[str] = Counter()
    for first, block in checked.blocks():
        for i, raw in enumerate(block.splitlines()):
            exchange, key = route(message_of(raw, first + i))
            targets[f"{exchange} → {key}" if key else exchange] += 1
    file_name = (name or "upload.ndjson")[:200]
    with transaction.atomic():
        job = Job.objects.create(
            broker=broker,
            action=ACTION,
            source=f"file {file_name}",
            selection={"all": True},
            target=target,
            rate=rate,
            batch_size=batch,
            created_by=user.get_username(),
            state=Job.PREVIEW,
            total=checked.lines,
            cursor={"lines": checked.lines, "next": 0},
            preview={
                "selected": checked.lines,
                "estimate": checked.lines,
                "complete": True,
                "looked_at": checked.lines,
                "targets": targets.most_common(20),
                "to": kind.import_label(target),
                "file": {"name": file_name, "bytes": checked.bytes, "sha256": checked.sha256},
            },
        )
        rows = (ImportLines(job=job, first=first, lines=block) for first, block in checked.blocks())
        while stored := list(itertools.islice(rows, 20)):
            ImportLines.objects.bulk_create(stored)
        audit(
            user,
            "job.import.preview",
            broker=broker.name,
            destination=job.source,
            count=checked.lines,
            job=str(job.public_id),
            target=target,
            bytes=checked.bytes,
            sha256=checked.sha256,
        )
    checked.spool.close()
    return job


class ImportTransfer:
    """The engine's `Transfer` over an import job's stored lines, sending through `sender`.

    `next` is the first line not yet dealt with (the saved cursor); `fetch` reads
    on from where the last fetch stopped; `settle` and `keep`, called once a
    batch's outcomes are recorded, move the cursor past it and save it.
    """

    def __init__(self, job: Job, sender: Sender) -> None:
        self.job = job
        self.sender = sender
        self.lines = int(job.cursor["lines"])
        self.next = int(job.cursor.get("next", 0))
        self._read = self.next
        self._block: tuple[int, list[bytes]] = (-1, [])  # the last block read, by its first line

    def _lines(self, first: int) -> list[bytes]:
        """The block of lines from `first` on, read once however many batches it feeds."""
        if self._block[0] != first:
            row = ImportLines.objects.filter(job=self.job, first=first).first()
            if row is None:
                raise BrokerError(f"the import's lines from {first + 1} are missing", False)
            self._block = (first, bytes(row.lines).splitlines())
        return self._block[1]

    def fetch(self, limit: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        while len(out) < limit and self._read < self.lines:
            first = self._read - self._read % BLOCK
            lines = self._lines(first)
            for i in range(self._read - first, len(lines)):
                if len(out) == limit:
                    break
                out.append(message_of(lines[i], first + i))
                self._read = first + i + 1
        return out

    def send(self, batch: list[Outgoing]) -> list[Sent]:
        return self.sender.send(batch)

    def settle(self, messages: list[Message]) -> None:
        self._advance(messages)

    def keep(self, messages: list[Message], headers: dict[str, Any]) -> None:
        self._advance(messages)  # the file keeps every line anyway

    def release(self, messages: list[Message]) -> None:
        if messages:
            self._read = min(int(m.position or 1) for m in messages) - 1

    def pending(self) -> int | None:
        return self.lines - self.next

    def close(self) -> None:
        self.sender.close()

    def _advance(self, messages: list[Message]) -> None:
        if not messages:
            return
        self.next = max(self.next, max(int(m.position or 0) for m in messages))
        self.job.cursor = dict(self.job.cursor, next=self.next)
        Job.objects.filter(pk=self.job.pk).update(cursor=self.job.cursor)


def transfer_for(job: Job) -> ImportTransfer:
    sender = kind_of(job.broker).import_sender(job.broker, job.target, job)
    return ImportTransfer(job, sender)


def router(job: Job) -> Any:
    return kind_of(job.broker).import_route(job.target)
