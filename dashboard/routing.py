"""Websocket routes."""

from django.urls import path, re_path

from dashboard.consumers import LiveConsumer
from dashboard.kinds.nats.tail import NatsTailConsumer
from dashboard.sockets import NoSuchSocket
from dashboard.tail import TailConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
    path("ws/tail/<str:broker>/<str:topic>", TailConsumer.as_asgi()),
    # A NATS subject may hold "/" and wildcards: it travels in ?subject=.
    path("ws/nats/tail/<str:broker>", NatsTailConsumer.as_asgi()),
    # Last: any other path is refused, where Channels' router would raise.
    re_path(r"", NoSuchSocket.as_asgi()),
]
