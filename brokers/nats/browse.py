"""Paging through a JetStream stream's messages without a consumer: forward, back, by time.

Built on `NatsClient.get_many` (DIRECT GET batches when the stream allows
them, else one MESSAGE GET per message), so nothing is acknowledged, no
consumer is created and a WorkQueue stream keeps every message. A subject
filter (wildcards allowed) is applied by the server (`next_by_subj`).

Going back has no server-side help (there is no "previous on subject"):
`before()` reads forward through growing windows that end where the page
began, keeping the last `count` matches; at most SCAN_BUDGET messages.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

from brokers.base import BrokerError
from brokers.nats.client import Missing, NatsClient, StoredMsg, StreamInfo

SCAN_BUDGET = 20_000  # messages `before()` may read to find one page
READ_BATCH = 200  # messages asked for at once while going back


class Rejected(BrokerError):
    """The read cannot be done as asked (a sequence beyond the end); no retry helps."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Page:
    info: StreamInfo  # the stream as it was when the page was read
    messages: list[StoredMsg]
    next_seq: int | None  # where the next page begins; None when nothing more matches
    before: int | None  # the previous page ends before this sequence; None at the start
    note: str = ""  # what the reader should know ("3 is no longer in the stream...")


class StreamBrowser:
    """One stream, read a page at a time through a connected `NatsClient`."""

    def __init__(self, client: NatsClient, stream: str, body_limit: int | None = None) -> None:
        self.client = client
        self.stream = stream
        self.body_limit = body_limit
        self.info = client.stream_info(stream)

    def holds(self) -> str:
        """ "stream orders holds 1 to 41", or that it is empty."""
        info = self.info
        if info.messages == 0:
            last = f" (its last sequence is {info.last_seq:,})" if info.last_seq else ""
            return f"stream {info.name} holds no messages{last}"
        return f"stream {info.name} holds {info.first_seq:,} to {info.last_seq:,}"

    def _check(self, seq: int) -> None:
        if seq > self.info.last_seq:
            raise Rejected(f"{self.holds()}; {seq:,} is beyond the last")

    def _read(
        self, count: int, seq: int | None = None, when: datetime | None = None, subject: str = ""
    ) -> list[StoredMsg]:
        return self.client.get_many(
            self.stream,
            count,
            seq=seq,
            start_time=when,
            subject=subject or None,
            direct=self.info.allow_direct,
            body_limit=self.body_limit,
        )

    def _page(self, got: list[StoredMsg], count: int, note: str = "") -> Page:
        """A page from `count` + 1 messages read: the extra one says where the next begins."""
        shown = got[:count]
        return Page(
            info=self.info,
            messages=shown,
            next_seq=got[count].seq if len(got) > count else None,
            before=shown[0].seq if shown and shown[0].seq > self.info.first_seq else None,
            note=note,
        )

    def first(self, count: int, subject: str = "") -> Page:
        """`count` messages from the start of the stream (on `subject`)."""
        if self.info.messages == 0:
            return Page(self.info, [], None, None, f"The {self.holds()}.")
        return self.from_seq(self.info.first_seq, count, subject)

    def from_seq(self, seq: int, count: int, subject: str = "") -> Page:
        """`count` messages from `seq` on (on `subject`); Rejected beyond the last."""
        self._check(seq)
        got = self._read(count + 1, seq=seq, subject=subject)
        on = f" on {subject}" if subject else ""
        note = ""
        if self.info.messages == 0:
            note = f"The {self.holds()}."
        elif seq < self.info.first_seq:
            note = (
                f"Messages before {self.info.first_seq:,} are no longer in the stream; "
                f"showing from {got[0].seq:,}."
                if got
                else ""
            )
        elif got and got[0].seq != seq and not subject:
            note = f"{seq:,} is no longer in the stream; showing from {got[0].seq:,}."
        if not got and not note:
            note = f"No message{on} from {seq:,} to {self.info.last_seq:,}."
        return self._page(got, count, note)

    def from_time(self, when: datetime, count: int, subject: str = "") -> Page:
        """`count` messages stored at or after `when` (on `subject`)."""
        got = self._read(count + 1, when=when, subject=subject)
        note = ""
        if not got:
            on = f" on {subject}" if subject else ""
            last = self.info.last_time
            note = f"No message{on} at or after {when:%Y-%m-%d %H:%M:%S} UTC" + (
                f"; the last was stored at {last:%Y-%m-%d %H:%M:%S} UTC." if last else "."
            )
        return self._page(got, count, note)

    def newest(self, count: int, subject: str = "") -> Page:
        return self.before(self.info.last_seq + 1, count, subject)

    def before(self, seq: int, count: int, subject: str = "") -> Page:
        """The last `count` messages (on `subject`) before `seq`."""
        first = self.info.first_seq
        end = min(seq, self.info.last_seq + 1)
        kept: deque[StoredMsg] = deque(maxlen=count)
        hi, span, read = end, count, 0
        while hi > first and len(kept) < count:
            lo = max(first, end - span)
            segment: deque[StoredMsg] = deque(maxlen=count)
            pos = lo
            while pos < hi:
                got = self._read(READ_BATCH, seq=pos, subject=subject)
                read += len(got)
                segment.extend(m for m in got if m.seq < hi)
                if len(got) < READ_BATCH or got[-1].seq >= hi - 1:
                    break
                if read > SCAN_BUDGET:
                    raise Rejected(
                        f"more than {SCAN_BUDGET:,} messages to read back through; "
                        "start from a sequence or a time instead"
                    )
                pos = got[-1].seq + 1
            # What this window found comes before what the smaller ones kept.
            kept = deque([*segment, *kept][-count:], maxlen=count)
            hi, span = lo, span * 4
        shown = list(kept)
        note = "" if shown else f"No message{f' on {subject}' if subject else ''} before {end:,}."
        following = self._read(1, seq=end, subject=subject) if end <= self.info.last_seq else []
        return Page(
            info=self.info,
            messages=shown,
            next_seq=following[0].seq if following else None,
            before=shown[0].seq if shown and shown[0].seq > first else None,
            note=note,
        )

    def one(self, seq: int) -> StoredMsg:
        """The whole message at `seq`; Missing if it was removed, Rejected beyond the last."""
        self._check(seq)
        got = self.client.get(self.stream, seq, direct=self.info.allow_direct)
        if got is None:
            gone = (
                f" (the stream begins at {self.info.first_seq:,} now)"
                if seq < self.info.first_seq
                else ""
            )
            raise Missing(f"message {seq:,} is no longer in the stream {self.stream}{gone}")
        return got
