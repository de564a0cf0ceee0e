"""Kafka as the dashboard sees it: topics and consumer groups, their status, replays of topics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from brokers.base import Message
from dashboard.kinds import Kind
from dashboard.kinds.kafka import deadletters, detectors, status
from dashboard.kinds.kafka import jobs as job_routing
from dashboard.kinds.kafka import urls as kind_urls
from dashboard.kinds.kafka.tail import KafkaTailConsumer
from dashboard.kinds.kafka.views import deadletters as deadletters_page
from dashboard.kinds.kafka.views import publish
from dashboard.models import Broker, Destination

if TYPE_CHECKING:
    from brokers.base import Destination as Dest
    from dashboard.kinds import Route
    from dashboard.triage.findings import Limit


class Kafka(Kind):
    name = "kafka"
    import_fields_template = "dashboard/kafka/import_fields.html"
    label = "Kafka"
    jobs = job_routing
    urls = kind_urls
    destination_kinds = ("topic", "group")
    unconsumed = ("topic",)  # a topic is read by groups, each a destination of its own
    status_labels = status.LABELS
    actions_template = "dashboard/kafka/actions.html"
    panel_template = "dashboard/kafka/panel.html"
    broker_actions_template = "dashboard/kafka/broker_actions.html"
    broker_panel_template = "dashboard/kafka/broker_panel.html"
    edit_target_template = "dashboard/kafka/deadletters/edit_target.html"
    x_headers_owner = "the broker or the dead-letter producer"
    broker_detectors = (detectors.partitions, detectors.no_controller)
    destination_detectors = (detectors.stalled, detectors.group_error, detectors.retention)

    def site_urls(self) -> list[Route]:
        return [path("searches/", include(kind_urls.search_urls))]

    def websocket_urls(self) -> list[Route]:
        return [path("ws/tail/<str:broker>/<str:topic>", KafkaTailConsumer.as_asgi())]

    def status_rules(self, broker: Broker, since: float, now: float) -> Any:
        return status.rules(broker, since, now)

    def panel(self, dest: Destination) -> dict[str, Any]:
        return status.panel(dest)

    def settle(self, broker: Broker, destinations: tuple[Dest, ...]) -> tuple[Dest, ...]:
        return detectors.settle(broker, destinations)

    def limits(self, dest: Destination) -> list[Limit]:
        return detectors.limits(dest)

    def dead_letter_keys(self, broker: Broker, among: list[Destination] | None = None) -> set[str]:
        return detectors.dead_letter_keys(broker, among)

    def lag_seconds(self, dest: Destination) -> float | None:
        return detectors.lag_seconds(dest)

    def death_info(self, message: Message) -> dict[str, Any]:
        return deadletters.death_info(message)

    def removes_originals(self, broker: Broker, fields: dict[str, Any]) -> bool:
        return False  # a topic keeps its records until retention removes them

    def is_dead_letter_source(self, broker: Broker, key: str) -> bool:
        return any(found["queue"].key == key for found in deadletters.find(broker))

    def publish_page(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return publish.publish(request, broker)

    def api_publish(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return publish.api_publish(request, broker)

    def dead_letters(self) -> Any:
        return deadletters_page.KafkaDeadLetters()
