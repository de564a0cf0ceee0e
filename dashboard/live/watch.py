"""Which views people watch: a view's key and group, and a count of its viewers in Redis.

A page opens a websocket naming the view it shows ("overview?sort=-backlog",
"broker/rabbit-prod", "destination/42", "job/<id>"); the consumer counts
itself in here, and after each collection the push (dashboard/live/push.py)
renders every view that someone watches.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

import redis
from django.conf import settings

from dashboard.collection.queries import Listing
from dashboard.models import Destination

VIEWS_KEY = "sluice:live:views"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class View:
    page: str  # "overview", "broker", "destination" or "job"
    listing: Listing | None = None
    broker: str = ""
    destination_id: int | None = None
    job: str = ""  # the job's public id

    @property
    def key(self) -> str:
        if self.page == "destination":
            return f"destination/{self.destination_id}"
        if self.page == "job":
            return f"job/{self.job}"
        assert self.listing is not None
        qs = self.listing.querystring()
        base = "overview" if self.page == "overview" else f"broker/{self.broker}"
        return f"{base}?{qs}" if qs else base

    @property
    def group(self) -> str:
        return "live." + hashlib.sha1(self.key.encode()).hexdigest()[:24]

    def affected_by(self, broker: str) -> bool:
        # Job pages are pushed by the job itself, not by collections.
        return self.page == "overview" or (self.page != "job" and self.broker == broker)


def parse(raw: str) -> View | None:
    """The view a websocket asks for, or None if it names none."""
    path, _, query = raw.partition("?")
    params = dict(parse_qsl(query))
    if path == "overview":
        return View("overview", Listing.from_params(params))
    if path.startswith("broker/") and len(path) > 7:
        name = path[7:]
        return View("broker", Listing.from_params(params, broker=name), broker=name)
    if path.startswith("job/") and _UUID.fullmatch(path[4:]):
        return View("job", job=path[4:])
    if path.startswith("destination/") and path[12:].isdigit():
        row = (
            Destination.objects.filter(pk=int(path[12:]))
            .values_list("broker__name", flat=True)
            .first()
        )
        if row is None:
            return None
        return View("destination", broker=row, destination_id=int(path[12:]))
    return None


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def watch(view: View) -> None:
    client = _redis()
    client.hincrby(VIEWS_KEY, view.key, 1)
    client.expire(VIEWS_KEY, 86400)


def unwatch(view: View) -> None:
    client = _redis()
    if client.hincrby(VIEWS_KEY, view.key, -1) <= 0:
        client.hdel(VIEWS_KEY, view.key)


def watched() -> list[View]:
    views = []
    for raw, count in _redis().hgetall(VIEWS_KEY).items():
        if int(count) > 0:
            # The client is made without decode_responses, so keys come as bytes.
            view = parse(raw.decode() if isinstance(raw, bytes) else raw)
            if view is not None:
                views.append(view)
    return views
