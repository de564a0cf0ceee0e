"""The rabbitmq_prometheus plugin's detailed endpoint: per-queue counts, cheaply.

`GET <prometheus_url>/metrics/detailed?family=...` (port 15692 by default) answers
from the node's core metric tables, without the management statistics database:
on 3.10.8 with 5,000 queues, the fast cycle's families (`FAST_FAMILIES`) take about
0.16 s (0.6 s with the slow cycle's `queue_metrics`), where the management API's
queue listing takes 2.4 s (bench/collect_rabbitmq.py). It has no queue type,
arguments or policies; those come from the management API (`brokers.rabbitmq.monitor`).

The text is parsed here, not with prometheus_client: RabbitMQ 3.10.8 writes label
values as they are, so a queue named `a"b` gives `queue="a"b"`, which no strict
parser reads. Each metric's labels come in a fixed order, so a value runs up to the
separator that names the next label (`",vhost="`), and the last one to the `"}`
before the sample. A name that itself contains `",<next label>="` cannot be told
apart; the first such separator is taken. A newer plugin that escapes (`\\`, `\"`,
`\n`) gives names `unescape` reads; which of the two readings is a real queue is
decided against the management API's names (`monitor`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import requests

from brokers.base import BrokerError
from brokers.rabbitmq.management import _cause, http_base

PORT = 15692
# What every collection asks for.
# RabbitMQ's collect_statistics_interval (5 s by default, as on this project's nodes):
# how often the node refreshes the counters the plugin shows.
REFRESH_SECONDS = 5.5
# Seconds of counter readings a rate is taken over, at least, once that much is known.
# A minute, as the range of `rate()` that dashboards of this plugin's metrics use.
WINDOW_SECONDS = 60.0
RATES = ("publish", "deliver_get", "ack", "redeliver")  # the counters' rates given
FAST_FAMILIES = (
    "queue_coarse_metrics",  # ready, unacked, total per queue
    "queue_consumer_count",  # consumers per queue
    "channel_queue_metrics",  # deliveries, gets and acks per (channel, queue)
    "channel_queue_exchange_metrics",  # publishes per (channel, queue, exchange)
)
# Besides, on the slow cycle: consumers, consumer capacity, memory and bytes, 18
# figures per queue that double the broker's cost of the answer (0.59 s against
# 0.28 s for 5,000 queues on 3.10.8).
FAMILIES = (*FAST_FAMILIES, "queue_metrics")
SIZES = ("consumer_capacity", "memory", "message_bytes", "message_bytes_ready")

# metric -> (labels in the order the plugin writes them, field of QueueSample)
QUEUE_GAUGES = {
    "rabbitmq_detailed_queue_messages_ready": "ready",
    "rabbitmq_detailed_queue_messages_unacked": "unacked",
    "rabbitmq_detailed_queue_messages": "messages",
    "rabbitmq_detailed_queue_consumers": "consumers",
    "rabbitmq_detailed_queue_consumer_capacity": "consumer_capacity",
    "rabbitmq_detailed_queue_process_memory_bytes": "memory",
    "rabbitmq_detailed_queue_messages_bytes": "message_bytes",
    "rabbitmq_detailed_queue_messages_ready_bytes": "message_bytes_ready",
}
QUEUE_LABELS = ("vhost", "queue")
# Per (channel, queue): counters that vanish with the channel.
CHANNEL_COUNTERS = {
    "rabbitmq_detailed_channel_messages_delivered_ack_total": "deliver",
    "rabbitmq_detailed_channel_messages_delivered_total": "deliver_no_ack",
    "rabbitmq_detailed_channel_get_ack_total": "get",
    "rabbitmq_detailed_channel_get_total": "get_no_ack",
    "rabbitmq_detailed_channel_messages_acked_total": "ack",
    "rabbitmq_detailed_channel_messages_redelivered_total": "redeliver",
}
CHANNEL_LABELS = ("channel", "vhost", "queue")
PUBLISHED = "rabbitmq_detailed_queue_messages_published_total"
PUBLISHED_LABELS = ("channel", "queue_vhost", "queue", "exchange_vhost", "exchange")

_SAMPLE_START = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*[{ ]")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class Unavailable(BrokerError):
    """The plugin did not answer, or not with its metrics: use the management API."""


@dataclass
class QueueSample:
    """One queue as the detailed endpoint shows it; None where a family was absent."""

    vhost: str
    name: str  # as written: see `unescape`
    ready: int | None = None
    unacked: int | None = None
    messages: int | None = None
    consumers: int | None = None
    consumer_capacity: float | None = None
    memory: int | None = None
    message_bytes: int | None = None
    message_bytes_ready: int | None = None
    # channel -> counter -> value; only live channels that touched the queue.
    channels: dict[str, dict[str, int]] = field(default_factory=dict)


def lines(text: str) -> Iterator[str]:
    """The samples of `text`, a line broken by a raw newline in a label value joined again."""
    current = ""
    for line in text.split("\n"):
        if line.startswith("#") or _SAMPLE_START.match(line) or not current:
            if current:
                yield current
            current = line
        else:
            current += "\n" + line
    if current:
        yield current


def split_sample(line: str, labels: tuple[str, ...]) -> tuple[str, list[str], str] | None:
    """(metric, label values, value) of `name{l1="..",l2=".."} value`, labels in that order."""
    brace = line.find("{")
    end = line.rfind("} ")
    if brace < 0 or end < brace:
        return None
    name, body, value = line[:brace], line[brace + 1 : end], line[end + 2 :].strip()
    prefix = f'{labels[0]}="'
    if not body.startswith(prefix) or not body.endswith('"'):
        return None
    values, pos = [], len(prefix)
    for nxt in labels[1:]:
        sep = f'",{nxt}="'
        at = body.find(sep, pos)
        if at < 0:
            return None
        values.append(body[pos:at])
        pos = at + len(sep)
    values.append(body[pos:-1])
    return name, values, value


def unescape(value: str) -> str:
    """A label value read as the exposition format escapes it (`\\\\`, `\\"`, `\\n`)."""
    if "\\" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in _ESCAPES:
            out.append(_ESCAPES[value[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse(text: str) -> dict[tuple[str, str], QueueSample]:
    """Every queue of a detailed-endpoint answer, keyed (vhost, name as written)."""
    queues: dict[tuple[str, str], QueueSample] = {}

    def queue(vhost: str, name: str) -> QueueSample:
        found = queues.get((vhost, name))
        if found is None:
            found = queues[(vhost, name)] = QueueSample(vhost, name)
        return found

    for line in lines(text):
        if not line.startswith("rabbitmq_detailed_"):
            continue
        metric = line[: line.find("{")] if "{" in line else ""
        if metric in QUEUE_GAUGES:
            got = split_sample(line, QUEUE_LABELS)
            if got is None:
                continue
            number = _number(got[2])
            if number is None:
                continue
            attr = QUEUE_GAUGES[metric]
            setattr(
                queue(*got[1]),
                attr,
                number if attr == "consumer_capacity" else int(number),
            )
        elif metric in CHANNEL_COUNTERS or metric == PUBLISHED:
            labels = PUBLISHED_LABELS if metric == PUBLISHED else CHANNEL_LABELS
            got = split_sample(line, labels)
            number = _number(got[2]) if got else None
            if got is None or number is None:
                continue
            channel, vhost, name = got[1][0], got[1][1], got[1][2]
            counters = queue(vhost, name).channels.setdefault(channel, {})
            key = "publish" if metric == PUBLISHED else CHANNEL_COUNTERS[metric]
            # Publishes come once per exchange the channel published through.
            counters[key] = counters.get(key, 0) + int(number)
    return queues


def _number(text: str) -> float | None:
    try:
        value = float(text.split(" ")[0])
    except ValueError:
        return None
    return None if value != value else value  # NaN: the plugin has no value


# -- per-queue totals from per-channel counters ---------------------------------


@dataclass(frozen=True)
class Totals:
    """A queue's publish, deliver/get and removal counters, summed over live channels."""

    publish: int
    deliver_get: int
    removed: int
    # Messages/s over the window (`ChannelTotals`): publish, deliver_get, ack, redeliver,
    # and arrivals (what is held now minus then, plus what was removed). Empty until
    # the counters have moved once since the first exact reading.
    rates: dict[str, float] = field(default_factory=dict, compare=False)


