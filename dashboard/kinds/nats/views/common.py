"""What the NATS message pages share: finding the broker, showing bytes, the streams' subjects."""

from __future__ import annotations

from django.http import Http404

from dashboard.models import Broker, Destination
from dashboard.views.pages import get_broker_or_404


def get_nats_broker_or_404(name: str, other_kind: str = "") -> Broker:
    """The NATS broker named `name`; a 404 saying `other_kind` (or why not) if it is another."""
    broker = get_broker_or_404(name)
    if broker.kind != "nats":
        raise Http404(other_kind or f"{name} is not a NATS broker: it has no streams or subjects.")
    return broker


def api_broker(name: str) -> Broker | None:
    """The NATS broker named `name`, or None (the API answers 404 itself)."""
    broker = Broker.objects.filter(name=name).first()
    return broker if broker is not None and broker.kind == "nats" else None


def sentence(text: str) -> str:
    """A broker error as a sentence: "there is no stream 'x'" → "There is no stream 'x'"."""
    return text[:1].upper() + text[1:]


def stream_subjects(broker: Broker) -> dict[str, list[str]]:
    """Each stream's subjects, as of the last collection: suggestions for the forms."""
    out: dict[str, list[str]] = {}
    rows = Destination.objects.filter(broker=broker, kind="stream", gone_since__isnull=True)
    for stream, details in rows.order_by("name").values_list("name", "details"):
        subjects = ((details or {}).get("extra") or {}).get("subjects") or []
        out[stream] = [s for s in subjects if isinstance(s, str)]
    return out
