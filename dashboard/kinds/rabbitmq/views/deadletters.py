"""RabbitMQ on the dead-letters page: dead-letter queues, looked at by get-and-requeue.

Looking at a classic or quorum queue takes its head messages and puts them
back (marked redelivered), so it needs the operator role; a stream is read
from an offset and anyone may look.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from brokers.base import BrokerError, Message
from dashboard.auth import OPERATOR, forbidden, has_role
from dashboard.jobs import deadletters
from dashboard.jobs.guard import Invalid
from dashboard.kinds.rabbitmq import deadletters as discovery
from dashboard.kinds.rabbitmq.jobs import source_of
from dashboard.kinds.rabbitmq.views.messages import find, peek
from dashboard.models import Broker, DeadLetterScan, Destination


class RabbitDeadLetters:
    """What the dead-letters page (dashboard/views/deadletters.py) asks of RabbitMQ."""

    about_template = "dashboard/rabbitmq/deadletters/about.html"
    note_template = "dashboard/rabbitmq/deadletters/note.html"
    form_template = "dashboard/rabbitmq/deadletters/form.html"
    terms = {
        "source": "queue",
        "Source": "Queue",
        "scanned": "first",
        "length_in": "queue at the last collection",
        "id_column": "Exchange",
        "key_column": "Routing key",
        "id_field": "exchange",
    }
    group_names = deadletters.GROUPS

    def about(self) -> dict[str, Any]:
        return {"patterns": discovery.patterns()}

    def find(self, broker: Broker, scans: dict[str, Any]) -> list[dict[str, Any]]:
        return discovery.find(broker, scans)

    def count(self, dest: Destination) -> int | None:
        return dest.backlog

    def look(self, dest: Destination, can_operate: bool) -> str:
        if dest.type == "stream":
            return f"Read up to {settings.SLUICE_PEEK_LIMIT} head messages"
        if not can_operate:
            return ""
        return f"Read up to {settings.SLUICE_PEEK_LIMIT} head messages with get-and-requeue"

    def scan(self, request: HttpRequest, broker: Broker, key: str) -> HttpResponse:
        """Look at a dead-letter queue's head and keep a summary for grouping and picking."""
        back = f"{reverse('dashboard:deadletters', args=[broker.name])}?queue={key}"
        try:
            dest = source_of(broker, key)
        except Invalid as exc:
            flash.error(request, str(exc))
            return redirect("dashboard:deadletters", name=broker.name)
        if dest.type != "stream" and not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        try:
            offset = 0 if dest.type == "stream" else None
            got = peek(
                request.user,
                broker,
                dest,
                settings.SLUICE_PEEK_LIMIT,
                offset,
                4096,
                "deadletters.scan",
            )
        except BrokerError as exc:
            flash.error(request, f"Could not read {dest.name}: {exc}")
            return redirect(back)
        DeadLetterScan.objects.create(
            broker=broker,
            queue=dest.key,
            by=request.user.get_username(),
            length=dest.backlog,
            messages=[deadletters.summary(m, discovery.death_info) for m in got],
        )
        return redirect(back)

    def job_fields(self, post: Any, data: dict[str, Any]) -> None:
        """The form's RabbitMQ fields: where a move goes."""
        if data["action"] != "move":
            return
        if post.get("to_queue"):
            data["destination"] = {"queue": post["to_queue"]}
        else:
            data["destination"] = {
                "exchange": post.get("to_exchange", ""),
                "routing_key": post.get("to_routing_key", ""),
            }

    def to_edit(self, request: HttpRequest, broker: Broker) -> tuple[Destination, Message | None]:
        dest = source_of(broker, request.POST.get("queue", ""))
        message = find(
            request.user, broker, dest, request.POST.get("id", ""), None, "deadletters.edit"
        )
        return dest, message

    def edit_hidden(self, message: Message) -> dict[str, str]:
        return {}

    gone = "among the first messages of the queue"
