"""Live updates: after a collection, render each watched view once and send it to its viewers.

A page opens a websocket naming the view it shows ("overview?sort=-backlog",
"broker/rabbit-prod", "destination/42"). The consumer joins that view's group
and counts itself in a Redis hash. After each collection the worker renders
every view someone watches, once, and sends the fragment to the group; htmx
swaps it in by id. Broker calls never depend on the number of viewers, and
rendering depends only on the number of distinct views.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.template.loader import render_to_string

from dashboard.kinds import kind_of
from dashboard.queries import Listing

log = logging.getLogger(__name__)

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
        from dashboard.models import Destination

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


def render(view: View) -> str:
    """The fragment for `view`, the same markup the page itself renders."""
    from dashboard.views import pages

    if view.page == "job":
        from dashboard.models import Job

        job = Job.objects.select_related("broker").filter(public_id=view.job).first()
        from dashboard.views.jobs import job_context

        return render_to_string("dashboard/job.html#progress", job_context(job)) if job else ""
    if view.page == "destination":
        assert view.destination_id is not None
        ctx = pages.destination_context(view.destination_id)
        if not ctx:
            return ""
        # Figures first, then the Kafka or NATS panel: htmx swaps each by its id.
        return render_to_string("dashboard/destination.html#live", ctx) + render_to_string(
            "dashboard/destination.html#panel", ctx
        )
    assert view.listing is not None
    ctx = pages.listing_context(view.listing)
    html = render_to_string("dashboard/overview.html#live", ctx)
    if view.page == "broker":
        from dashboard.models import Broker

        broker = Broker.objects.filter(name=view.broker).first()
        if broker is not None:
            html += render_to_string(
                "dashboard/broker.html#panel", {"broker": broker, "kind": kind_of(broker)}
            )
    return html


def broadcast(broker: str) -> int:
    """Send fresh fragments to everyone watching a view that `broker` changes."""
    layer = get_channel_layer()
    sent = 0
    for view in watched():
        if not view.affected_by(broker):
            continue
        html = render(view)
        if html:
            async_to_sync(layer.group_send)(view.group, {"type": "fragment", "html": html})
            sent += 1
    return sent


def job_progress(job: object) -> None:
    """Push a job's progress bar to whoever watches the job."""
    view = View("job", job=str(job.public_id))  # type: ignore[attr-defined]
    html = render(view)
    if html:
        async_to_sync(get_channel_layer().group_send)(
            view.group, {"type": "fragment", "html": html}
        )