class ChannelTotals:
    """Per-queue totals whose change between two readings is exact, or None; and rates.

    The plugin keeps these counters per (channel, queue) only, and drops a closed
    channel's at the node's next metrics sweep (seen on 3.10.8: they linger until
    then), its per-queue and per-exchange rows not necessarily in the same answer.
    So the sum over channels falls, or rises by less than happened, when rows go.
    The sum is given only while every counter of every channel seen last time is
    still there and none went down; otherwise it is None for that reading, and the
    window of rates starts again, so that totals never rise by more than happened.
    What the sum counts is "since the live channels opened", not "since the queue
    began" as the management API's totals do: only differences between readings
    mean the same.

    Rates. Each channel and queue process publishes its counters on its own timer
    (`collect_statistics_interval`, 5 s), and the answer says not when: the change
    between two readings 5 s apart holds none, one or two of a channel's refreshes,
    so a rate over one interval reads 0 or twice the truth. Rates are therefore
    taken between the readings where the counters were first seen to change, over
    at least `WINDOW_SECONDS` once that much is known: as with Prometheus' `rate()`
    over a range, a refresh seen late moves the result by at most about one
    collection interval in the window (≤ 1/12 at 5 s in 60 s). Counters unchanged for
    longer than a refresh (`REFRESH_SECONDS`) mean the traffic stopped: the rates are
    then 0 at once, as the management API's would be, and the window starts again.
    """

    def __init__(self) -> None:
        # Per queue: when it was last read, and its channels' counters then.
        self._last: dict[tuple[str, str], tuple[float, dict[str, dict[str, int]]]] = {}
        # Per queue: the readings where its sums changed (when, sums), oldest first.
        self._changes: dict[tuple[str, str], list[tuple[float, dict[str, int]]]] = {}
        self._still: set[tuple[str, str]] = set()  # queues whose window began at a standstill

    def read(
        self, key: tuple[str, str], sample: QueueSample, first: bool, now: float | None = None
    ) -> Totals | None:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        # Kept even when not given: the next reading's change from it is exact.
        self._last[key] = (now, sample.channels)
        sums = _sums(sample.channels)
        if sample.messages is not None:
            sums["held"] = sample.messages
        if first or (last is not None and _broken(last[1], sample.channels)):
            self._changes[key] = [(now, sums)]  # the window starts again
            self._still.discard(key)
            return None
        changes = self._changes.setdefault(key, [(now, sums)])
        if changes[-1][1] != sums:
            changes.append((now, sums))
        elif now - changes[-1][0] > REFRESH_SECONDS:
            # Stood still for longer than the node takes to refresh them: the traffic
            # stopped. The window starts again from here, so that traffic starting again
            # is not averaged with the standstill.
            changes[:] = [(now, sums)]
            self._still.add(key)
        while len(changes) > 2 and changes[-1][0] - changes[1][0] >= WINDOW_SECONDS:
            del changes[0]
        rates: dict[str, float] = {}
        if len(changes) == 1:
            if key in self._still:
                rates = dict.fromkeys((*RATES, "arrivals"), 0.0)
        else:
            (began, a), (ended, b) = changes[0], changes[-1]
            for name in RATES:
                rates[name] = max(0.0, (b.get(name, 0) - a.get(name, 0)) / (ended - began))
            if "held" in a and "held" in b:
                arrived = b["held"] - a["held"] + _removed(b) - _removed(a)
                rates["arrivals"] = max(0.0, arrived / (ended - began))
        return Totals(
            publish=sums.get("publish", 0),
            deliver_get=sums["deliver_get"],
            removed=_removed(sums),
            rates=rates,
        )

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        """Drop what is remembered of queues not in `keep` (deleted ones)."""
        wanted = set(keep)
        self._last = {k: v for k, v in self._last.items() if k in wanted}
        self._changes = {k: v for k, v in self._changes.items() if k in wanted}
        self._still &= wanted


