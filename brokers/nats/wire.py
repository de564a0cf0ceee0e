"""The pieces of `brokers.nats.client` that are data, not connection: what NATS sends and takes.

The client's results (`StreamInfo`, `StoredMsg`, `PubAck`, `Reply`, `Delivery`)
and errors; subject rules (`check_subject`, the server's own); headers kept
whole, in order and with repeated names (nats-py folds them into a dict, so
`brokers.nats.internals.Client` wraps its one private method that sees the raw
block); and the reading of JetStream API answers. Import these from `brokers.nats.client`,
which re-exports them.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from brokers.base import BrokerError

Headers = Sequence[tuple[str, str]]

API = "$JS.API"
# What a direct get appends after the stored headers, in this order (the last
# two only in a batch).
DIRECT_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
        "Nats-UpTo-Sequence",
    }
)
# JetStream's rule for stream names: they become one token of API subjects.
STREAM_NAME = re.compile(r"[^\s.*>/\\]{1,255}")
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE = {10037, 10043}  # MESSAGE GET, MESSAGE DELETE
ERR_JETSTREAM_OFF = {10039, 10076}


class Missing(BrokerError):
    """No such stream or message; asking again cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def stream_name(name: str) -> str:
    """`name` if JetStream could hold a stream by that name; otherwise Missing, said plainly.
    A dot or wildcard would make another API subject of it, which nothing answers."""
    if not STREAM_NAME.fullmatch(name):
        raise Missing(f"{name[:80]!r} is not a stream name (no spaces, '.', '*', '>', '/' or '\\')")
    return name


class _NoMessage(Missing):
    """MESSAGE GET found nothing at or after what was asked."""


class JetStreamOff(BrokerError):
    """The server (or the account) has no JetStream."""


class NoResponders(BrokerError):
    """Nothing subscribes to the subject a request (or a JetStream publish) went to."""


class NoReply(BrokerError):
    """A request went out and no answer came within its timeout."""


class TooBig(BrokerError):
    """A body beyond the server's max_payload; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the body is {size:,} bytes; this server takes at most {limit:,} (max_payload)",
            retryable=False,
        )


@dataclass(frozen=True)
class StreamInfo:
    name: str
    subjects: tuple[str, ...]
    retention: str  # limits, interest or workqueue
    storage: str
    messages: int
    bytes: int
    first_seq: int  # last_seq + 1 when the stream is empty
    last_seq: int  # 0 when nothing was ever stored
    first_time: datetime | None
    last_time: datetime | None
    deleted: int  # sequences between first and last removed one by one
    consumers: int
    allow_direct: bool


@dataclass(frozen=True)
class StoredMsg:
    """One message of a stream, as stored."""

    stream: str
    seq: int
    subject: str
    time: datetime | None  # when the stream stored it (UTC)
    headers: tuple[tuple[str, bytes], ...]  # the publisher's, in order; a name may repeat
    body: bytes  # at most the body_limit asked for
    size: int  # the whole body's size

    @property
    def truncated(self) -> bool:
        return len(self.body) < self.size


@dataclass(frozen=True)
class PubAck:
    """A stream's acknowledgement of a JetStream publish."""

    stream: str
    seq: int
    duplicate: bool  # the stream had this Nats-Msg-Id already and stored nothing


@dataclass(frozen=True)
class Reply:
    subject: str
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    latency_ms: float  # from sending the request to the reply's arrival


@dataclass(frozen=True)
class Delivery:
    """One message a subscription received (core NATS: no sequence, no stored time)."""

    subject: str
    reply: str
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    received: float  # Unix seconds, on this machine's clock


# -- subjects ----------------------------------------------------------------------------

MAX_SUBJECT = 1024


