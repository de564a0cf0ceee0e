"""NATS as the dashboard sees it: the server, JetStream streams and consumers, dead letters
captured from advisories, and replays from streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.urls import path

from brokers.base import Message
from dashboard.kinds import Kind
from dashboard.kinds.nats import deadletters, detectors, status
from dashboard.kinds.nats import jobs as job_routing
from dashboard.kinds.nats import urls as kind_urls
from dashboard.kinds.nats.tail import NatsTailConsumer
from dashboard.kinds.nats.views import publish
from dashboard.models import Broker

if TYPE_CHECKING:
    from brokers.base import Destination as Dest
    from dashboard.kinds import Route
    from dashboard.models import Destination
    from dashboard.triage.findings import Limit


class Nats(Kind):
    name = "nats"
    import_fields_template = "dashboard/nats/import_fields.html"
    label = "NATS"
    jobs = job_routing
    urls = kind_urls
    destination_kinds = ("stream", "consumer")
    status_labels = status.LABELS
    actions_template = "dashboard/nats/actions.html"
    panel_template = "dashboard/nats/panel.html"
    broker_actions_template = "dashboard/nats/broker_actions.html"
    broker_panel_template = "dashboard/nats/server_panel.html"
    edit_target_template = "dashboard/nats/_edit_target.html"
    edit_note_template = "dashboard/nats/_edit_note.html"
    dead_letters_page = "dashboard:nats-deadletters"
    broker_detectors = (detectors.healthz,)
    destination_detectors = (detectors.stalled, detectors.dead_letters, detectors.redelivery)

    def websocket_urls(self) -> list[Route]:
        # A NATS subject may hold "/" and wildcards: it travels in ?subject=.
        return [path("ws/nats/tail/<str:broker>", NatsTailConsumer.as_asgi())]

    def after_collect(self, broker: Broker) -> None:
        # The advisory capture stream, checked (or created) once per few minutes.
        deadletters.check_now_and_then(broker)

    def status_rules(self, broker: Broker, since: float, now: float) -> Any:
        return status.rules(broker, since, now)

    def settle(self, broker: Broker, destinations: tuple[Dest, ...]) -> tuple[Dest, ...]:
        return detectors.settle(destinations)

    # -- triage ------------------------------------------------------------------

    def limits(self, dest: Destination) -> list[Limit]:
        return detectors.limits(dest)

    def dead_letter_keys(self, broker: Broker, among: list[Destination] | None = None) -> set[str]:
        return detectors.dead_letter_keys(broker, among)

    def death_info(self, message: Message) -> dict[str, Any]:
        return deadletters.death_info(message)

    def removes_originals(self, broker: Broker, fields: dict[str, Any]) -> bool:
        return bool(fields["target"].get("delete_original"))

    def is_dead_letter_source(self, broker: Broker, key: str) -> bool:
        # A job reading the advisory capture stream reads dead letters by definition.
        return key.startswith("advisories/") or any(
            f"stream/{found['stream'].name}" == key
            for found in deadletters.dead_letter_streams(broker)
        )

    def publish_page(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return publish.publish(request, broker.name)

    def api_publish(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return publish.api_publish(request, broker.name)
