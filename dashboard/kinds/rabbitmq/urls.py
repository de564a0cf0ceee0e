"""RabbitMQ's pages and JSON endpoints (dashboard/urls.py mounts them; names stay in "dashboard:")."""

from django.urls import path

from dashboard.kinds.rabbitmq.views import exchanges, messages

# Under /brokers/<name>/
broker_urls: list = [
    path("exchanges/", exchanges.exchanges, name="exchanges"),
    # The key is one URL-encoded segment ("%2F%2Forders"), decoded by Django.
    path("messages/<path:key>", messages.browse, name="messages"),
    path("body/<path:key>", messages.body, name="message-body"),
]
# Under /api/v1/brokers/<name>/
api_urls: list = [path("routes", messages.api_routes, name="api-routes")]