class BadSubject(BrokerError, ValueError):
    """A subject that cannot be used; the message says why. Nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def check_subject(subject: str, *, wildcards: bool) -> str:
    """`subject` if the server takes it: no spaces or control characters, no empty
    tokens, and the wildcard tokens `*` and `>` (last) only where `wildcards` are
    allowed. As in nats-server, `*` or `>` inside a longer token is a literal."""
    if not subject:
        raise BadSubject("the subject is empty")
    if len(subject) > MAX_SUBJECT:
        raise BadSubject(f"the subject is longer than {MAX_SUBJECT} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in subject):
        raise BadSubject("a subject cannot contain spaces or control characters")
    tokens = subject.split(".")
    for at, token in enumerate(tokens):
        if not token:
            raise BadSubject(f"{subject!r} has an empty token (a leading, trailing or double dot)")
        if token in ("*", ">"):
            if not wildcards:
                raise BadSubject(f"{subject!r} has a wildcard: messages go to one subject")
            if token == ">" and at != len(tokens) - 1:
                raise BadSubject("'>' can only be the last token")
    return subject


# HTTP's token characters, as nats-py requires of header names.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
# A rollup header makes a stream purge the subject (or itself): an admin's purge, not a publish.
REFUSED_HEADERS = frozenset({"nats-rollup"})


def header_problem(name: Any, value: Any) -> str:
    """Why Sluice will not send this header ("" if it will). nats-py writes names and
    values into the header block as they are, so a line break would add headers."""
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        return f"header name {str(name)[:60]!r}: letters, digits and !#$%&'*+-.^_`|~ only"
    if name.lower() in REFUSED_HEADERS:
        return f"{name} would purge messages from a stream; purging is not publishing"
    if not isinstance(value, str):
        return f"header {name!r} must have a text value"
    if "\r" in value or "\n" in value:
        return f"header {name!r} cannot hold a line break"
    return ""


# -- headers, kept whole ----------------------------------------------------------------


def header_pairs(block: bytes) -> tuple[tuple[str, bytes], ...]:
    """(name, value) pairs of a raw header block "NATS/1.0[ status]\\r\\nName: value\\r\\n..."."""
    out = []
    for line in block.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip():
            out.append((name.strip().decode("utf-8", "replace"), value.strip()))
    return tuple(out)


def pairs_of(msg: Msg) -> tuple[tuple[str, bytes], ...]:
    """A message's headers, whole and in order (see `brokers.nats.internals.Client`)."""
    headers = msg.headers or {}
    pairs = getattr(headers, "pairs", None)
    if pairs is None:
        pairs = tuple((k, str(v).encode()) for k, v in headers.items())
    return tuple(pairs)


# -- JetStream answers -------------------------------------------------------------------


def _check_stream(name: str) -> None:
    if not STREAM_NAME.fullmatch(name or ""):
        raise Missing(f"{name[:80]!r} is not a stream name")


def _api_error(err: dict[str, Any], stream: str, seq: int | None) -> BrokerError:
    code, err_code = err.get("code"), err.get("err_code")
    description = str(err.get("description") or err)
    if err_code == ERR_STREAM_NOT_FOUND:
        return Missing(f"there is no stream {stream!r}")
    if err_code in ERR_NO_MESSAGE:
        where = f"message {seq}" if seq is not None else "no such message"
        return _NoMessage(f"{where} is not in the stream {stream!r}")
    if err_code in ERR_JETSTREAM_OFF:
        return JetStreamOff(f"JetStream is not enabled here: {description}", retryable=False)
    retryable = isinstance(code, int) and code >= 500
    return BrokerError(f"JetStream refused: {description} (error {err_code})", retryable=retryable)


