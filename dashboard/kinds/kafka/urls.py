"""Kafka's pages and JSON endpoints (dashboard/urls.py mounts them; names stay in "dashboard:")."""

from django.urls import path

from dashboard.kinds.kafka.views import deadletters, messages, offsets, tail

# Under /brokers/<name>/
broker_urls: list = [
    *messages.urlpatterns,
    *tail.urlpatterns,
    *offsets.urlpatterns,
    path("dead-letters/headers", deadletters.check_headers, name="deadletters-headers"),
]
# Under /api/v1/brokers/<name>/
api_urls: list = [*messages.api_urlpatterns, *tail.api_urlpatterns, *offsets.api_urlpatterns]
# Under /searches/
search_urls: list = messages.search_urlpatterns
