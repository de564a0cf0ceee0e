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

Each stored rendering has an id of its own, stored beside it in a small key. A
page load reads the generation and that id in one round trip, and each web
process keeps the renderings it has read (`Rendering`, `Recent`): the large
one crosses from Redis once per process and change, not once per page load.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
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
RECENT = 32  # renderings each process keeps: the views looked at lately, a few hundred KB each

_local = threading.local()


@dataclass(frozen=True)
class Rendering:
    """A view's live part as rendered at `generation`.

    `id` names a stored rendering and no other, ever (a restarted Redis starts the
    generations again, the ids never); "" for one rendered for a single page load.
    """

    id: str
    generation: int
    html: str


class Recent:
    """The last few values read, by key, in this process (the web tier runs views in threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._found: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        # A changed setting (a test's DEBUG, the fragment scope) changes what renders.
        setting_changed.connect(self._forget, weak=False)

    def _forget(self, **kwargs: Any) -> None:
        with self._lock:
            self._found.clear()

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return found

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._found[key] = value
            self._found.move_to_end(key)
            while len(self._found) > self.size:
                self._found.popitem(last=False)


_recent = Recent(RECENT)  # newest key -> the Rendering read or stored last


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
    found = _read_newest(view)
    return (found.generation, found.html) if found else None


def _read_newest(view: View) -> Rendering | None:
    found = cache.get(_key(view, "newest"))
    if not found:
        return None
    # A rendering stored before ids were (gen, html): it gets none, so it is never kept.
    rendering = Rendering(str(found[2]) if len(found) > 2 else "", int(found[0]), str(found[1]))
    if rendering.id:
        _recent.put(_key(view, "newest"), rendering)
    return rendering


def _store(view: View, gen: int, html: str) -> Rendering:
    # Only a claim's holder stores, so two renderings of one view never race here.
    rendering = Rendering(uuid.uuid4().hex, gen, html)
    # One transaction: the id never names another rendering than the one beside it.
    cache.set_many(
        {
            _key(view, "newest"): (gen, html, rendering.id),
            _key(view, "newest-id"): (gen, rendering.id),
        },
        timeout=KEEP_SECONDS,
    )
    _recent.put(_key(view, "newest"), rendering)
    return rendering


def _generation_and_newest(view: View) -> tuple[int, Rendering | None]:
    """The generation and the newest rendering, in one round trip when this process has it."""
    gen_key, id_key = _view_gen_key(view), _key(view, "newest-id")
    found = cache.get_many([gen_key, id_key])
    gen = int(found[gen_key]) if gen_key in found else generation(view)
    pointer = found.get(id_key)
    if pointer is not None:
        kept = _recent.get(_key(view, "newest"))
        if kept is not None and kept.id == pointer[1]:
            return gen, kept
    return gen, _read_newest(view)


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
    return current(view, render, at_least).html


def current(view: View, render: Callable[[], str], at_least: int = 0) -> Rendering:
    """What `shared` gives, with the rendering's id: a page keeps what it builds around it."""
    gen, found = _generation_and_newest(view)
    if found is not None and found.generation >= gen:
        return found
    if found is not None and found.generation >= at_least and cache.get(rendering_key(view)):
        return found
    if not _hold(view, PAGE):
        # Another process renders it, and what is stored is too old for this viewer (or none).
        return Rendering("", gen, render())
    try:
        return _store(view, gen, render())
    finally:
        cache.delete(rendering_key(view))


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
