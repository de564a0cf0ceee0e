"""NATS's pages and JSON endpoints (dashboard/urls.py mounts them; names stay in "dashboard:")."""

from dashboard.kinds.nats.views import deadletters, messages, server

# Under /brokers/<name>/
broker_urls: list = [*server.urlpatterns, *messages.urlpatterns, *deadletters.urlpatterns]
# Under /api/v1/brokers/<name>/
api_urls: list = [*server.api_urlpatterns, *messages.api_urlpatterns, *deadletters.api_urlpatterns]
