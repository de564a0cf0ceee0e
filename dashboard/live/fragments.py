"""The live part of a page, rendered once per change and shared by everyone who looks.

A page's live fragment (the overview's figures and On fire section, a broker's
listing) is the same for every viewer: roles show and hide actions through CSS,
and the CSRF token is put in per request. So the newest rendering of each view
is kept in the cache with the generation it was rendered at, and a page load
reuses it until something it shows changes:

- the global generation moves after any collection and its triage, on any
  broker or incident change (acknowledge, snooze, the admin): the overview
  reads it;
- each broker's generation moves with that broker's changes: its page reads it.

After a collection the worker renders first and publishes after
(dashboard/live/push.py): it claims every view it will render (each watched
listing, and the default overview, which is the home page), then moves the
generations, renders, and stores each rendering as the newest. A page load of a
view being rendered shows its newest rendering (one change older, for the
length of a render; live updates follow), so the default overview and the
watched views are never rendered on a request. One render of a view runs at a
time: a collection that lands during the push's render asks it to go again
when done (and waits out a page load's render, which no websocket gets), so
collections of several brokers close together cost two renders of a view, not
one each.

Changes made in a request (an acknowledgement, the admin) move the generation
through signals and claim nothing, so the next page load renders the views they
touch. The person who made the change also records the generation it reached
(`saw`): their next page load never shows a rendering older than it, even one
the worker began before their change.

A view nobody watches is rendered by its first page load after a change and
reused by the next ones. Either way the cost of a page does not grow with the
number of people looking.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest
from django.middleware.csrf import get_token

from dashboard.live.watch import View

GLOBAL = "sluice:gen"
PUSH, PAGE = "push", "page"  # who holds a view's rendering_key: the worker, or a page load
RENDER_SECONDS = 30  # a renderer that died holds its view's claim this long at most
KEEP_SECONDS = 600  # a rendering unused this long is dropped; the worker renders watched ones anew
SEEN_KEY = "sluice:seen-gen"  # in the session: the generations its own last change reached
# Rendered in place of the CSRF token, and replaced per request (empty for the push:
# htmx sends the token in a header, set on the page's body).
CSRF_MARK = "sluice-csrf-token-placeholder"

_local = threading.local()


def _gen_key(broker: str) -> str:
    scope = settings.SLUICE_FRAGMENT_SCOPE
    return f"{GLOBAL}:{scope}:{broker}" if broker else f"{GLOBAL}:{scope}"


def _view_gen_key(view: View) -> str:
    return _gen_key("" if view.page == "overview" else view.broker)


def generation(view: View) -> int:
    key = _view_gen_key(view)
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


def _key(view: View, part: str) -> str:
    return f"sluice:fragment:{settings.SLUICE_FRAGMENT_SCOPE}:{view.group}:{part}"


def rendering_key(view: View) -> str:
    """Held while a process renders `view`: page loads show the newest rendering meanwhile."""
    return _key(view, "rendering")


def newest(view: View) -> tuple[int, str] | None:
    """The newest completed rendering of `view`, with the generation it was rendered at."""
    found = cache.get(_key(view, "newest"))
    return (int(found[0]), str(found[1])) if found else None


def _store(view: View, gen: int, html: str) -> None:
    # Only a claim's holder stores, so two renderings of one view never race here.
    cache.set(_key(view, "newest"), (gen, html), timeout=KEEP_SECONDS)


def _hold(view: View, holder: str) -> bool:
    return bool(cache.add(rendering_key(view), holder, timeout=RENDER_SECONDS))


def claim(view: View) -> bool:
    """Become `view`'s renderer for the push, or ask the push rendering it to go once more.

    A page load's rendering is not sent to the view's websockets: wait for it to end.
    """
    deadline = time.monotonic() + RENDER_SECONDS
    while time.monotonic() < deadline:
        if _hold(view, PUSH):
            return True
        holder = cache.get(rendering_key(view))
        if holder == PUSH:
            cache.set(_key(view, "again"), 1, timeout=RENDER_SECONDS)
            # Still held after the flag was set: that renderer will see it.
            if cache.get(rendering_key(view)) == PUSH:
                return False
        elif holder is not None:
            time.sleep(0.05)
    return False


def render_claimed(view: View, render: Callable[[], str], sent: Callable[[str], None]) -> None:
    """Render `view` under the push's claim, as often as others asked meanwhile, and send each."""
    while True:
        try:
            while True:
                cache.delete(_key(view, "again"))
                gen = generation(view)  # before reading: the rendering shows at least this
                html = render()
                _store(view, gen, html)
                sent(html)
                if not cache.get(_key(view, "again")):
                    break
        finally:
            cache.delete(rendering_key(view))
        # A request to go again that came as the claim was let go.
        if not cache.get(_key(view, "again")) or not _hold(view, PUSH):
            return


