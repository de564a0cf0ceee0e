"""Read-side queries shared by the pages, the JSON API and the live push.

Everything a page or the API shows comes through here, so they cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Avg, F, Max, Q, QuerySet

from dashboard.collection import series
from dashboard.models import Broker, Destination, Rollup, Sample

# Columns a table can be sorted by: the URL's name to the ORM ordering.
SORTS = {
    "rank": ["-trouble", "-backlog", "name"],
    "name": ["name", "broker__name"],
    "broker": ["broker__name", "name"],
    "kind": ["kind", "name"],
    "backlog": ["backlog", "name"],
    "in_flight": ["in_flight", "name"],
    "consumers": ["consumers", "name"],
    "in_rate": ["in_rate", "name"],
    "out_rate": ["out_rate", "name"],
    "lag": ["lag", "name"],
    "state": ["state", "name"],
}
NUMERIC_SORTS = {"backlog", "in_flight", "consumers", "in_rate", "out_rate", "lag"}


@dataclass(frozen=True)
class Listing:
    q: str = ""
    broker: str = ""
    kind: str = ""
    sort: str = "rank"  # a key of SORTS, "-" in front for the reverse
    page: int = 1

    @classmethod
    def from_params(cls, params: Any, broker: str = "") -> Listing:
        sort = params.get("sort", "rank") or "rank"
        if sort.lstrip("-") not in SORTS:
            sort = "rank"
        try:
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            page = 1
        return cls(
            q=params.get("q", "").strip()[:200],
            broker=broker or params.get("broker", "").strip()[:64],
            kind=params.get("kind", "").strip()[:16],
            sort=sort,
            page=page,
        )

    def querystring(self, **changes: Any) -> str:
        """This listing's URL parameters, with `changes` applied."""
        from urllib.parse import urlencode

        values = {
            "q": self.q,
            "broker": self.broker,
            "kind": self.kind,
            "sort": self.sort,
            "page": self.page,
        }
        values.update(changes)
        defaults = {"sort": "rank", "page": 1}
        return urlencode({k: v for k, v in values.items() if v and defaults.get(k) != v})

    def sort_link(self, column: str) -> str:
        # Numbers sort largest first on the first click: that is what an operator wants to see.
        first = f"-{column}" if column in NUMERIC_SORTS else column
        if self.sort == first:
            first = column if first.startswith("-") else f"-{column}"
        return self.querystring(sort=first, page=1)


# Large JSON a listing never shows. A broker's topology alone is 730 KB with 5,000
# bindings, and select_related would bring it (decoded) along with every row.
UNSHOWN_BROKER = ("broker__topology", "broker__health")


def destinations(listing: Listing) -> QuerySet[Destination]:
    """The rows of a listing; pass them through `shown` before use."""
    qs = (
        Destination.objects.filter(gone_since__isnull=True, broker__enabled=True)
        .select_related("broker")
        # `details` can hold every consumer of a queue; a row shows two of its
        # entries, read in SQL (see `shown`).
        .defer("details", *UNSHOWN_BROKER)
        .annotate(
            listed_status=F("details__status"), listed_behind=F("details__extra__lag_seconds")
        )
    )
    if listing.broker:
        qs = qs.filter(broker__name=listing.broker)
    if listing.kind:
        qs = qs.filter(kind=listing.kind)
    if listing.q:
        qs = qs.filter(Q(name__icontains=listing.q) | Q(vhost__icontains=listing.q))
    ordering = SORTS[listing.sort.lstrip("-")]
    descending = ordering[0].startswith("-") != listing.sort.startswith("-")
    name = ordering[0].lstrip("-")
    field = F(name)
    # Rows with no value sort last; asking that of a column that is never NULL would
    # keep PostgreSQL from reading the ranking index backwards.
    nulls_last = True if _nullable(name) else None
    first = field.desc(nulls_last=nulls_last) if descending else field.asc(nulls_last=nulls_last)
    return qs.order_by(first, *ordering[1:], "id")


def _nullable(path: str) -> bool:
    """Whether the Destination field at `path` ("backlog", "broker__name") may be NULL."""
    model: Any = Destination
    *hops, last = path.split("__")
    for hop in hops:
        model = model._meta.get_field(hop).related_model
    return bool(model._meta.get_field(last).null)


def page_of(listing: Listing) -> Page:
    paginator = Paginator(destinations(listing), settings.SLUICE_PAGE_SIZE)
    return paginator.get_page(listing.page)


def shown(rows: Iterable[Destination]) -> list[Destination]:
    """Listing rows whose `details` hold only what a listing shows (status, time behind).

    Templates, `trouble_label` and `as_json` read them as usual. The rows are
    for display: saving one would store the cut-down details.
    """
    out = []
    for dest in rows:
        dest.details = {
            "status": dest.listed_status or {},
            "extra": {"lag_seconds": dest.listed_behind or {}},
        }
        out.append(dest)
    return out


