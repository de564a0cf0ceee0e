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
    # What a page load of this view shows too: rendered once per change, for both.
    html = fragments.for_push(pages.live_fragment(view.listing))
    if view.page == "broker":
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