def _removed(sums: dict[str, int]) -> int:
    return sum(sums.get(k, 0) for k in ("ack", "deliver_no_ack", "get_no_ack"))


def _broken(before: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> bool:
    """Whether a counter seen before is gone or went down (its row was dropped, or made anew)."""
    for channel, counters in before.items():
        current = now.get(channel)
        if current is None:
            return True
        for name, value in counters.items():
            if current.get(name, -1) < value:
                return True
    return False


def _sums(channels: dict[str, dict[str, int]]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for counters in channels.values():
        for name, value in counters.items():
            sums[name] = sums.get(name, 0) + value
    sums["deliver_get"] = sum(
        sums.get(k, 0) for k in ("deliver", "deliver_no_ack", "get", "get_no_ack")
    )
    return sums


# -- the endpoint -----------------------------------------------------------------


def default_url(management_url: str) -> str:
    """The management URL's scheme and host, with the plugin's port."""
    parts = urlsplit(management_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme or 'http'}://{host}:{PORT}"


class PrometheusEndpoint:
    """GETs of one plugin's detailed endpoint, each with `timeout` seconds."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        # The plugin asks for no credentials by default; any in the URL go in the header.
        parts, self.base_url, self.host = http_base(url, "prometheus_url")
        self.timeout = timeout
        self.session = requests.Session()
        if parts.username is not None:
            self.session.auth = (unquote(parts.username), unquote(parts.password or ""))
        self.requests_made = 0

    def close(self) -> None:
        self.session.close()

    def detailed(self, families: tuple[str, ...] = FAMILIES) -> str:
        """The text of `/metrics/detailed` for `families`, or BrokerError."""
        self.requests_made += 1
        try:
            resp = self.session.get(
                self.base_url + "/metrics/detailed",
                params=[("family", f) for f in families],
                timeout=self.timeout,
            )
        except requests.exceptions.Timeout:
            raise Unavailable(
                f"Prometheus plugin at {self.host} did not answer within {self.timeout:g} s"
            ) from None
        except requests.RequestException as exc:
            raise Unavailable(
                f"cannot reach the Prometheus plugin at {self.host}: {_cause(exc)}"
            ) from None
        if resp.status_code >= 400:
            raise Unavailable(
                f"Prometheus plugin at {self.host} answered /metrics/detailed with {resp.status_code}"
                + (
                    " (a plugin older than 3.10 has no detailed endpoint)"
                    if resp.status_code == 404
                    else ""
                )
            )
        # UTF-8, as the exposition format says; the plugin names no charset, so
        # requests would read it as Latin-1.
        text = resp.content.decode("utf-8", errors="replace")
        if "rabbitmq_" not in text:
            raise Unavailable(
                f"{self.host} answered /metrics/detailed with no RabbitMQ metrics;"
                " is prometheus_url the rabbitmq_prometheus plugin's address?",
                retryable=False,
            )
        return text
