"""RabbitMQ as the dashboard sees it: queues and streams, exchanges and bindings, dead-letter
queues found from their exchanges, and replays through AMQP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from brokers.base import Message
from dashboard.collection.collector import adapter_for
from dashboard.kinds import Kind
from dashboard.kinds.rabbitmq import deadletters, detectors
from dashboard.kinds.rabbitmq import jobs as job_routing
from dashboard.kinds.rabbitmq import urls as kind_urls
from dashboard.kinds.rabbitmq.views import messages
from dashboard.kinds.rabbitmq.views.deadletters import RabbitDeadLetters
from dashboard.models import Broker, Destination, Job

if TYPE_CHECKING:
    from brokers.base import Transfer
    from dashboard.triage.findings import Limit


class RabbitMQ(Kind):
    name = "rabbitmq"
    import_fields_template = "dashboard/rabbitmq/import_fields.html"
    label = "RabbitMQ"
    jobs = job_routing
    urls = kind_urls
    destination_kinds = ("queue", "stream")
    actions_template = "dashboard/rabbitmq/actions.html"
    live_template = "dashboard/rabbitmq/destination_live.html"
    more_template = "dashboard/rabbitmq/destination_more.html"
    broker_actions_template = "dashboard/rabbitmq/broker_actions.html"
    broker_detectors = (detectors.alarms,)
    destination_detectors = (detectors.stalled, detectors.redelivery)

    def panel(self, dest: Destination) -> dict[str, Any]:
        """The bindings into the queue, from the last topology read (destination_more.html)."""
        bindings = [
            b
            for b in (dest.broker.topology or {}).get("bindings", [])
            if b.get("destination") == dest.name
            and b.get("vhost") == dest.vhost
            and b.get("destination_type") == "queue"
        ]
        return {"bindings": bindings}

    def limits(self, dest: Destination) -> list[Limit]:
        return detectors.limits(dest)

    def links(self, dest: Destination) -> dict[str, str]:
        if dest.kind != "queue":
            return {}
        page = reverse("dashboard:messages", args=[dest.broker.name, "K"])[:-1]
        return {"browse": page + quote(dest.key, safe="")}

    def export_reader(self, job: Job) -> Transfer:
        """A walk of the whole queue: every message read once and put back as it was."""
        dest = job_routing.source_of(job.broker, job.source)
        walk: Transfer = adapter_for(job.broker).walk(dest.vhost, dest.name)  # type: ignore[attr-defined]
        return walk

    def export_effect(self, broker: Broker, key: str) -> str:
        dest = Destination.objects.filter(broker=broker, key=key).first()
        if dest is None or dest.type == "stream":
            return ""
        return (
            "reading it all takes every message and puts it back in its place, marked "
            "redelivered: a classic or quorum queue cannot be read otherwise"
        )

    def dead_letter_keys(self, broker: Broker, among: list[Destination] | None = None) -> set[str]:
        return {found["queue"].key for found in deadletters.find(broker, among=among)}

    def death_info(self, message: Message) -> dict[str, Any]:
        return deadletters.death_info(message)

    def removes_originals(self, broker: Broker, fields: dict[str, Any]) -> bool:
        return job_routing.removes_originals(broker, fields)

    def is_dead_letter_source(self, broker: Broker, key: str) -> bool:
        return any(found["queue"].key == key for found in deadletters.find(broker))

    def publish_page(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return messages.publish_page(request, broker)

    def api_publish(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        return messages.api_publish(request, broker)

    def dead_letters(self) -> Any:
        return RabbitDeadLetters()