def publish(
    broker: str,
    views: list[View],
    render: Callable[[View], str],
    sent: Callable[[View, str], None],
) -> None:
    """`broker` changed what pages show: claim `views`, move the generations, render them.

    Page loads of a claimed view show its newest rendering until the new one is stored;
    a view another push renders is rendered again by it, after this move.
    """
    mine = [view for view in views if _hold(view, PUSH)]
    changed(broker)
    # Asked after the move, so that the other renderer's next round shows it.
    mine += [view for view in views if view not in mine and claim(view)]
    for view in mine:
        render_claimed(view, partial(render, view), partial(sent, view))


def shared(view: View, render: Callable[[], str], at_least: int = 0) -> str:
    """`view`'s fragment as of now: the newest rendering if nothing changed since, else rendered.

    While another process renders the view, its newest rendering, unless older than
    `at_least` (the generation the viewer's own change reached).
    """
    gen = generation(view)
    found = newest(view)
    if found is not None and found[0] >= gen:
        return found[1]
    if found is not None and found[0] >= at_least and cache.get(rendering_key(view)):
        return found[1]
    if not _hold(view, PAGE):
        # Another process renders it, and what is stored is too old for this viewer (or none).
        return render()
    try:
        html = render()
        _store(view, gen, html)
    finally:
        cache.delete(rendering_key(view))
    return html


def saw(request: HttpRequest, broker: str) -> None:
    """`request` changed what pages of `broker` show: its next page loads show at least that."""
    reached = dict(request.session.get(SEEN_KEY, {}))
    for name in {"", broker}:
        reached[name] = int(cache.get(_gen_key(name)) or 0)
    request.session[SEEN_KEY] = reached


def seen(request: HttpRequest, view: View) -> int:
    """The generation of `view` that the viewer's own last change reached (0: none)."""
    reached = request.session.get(SEEN_KEY, {})
    return int(reached.get("" if view.page == "overview" else view.broker, 0))


def for_request(html: str, request: HttpRequest) -> str:
    return html.replace(CSRF_MARK, get_token(request))


def for_push(html: str) -> str:
    return html.replace(CSRF_MARK, "")


@contextlib.contextmanager
def collecting() -> Iterator[None]:
    """A collection's own row saves do not move pages on: the worker publishes after it."""
    _local.collecting = True
    try:
        yield
    finally:
        _local.collecting = False


def _saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A row saved one by one (the admin, an acknowledgement, a collection's broker row)."""
    from dashboard.models import Broker

    if getattr(_local, "collecting", False):
        return
    if isinstance(instance, Broker):
        changed(instance.name)
    else:
        broker = getattr(instance, "broker", None)
        changed(broker.name if broker is not None else "")


def connect() -> None:
    """Bulk writes (a collection's rows, triage's updates) send no signal: the worker publishes
    after them (dashboard/tasks.py)."""
    from dashboard.models import Broker, Destination, Incident

    for model in (Broker, Destination, Incident):
        for signal in (post_save, post_delete):
            signal.connect(_saved, sender=model, dispatch_uid=f"sluice-fragments-{model.__name__}")
