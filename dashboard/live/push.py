"""Live updates: after a collection, render each watched view once and send it to its viewers.

A page opens a websocket naming the view it shows ("overview?sort=-backlog",
"broker/rabbit-prod", "destination/42"). The consumer joins that view's group
and counts itself in a Redis hash (dashboard/live/watch.py). After each collection the worker renders
every view someone watches, once, and sends the fragment to the group; htmx
swaps it in by id. Broker calls never depend on the number of viewers, and
rendering depends only on the number of distinct views.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from dashboard.kinds import kind_of
from dashboard.live import fragments
from dashboard.live.watch import View, watched
from dashboard.models import Broker, Job
from dashboard.views import pages
from dashboard.views.jobs import job_context

log = logging.getLogger(__name__)


def render(view: View) -> str:
    """The fragment for `view`, the same markup the page itself renders."""
    if view.page == "job":
        job = Job.objects.select_related("broker").filter(public_id=view.job).first()
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
    return fragments.for_push(pages.live_fragment(view.listing)) + _broker_panel(view)


def _broker_panel(view: View) -> str:
    """What a broker page's push adds to the shared live part: the kind's panel."""
    if view.page != "broker":
        return ""
    broker = Broker.objects.filter(name=view.broker).first()
    if broker is None:
        return ""
    return render_to_string(
        "dashboard/broker.html#panel", {"broker": broker, "kind": kind_of(broker)}
    )


def _render_listing(view: View) -> str:
    assert view.listing is not None
    return pages.render_live(view.listing)


def broadcast(broker: str) -> int:
    """Publish what `broker`'s collection changed, and send it to everyone watching.

    Each watched listing, and the default overview (the home page, watched or not),
    is rendered and stored before page loads are told of the change
    (fragments.publish); the push sends that same rendering.
    """
    layer = get_channel_layer()
    views = [view for view in watched() if view.affected_by(broker)]
    watching = set(views)
    listings = [view for view in views if view.listing is not None]
    home = pages.listing_view(pages.DEFAULT_OVERVIEW)
    if home not in watching:
        listings.append(home)
    sent = 0

    def send(view: View, html: str) -> None:
        nonlocal sent
        if view in watching:
            # Stored just before this call, under the push's claim: no one else stores it.
            found = fragments.newest(view)
            html = fragments.for_push(html) + _broker_panel(view)
            html = numbered(found[0] if found else 0, html)
            async_to_sync(layer.group_send)(view.group, {"type": "fragment", "html": html})
            sent += 1

    fragments.publish(broker, listings, _render_listing, send)
    for view in views:
        if view.listing is None:
            gen = fragments.generation(view)  # before reading: the rendering shows at least this
            html = render(view)
            if html:
                html = numbered(gen, html)
                async_to_sync(layer.group_send)(view.group, {"type": "fragment", "html": html})
                sent += 1
    return sent


def numbered(generation: int, html: str) -> str:
    """A push led by the generation it shows, in a comment htmx does not swap.

    The generation moves once per collection (and per change made on a page), so a
    client that finds one skipped missed an update: bench/live_soak.py counts them.
    """
    return f"<!-- generation {generation} -->{html}"


def job_progress(job: object) -> None:
    """Push a job's progress bar to whoever watches the job."""
    view = View("job", job=str(job.public_id))  # type: ignore[attr-defined]
    html = render(view)
    if html:
        async_to_sync(get_channel_layer().group_send)(
            view.group, {"type": "fragment", "html": html}
        )
