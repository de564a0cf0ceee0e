"""The live part of a page, rendered once per change and shared by everyone who looks.

A page's live fragment (the overview's figures and On fire section, a broker's
listing, a destination's figures) is the same for every viewer: roles show and
hide actions through CSS, and the CSRF token is put in per request. So it is
kept in the cache under the view's key and a generation number, and a page
load reuses it until something it shows changes:

- the global generation moves after any collection and its triage, on any
  broker or incident change (acknowledge, snooze, the admin): the overview
  reads it;
- each broker's generation moves with that broker's changes: its page and its
  destinations' pages read it.

The push after each collection (dashboard/live/push.py) renders every watched
view anyway, and stores what it rendered here, so a page load of a watched view
costs a cache read. A view nobody watches is rendered by its first page load
after a change and reused by the next ones. Either way the cost of a page does
not grow with the number of people looking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest
from django.middleware.csrf import get_token

from dashboard.live.watch import View

GLOBAL = "sluice:gen"
KEEP_SECONDS = 600  # a fragment unused this long is dropped; its generation has moved on anyway
# Rendered in place of the CSRF token, and replaced per request (empty for the push:
# htmx sends the token in a header, set on the page's body).
CSRF_MARK = "sluice-csrf-token-placeholder"


def _gen_key(broker: str) -> str:
    scope = settings.SLUICE_FRAGMENT_SCOPE
    return f"{GLOBAL}:{scope}:{broker}" if broker else f"{GLOBAL}:{scope}"


def generation(view: View) -> int:
    key = _gen_key("" if view.page == "overview" else view.broker)
    found = cache.get(key)
    if found is None:
        cache.add(key, 1, timeout=None)
        found = cache.get(key) or 1
    return int(found)


def changed(broker: str = "") -> None:
    """What pages show has changed: the global generation, and `broker`'s, move on."""
    for key in {_gen_key(""), _gen_key(broker)}:
        try:
            cache.incr(key)
        except ValueError:  # not there yet (a fresh cache): any value is new
            cache.add(key, 1, timeout=None)


def _key(view: View, gen: int) -> str:
    return f"sluice:fragment:{settings.SLUICE_FRAGMENT_SCOPE}:{view.group}:{gen}"


def store(view: View, gen: int, html: str) -> None:
    cache.set(_key(view, gen), html, timeout=KEEP_SECONDS)


def shared(view: View, render: Callable[[], str]) -> str:
    """`view`'s fragment as of now: the stored one if nothing changed since, else rendered."""
    gen = generation(view)
    html = cache.get(_key(view, gen))
    if html is None:
        html = render()
        store(view, gen, html)
    return html


def for_request(html: str, request: HttpRequest) -> str:
    return html.replace(CSRF_MARK, get_token(request))


def for_push(html: str) -> str:
    return html.replace(CSRF_MARK, "")


def _saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A row saved one by one (the admin, an acknowledgement, a collection's broker row)."""
    from dashboard.models import Broker

    if isinstance(instance, Broker):
        changed(instance.name)
    else:
        broker = getattr(instance, "broker", None)
        changed(broker.name if broker is not None else "")


def connect() -> None:
    """Bulk writes (a collection's rows, triage's updates) send no signal: the worker calls
    `changed` after them (dashboard/tasks.py)."""
    from dashboard.models import Broker, Destination, Incident

    for model in (Broker, Destination, Incident):
        for signal in (post_save, post_delete):
            signal.connect(_saved, sender=model, dispatch_uid=f"sluice-fragments-{model.__name__}")
