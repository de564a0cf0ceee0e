"""Websocket routes: the live views, and each kind's own (its live tail)."""

from django.urls import path, re_path

from dashboard.kinds import all_kinds
from dashboard.live.consumers import LiveConsumer
from dashboard.live.sockets import NoSuchSocket

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
    *(route for kind in all_kinds() for route in kind.websocket_urls()),
    # Last: any other path is refused, where Channels' router would raise.
    re_path(r"", NoSuchSocket.as_asgi()),
]