def brokers_shown() -> QuerySet[Broker]:
    """Enabled brokers for the cards above a listing, without their topology."""
    return Broker.objects.filter(enabled=True).defer("topology")


def as_json(dest: Destination) -> dict[str, Any]:
    # Kafka groups: the Burrow-like status (dashboard/kinds/kafka/status.py) and how
    # far behind in time the group is; None for everything else.
    status = (dest.details or {}).get("status") or {}
    behind = ((dest.details or {}).get("extra") or {}).get("lag_seconds") or {}
    return {
        "broker": dest.broker.name,
        "key": dest.key,
        "name": dest.name,
        "kind": dest.kind,
        "vhost": dest.vhost,
        "type": dest.type,
        "state": dest.state,
        "backlog": dest.backlog,
        "in_flight": dest.in_flight,
        "consumers": dest.consumers,
        "in_rate": dest.in_rate,
        "out_rate": dest.out_rate,
        "lag": dest.lag,
        "consumer_capacity": dest.consumer_capacity,
        "trouble": dest.trouble_label,
        "status": status.get("status"),
        "status_rule": status.get("rule"),
        "lag_seconds": behind.get("max"),
        "updated_at": dest.as_of.isoformat(),
    }


def broker_json(broker: Broker) -> dict[str, Any]:
    return {
        "name": broker.name,
        "kind": broker.kind,
        "status": broker.status,
        "error": broker.error,
        "down_since": broker.down_since.isoformat() if broker.down_since else None,
        "last_collected": broker.last_collected.isoformat() if broker.last_collected else None,
        "interval": broker.effective_interval,
        "endpoint": broker.endpoint,
    }


def bucketed(samples: QuerySet[Any], seconds: int, *group: str) -> QuerySet[Any]:
    """Samples summed up per `seconds`-long bucket: the largest backlog, the mean rate.

    The largest backlog, because a spike is what an operator must not miss;
    the mean rate, because rates average over time.
    """
    return (
        samples.annotate(bucket=F("ts") / seconds)
        .values(*group, "bucket")
        .annotate(
            backlog=Max("backlog"),
            in_flight=Max("in_flight"),
            consumers=Max("consumers"),
            in_rate=Avg("in_rate"),
            out_rate=Avg("out_rate"),
            lag=Max("lag"),
        )
    )


# Windows a chart or the API can ask for, in seconds.
WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
MAX_POINTS = 360


def history(dest_id: int, window: str, now: float | None = None) -> dict[str, Any]:
    """Points of one destination over `window`, at most MAX_POINTS of them."""
    seconds = WINDOWS[window]
    now = time.time() if now is None else now
    since = int(now) - seconds
    full_until = settings.SLUICE_HISTORY_FULL_HOURS * 3600
    model: type[Sample] | type[Rollup] = Sample if seconds <= full_until else Rollup
    bucket = max(1, -(-seconds // MAX_POINTS))
    if model is Rollup:
        bucket = max(bucket, settings.SLUICE_ROLLUP_SECONDS)
    rows: Iterable[dict[str, Any]]
    if model is Rollup:
        rows = bucketed(
            Rollup.objects.filter(destination_id=dest_id, ts__gte=since), bucket
        ).order_by("bucket")
    else:
        rows = series.bucketed("d.id = %s", [dest_id], bucket, since)
    points = [
        {
            "ts": row["bucket"] * bucket,
            "backlog": row["backlog"],
            "in_flight": row["in_flight"],
            "consumers": row["consumers"],
            "in_rate": _round(row["in_rate"]),
            "out_rate": _round(row["out_rate"]),
            "lag": row["lag"],
        }
        for row in rows
    ]
    return {
        "window": window,
        "since": since,
        "until": int(now),
        "bucket_seconds": bucket,
        "points": points,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def sparklines(
    dest_ids: list[int], now: float | None = None, minutes: int = 60
) -> dict[int, list[int]]:
    """The largest backlog of each minute of the last hour, per destination."""
    now = time.time() if now is None else now
    first = int(now) // 60 - minutes + 1
    lines: dict[int, list[int | None]] = {pk: [None] * minutes for pk in dest_ids}
    for pk, buckets in series.maxima(dest_ids, 60, first * 60).items():
        for minute, value in buckets.items():
            index = minute - first
            if 0 <= index < minutes:
                lines[pk][index] = value
    # Minutes before the first sample are left out rather than drawn as zero.
    out: dict[int, list[int]] = {}
    for pk, values in lines.items():
        while values and values[0] is None:
            values.pop(0)
        filled: list[int] = []
        for value in values:
            filled.append(filled[-1] if value is None and filled else (value or 0))
        out[pk] = filled
    return out