def _stream_info(resp: dict[str, Any]) -> StreamInfo:
    config, state = resp.get("config") or {}, resp.get("state") or {}
    return StreamInfo(
        name=str(config.get("name", "")),
        subjects=tuple(config.get("subjects") or ()),
        retention=str(config.get("retention", "limits")),
        storage=str(config.get("storage", "")),
        messages=int(state.get("messages", 0)),
        bytes=int(state.get("bytes", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        first_time=parse_time(state.get("first_ts")),
        last_time=parse_time(state.get("last_ts")),
        deleted=int(state.get("num_deleted", 0)),
        consumers=int(state.get("consumer_count", 0)),
        allow_direct=bool(config.get("allow_direct")),
    )


def from_direct(stream: str, msg: Msg, limit: int | None = None) -> StoredMsg:
    """A direct get's reply: the stored headers, whole, and what the server appended
    after them. A stored message may carry the same names (a stream's RePublish adds
    them), so only the appended block is taken off: it begins with the server's
    Nats-Stream, the last one, followed by appended names alone."""
    pairs = list(pairs_of(msg))
    cut = len(pairs)
    for i in range(len(pairs) - 1, -1, -1):
        if pairs[i][0] not in DIRECT_HEADERS:
            break
        if pairs[i][0] == "Nats-Stream":
            cut = i
            break
    meta = {k: v.decode("utf-8", "replace") for k, v in pairs[cut:]}
    data = bytes(msg.data or b"")
    return StoredMsg(
        stream=meta.get("Nats-Stream", stream),
        seq=_whole(meta.get("Nats-Sequence", "")),
        subject=meta.get("Nats-Subject", ""),
        time=parse_time(meta.get("Nats-Time-Stamp")),
        headers=tuple(pairs[:cut]),
        body=data if limit is None else data[:limit],
        size=len(data),
    )


def from_api(stream: str, raw: dict[str, Any], limit: int | None) -> StoredMsg:
    data = base64.b64decode(raw.get("data") or "")
    hdrs = base64.b64decode(raw.get("hdrs") or "")
    return StoredMsg(
        stream=stream,
        seq=int(raw.get("seq", 0)),
        subject=str(raw.get("subject", "")),
        time=parse_time(raw.get("time")),
        headers=header_pairs(hdrs) if hdrs else (),
        body=data if limit is None else data[:limit],
        size=len(data),
    )


def _cut(m: StoredMsg, limit: int) -> StoredMsg:
    if len(m.body) <= limit:
        return m
    return StoredMsg(m.stream, m.seq, m.subject, m.time, m.headers, m.body[:limit], m.size)


def status_of(msg: Msg) -> str:
    """A status reply's code ("404", "204"...); "" for a stored message (it has a sequence)."""
    headers = msg.headers or {}
    if msg.data or "Nats-Sequence" in headers:
        return ""
    return str(headers.get("Status", ""))


def _description(msg: Msg) -> str:
    headers = msg.headers or {}
    return str(headers.get("Description") or f"status {headers.get('Status')}")


def _whole(text: str) -> int:
    """A sequence the server wrote as decimal digits; 0 (no such sequence) for anything else."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else 0


def _int_header(msg: Msg, name: str, default: int) -> int:
    try:
        return int((msg.headers or {}).get(name, default))
    except ValueError:
        return default


FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: Any) -> datetime | None:
    """A server timestamp (RFC 3339, nanoseconds); None for none or Go's zero time."""
    if not value or str(value).startswith("0001-"):
        return None
    text = FRACTION.sub(r"\1", str(value)).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # not RFC 3339, or past year 9999 once in UTC
        return None


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reason(exc: BaseException) -> str:
    """What went wrong, in words a person can act on (never the URL's password)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not isinstance(
        exc, nats.errors.Error
    ):
        return "no NATS greeting in time (is this the client port?)"
    if isinstance(exc, nats.errors.MaxPayloadError):
        return "the body is larger than the server's max_payload"
    if isinstance(exc, nats.errors.BadSubjectError):
        return "the subject is not valid"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "the connection is closed"
    text = str(exc).removeprefix("nats: ").strip("'\" ")
    if "authorization" in text.lower() or "authentication" in text.lower():
        return "authorization failed: check user, password or token"
    return text or type(exc).__name__
