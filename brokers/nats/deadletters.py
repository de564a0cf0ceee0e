"""JetStream dead letters: the stream that captures advisories, and the advisories it holds.

Talks to: one NATS server's client port, through `brokers.nats.pipeline.DeadLetterClient`
(a `NatsClient` that reads and publishes many messages at once).

JetStream has no dead-letter queue. When a message reaches a consumer's max
deliveries, or a client terminates it (AckTerm), the server publishes an
advisory on `$JS.EVENT.ADVISORY.CONSUMER.{MAX_DELIVERIES,MSG_TERMINATED}.<stream>.<consumer>`:
a pointer (stream, sequence), not a copy, and only if something listens at
that moment. A stream on those subjects (the capture stream) is a listener
that never goes away: the server stores every advisory even while all of
Sluice is down. The message itself stays in its stream until it is deleted or
the stream's limits remove it; it is read by sequence (direct get, else
STREAM.MSG.GET), never through a consumer, which would move a consumer's
state or be refused on a work-queue stream.

Their subjects name the kind, the stream and the consumer, so counts per stream,
consumer and kind are the server's own (`advisory_counts`, one request, no message
read), and a filter on them is a subject filter the server applies
(`advisory_filter` with `DeadLetterClient.read(subject=...)`): a look at one
stream's dead letters reads those advisories and no other.

Cannot:
    - see advisories of other accounts: the server publishes them in the
      account of the stream, and the capture stream lives in ours;
    - show a message its stream no longer holds (advisories carry no payload);
    - count by an AckTerm reason without reading the advisories: the reason is in
      the body, not the subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from brokers.base import BrokerError
from brokers.nats.client import JetStreamOff, Missing, StoredMsg
from brokers.nats.pipeline import DeadLetterClient, StreamInfo, unix
from brokers.nats.wire import STREAM_NAME

CAPTURE_SUBJECTS = (
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>",
)
MAX_DELIVERIES = "io.nats.jetstream.advisory.v1.max_deliver"
TERMINATED = "io.nats.jetstream.advisory.v1.terminated"
# The advisories' subjects: <prefix><MAX_DELIVERIES|MSG_TERMINATED>.<stream>.<consumer>.
ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER."
SUBJECT_KINDS = {"MAX_DELIVERIES": "max_deliveries", "MSG_TERMINATED": "terminated"}
KIND_TOKENS = {kind: token for token, kind in SUBJECT_KINDS.items()}
# Pages of per-subject counts read at most (the server sends up to 100,000 subjects a page).
COUNT_PAGES = 10


@dataclass(frozen=True)
class Advisory:
    """A dead-letter advisory as the capture stream stored it."""

    seq: int  # its sequence in the capture stream
    kind: str  # "max_deliveries" or "terminated"
    stream: str  # where the message is
    consumer: str  # who gave up on it
    stream_seq: int  # the message's sequence in `stream`
    deliveries: int
    reason: str  # the client's AckTerm reason, "" when none was given
    time: float | None  # Unix seconds
    id: str = ""

    @property
    def why(self) -> str:
        """The reason as shown and grouped: "max deliveries", "terminated: <reason>"."""
        if self.kind == "max_deliveries":
            return "max deliveries"
        return f"terminated: {self.reason}" if self.reason else "terminated"


@dataclass(frozen=True)
class CaptureStatus:
    """Whether advisories are being captured, and if not, why."""

    # "ok", "created", "adopted" (another stream captures them), "missing"
    # (and not to be created), "refused", "no-jetstream", "unreachable"
    state: str
    stream: str
    detail: str = ""
    info: StreamInfo | None = None

    @property
    def capturing(self) -> bool:
        return self.state in ("ok", "created", "adopted")


def parse_advisory(msg: StoredMsg) -> Advisory | None:
    """The dead-letter advisory `msg` holds; None for anything else."""
    try:
        body = json.loads(msg.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("type") not in (MAX_DELIVERIES, TERMINATED):
        return None
    try:
        return Advisory(
            seq=msg.seq,
            kind="max_deliveries" if body["type"] == MAX_DELIVERIES else "terminated",
            stream=str(body["stream"]),
            consumer=str(body.get("consumer", "")),
            stream_seq=int(body["stream_seq"]),
            deliveries=int(body.get("deliveries", 0)),
            reason=str(body.get("reason", "")),
            time=unix(body.get("timestamp")) or (msg.time.timestamp() if msg.time else None),
            id=str(body.get("id", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def capture_config(name: str, max_age_days: int, max_bytes: int) -> dict[str, Any]:
    """The capture stream: advisories kept `max_age_days` or up to `max_bytes`, oldest dropped."""
    return {
        "name": name,
        "description": "Dead-letter advisories captured for Sluice",
        "subjects": list(CAPTURE_SUBJECTS),
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_age": max_age_days * 86400 * 10**9,
        "max_bytes": max_bytes,
        "max_msgs": -1,
        "max_consumers": -1,
        "num_replicas": 1,
        "allow_direct": True,
    }


def manual_command(name: str, max_age_days: int, max_bytes: int) -> str:
    """The `nats` CLI command that creates the same capture stream by hand."""
    subjects = " ".join(f"--subjects '{s}'" for s in CAPTURE_SUBJECTS)
    return (
        f"nats stream add {name} {subjects} --storage file --retention limits "
        f"--discard old --max-age {max_age_days}d --max-bytes {max_bytes} "
        "--replicas 1 --allow-direct --defaults"
    )


# -- the capture stream ---------------------------------------------------------


def ensure_capture(
    client: DeadLetterClient,
    name: str,
    create: bool,
    max_age_days: int = 30,
    max_bytes: int = 256 * 1024 * 1024,
) -> CaptureStatus:
    """Check that advisories are captured, creating the stream `name` if allowed and missing.

    Costs one request when the stream is there (STREAM.INFO), two or three when
    it is not. Another stream already taking the advisory subjects (made by
    hand under another name) is used as it is: two streams cannot share them.
    """
    try:
        try:
            info = client.info(name, fresh=True)
        except Missing:
            pass
        else:
            missing = [s for s in CAPTURE_SUBJECTS if s not in info.subjects]
            if missing:
                taken = ", ".join(missing)
                return CaptureStatus(
                    "refused", name, f"stream {name!r} exists but does not take {taken}", info
                )
            return CaptureStatus("ok", name, "", info)
        other = [s for s in client.streams_for(CAPTURE_SUBJECTS[0]) if s != name]
        if other:
            info = client.info(other[0], fresh=True)
            return CaptureStatus(
                "adopted", info.name, f"advisories are captured by stream {info.name!r}", info
            )
        if not create:
            return CaptureStatus("missing", name, "no stream captures the dead-letter advisories")
        return CaptureStatus(
            "created", name, "", client.add_stream(capture_config(name, max_age_days, max_bytes))
        )
    except JetStreamOff as exc:
        return CaptureStatus("no-jetstream", name, exc.message)
    except BrokerError as exc:
        refused = exc.message.startswith(("JetStream refused", "the server refused"))
        return CaptureStatus("refused" if refused else "unreachable", name, exc.message)


def newest_advisories(
    client: DeadLetterClient, capture: str, limit: int, subject: str | None = None
) -> tuple[list[Advisory], StreamInfo]:
    """The newest `limit` dead-letter advisories of the capture stream, oldest first.

    With `subject` (`advisory_filter`), the newest on it: the server picks them, in
    spans of sequences that grow fourfold back from the end, so that a few recent
    ones are found without a read of the rest, and an old one in at most a handful
    of requests more.
    """
    info = client.info(capture, fresh=True)
    if info.messages == 0:
        return [], info
    if subject is None:
        start = max(info.first_seq, info.last_seq - limit + 1)
        stored, _ = client.read(capture, start, limit, end=info.last_seq + 1)
    else:
        stored = []
        end, span = info.last_seq + 1, max(limit, 1000)
        while end > info.first_seq and len(stored) < limit:
            start, part = max(info.first_seq, end - span), []
            seq = start
            while seq < end:
                got, seq = client.read(capture, seq, limit, end=end, subject=subject)
                part += got
            stored = part[-(limit - len(stored)) :] + stored
            end, span = start, span * 4
    advisories = [a for a in (parse_advisory(m) for m in stored) if a is not None]
    return advisories, info


# -- filters the server applies -------------------------------------------------------


class NoSuchName(ValueError):
    """A filter value no stream or consumer can be named: no advisory has it."""


def advisory_filter(stream: str = "", consumer: str = "", kind: str = "") -> str | None:
    """The advisory subject that takes only these (a wildcard for each not given).

    None when nothing is asked (every advisory). `kind` is "max_deliveries" or
    "terminated". NoSuchName for a name that could not be a subject token.
    """
    if not (stream or consumer or kind):
        return None
    for name in (stream, consumer):
        if name and not STREAM_NAME.fullmatch(name):
            raise NoSuchName(f"{name!r} cannot be the name of a stream or a consumer")
    if kind and kind not in KIND_TOKENS:
        raise NoSuchName(f"{kind!r} is not a kind of dead-letter advisory")
    return f"{ADVISORY_PREFIX}{KIND_TOKENS.get(kind, '*')}.{stream or '*'}.{consumer or '*'}"


def reason_kind(reason: str) -> str:
    """The advisory kind a reason as shown (`Advisory.why`) belongs to; "" for none."""
    if reason == "max deliveries":
        return "max_deliveries"
    if reason == "terminated" or reason.startswith("terminated: "):
        return "terminated"
    return ""


def counted(
    counts: dict[str, int], stream: str = "", consumer: str = "", kind: str = ""
) -> dict[tuple[str, str, str], int]:
    """The server's per-subject counts as (kind, stream, consumer) -> advisories, those
    asked only (all for what is not given)."""
    out: dict[tuple[str, str, str], int] = {}
    for subject, n in counts.items():
        parsed = advisory_subject(subject)
        if parsed is None:
            continue
        if (kind and parsed[0] != kind) or (stream and parsed[1] != stream):
            continue
        if consumer and parsed[2] != consumer:
            continue
        out[parsed] = out.get(parsed, 0) + n
    return out


# -- advisories counted per consumer ------------------------------------------------


def advisory_subject(subject: str) -> tuple[str, str, str] | None:
    """(kind, stream, consumer) of a dead-letter advisory's subject; None for another subject.

    Stream and consumer names hold no dots, so the subject splits without doubt.
    """
    if not subject.startswith(ADVISORY_PREFIX):
        return None
    what, _, where = subject.removeprefix(ADVISORY_PREFIX).partition(".")
    stream, _, consumer = where.partition(".")
    kind = SUBJECT_KINDS.get(what)
    if kind is None or not stream or not consumer or "." in consumer:
        return None
    return kind, stream, consumer


def subject_counts(client: DeadLetterClient, stream: str, subjects: str = ">") -> dict[str, int]:
    """How many messages `stream` holds per subject, of those `subjects` (wildcards) takes.

    STREAM.INFO asking for the per-subject counts: the server's own, exact, with no
    message read; a page per 100,000 subjects, up to COUNT_PAGES. Missing if there
    is no stream `stream`.
    """
    counts: dict[str, int] = {}
    for _ in range(COUNT_PAGES):
        answer = client.api(
            f"STREAM.INFO.{stream}", {"subjects_filter": subjects, "offset": len(counts)}, stream
        )
        page = (answer.get("state") or {}).get("subjects") or {}
        counts.update({str(k): int(v) for k, v in page.items()})
        if not page or len(counts) >= int(answer.get("total") or 0):
            break
    return counts


def advisory_counts(client: DeadLetterClient, capture: str) -> dict[str, int]:
    """How many dead-letter advisories the capture stream holds, per subject (one request,
    more only past 100,000 consumers)."""
    return subject_counts(client, capture, f"{ADVISORY_PREFIX}>")


def count_below(client: DeadLetterClient, capture: str, subject: str | None, end: int) -> int:
    """How many advisories on `subject` (None: every dead-letter advisory) the capture
    stream holds below sequence `end`, exactly.

    The server's count per subject, less those at `end` or later, which are read (only
    they, picked by the server): those that came after a job fixed its range.
    """
    on = subject or f"{ADVISORY_PREFIX}>"
    total = sum(n for k, n in subject_counts(client, capture, on).items() if advisory_subject(k))
    info = client.info(capture, fresh=True)
    return total - _read_and_count(client, capture, on, max(end, info.first_seq), info.last_seq + 1)


def count_between(
    client: DeadLetterClient, capture: str, subject: str | None, lo: int, hi: int
) -> int:
    """How many advisories on `subject` the capture stream holds in [lo, hi), exactly.

    From its first sequence, the server's count less those at `hi` or later
    (`count_below`); from further in (a job resumed), those in the range are read,
    the server picking them by subject, and counted.
    """
    info = client.info(capture, fresh=True)
    if lo <= info.first_seq:
        return count_below(client, capture, subject, hi)
    on = subject or f"{ADVISORY_PREFIX}>"
    return _read_and_count(client, capture, on, lo, min(hi, info.last_seq + 1))


def _read_and_count(client: DeadLetterClient, capture: str, on: str, lo: int, hi: int) -> int:
    """The advisories on subject `on` in [lo, hi), read (only they: the server picks
    them) and counted."""
    seq, found = lo, 0
    while seq < hi:
        got, seq = client.read(capture, seq, 10_000, end=hi, subject=on)
        found += sum(1 for m in got if advisory_subject(m.subject))
    return found
