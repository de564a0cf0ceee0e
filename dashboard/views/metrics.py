"""For the monitoring stack already in place: /metrics for Prometheus, /readyz for probes.

Both answer from stored state and never call a broker: a scrape costs three
queries, however many brokers are down.

/metrics needs a Sluice API token of any role (`Authorization: Bearer …`, as a
Prometheus `authorization` block sends it) or a client address in
SLUICE_METRICS_ALLOW (comma-separated addresses or networks). /readyz, like
/healthz, is open: a probe sends no credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.db.models.fields.json import KT
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.utils import floatToGoString

from dashboard.auth import role_of
from dashboard.models import Broker, Destination, Incident

log = logging.getLogger(__name__)

LABELS = ("broker", "kind", "vhost", "name")
BROKER_LABELS = ("broker", "kind")
INCIDENT_LABELS = ("broker", "cause", "severity")

# Every destination metric: (name, type, help, column). A counter's samples end in _total.
METRICS = (
    (
        "sluice_destination_backlog_messages",
        "gauge",
        "Messages waiting (a group's: its lag).",
        "backlog",
    ),
    (
        "sluice_destination_in_flight_messages",
        "gauge",
        "Delivered, not yet acknowledged.",
        "in_flight",
    ),
    ("sluice_destination_consumers", "gauge", "Consumers (a group's: its members).", "consumers"),
    (
        "sluice_destination_in_messages_per_second",
        "gauge",
        "Messages/s in, at the last collection.",
        "in_rate",
    ),
    (
        "sluice_destination_out_messages_per_second",
        "gauge",
        "Messages/s out, at the last collection.",
        "out_rate",
    ),
    (
        "sluice_destination_lag_messages",
        "gauge",
        "Messages a group or consumer has yet to read.",
        "lag",
    ),
    (
        "sluice_destination_lag_seconds",
        "gauge",
        "How long ago the oldest message a group has to read was written.",
        "lag_seconds",
    ),
    (
        "sluice_destination_trouble",
        "gauge",
        "0 fine, 1 no consumers, 2 backlog growing, 3 error.",
        "trouble",
    ),
    (
        "sluice_destination_in_messages",
        "counter",
        "Messages ever in, as the broker counts them.",
        "in_total",
    ),
    (
        "sluice_destination_out_messages",
        "counter",
        "Messages ever out, as the broker counts them.",
        "out_total",
    ),
)
BROKER_METRICS = (
    ("sluice_broker_up", "gauge", "1 if the last collection answered, else 0."),
    (
        "sluice_broker_last_collected_timestamp_seconds",
        "gauge",
        "When the broker was last collected (answered or not), Unix time.",
    ),
    (
        "sluice_broker_collect_duration_seconds",
        "gauge",
        "How long its last successful collection took.",
    ),
)

INCIDENT_METRICS = (
    ("sluice_incidents_open", "gauge", "Open incidents, by broker, cause and severity."),
)

Row = tuple[tuple[str, ...], tuple[float | None, ...]]


def destination_rows() -> Iterator[Row]:
    """(labels, one value per METRICS entry) of every destination of an enabled broker."""
    columns = [column for *_, column in METRICS]
    rows = (
        Destination.objects.filter(gone_since__isnull=True, broker__enabled=True)
        # Read in the database: loading every row's details would cost more than the rest.
        .annotate(lag_seconds=KT("details__extra__lag_seconds__max"))
        .values_list("broker__name", "kind", "vhost", "name", *columns)
    )
    for row in rows.iterator(chunk_size=2000):
        yield row[:4], tuple(_number(value) for value in row[4:])


def broker_rows() -> Iterator[Row]:
    for name, kind, status, collected, ms in Broker.objects.filter(enabled=True).values_list(
        "name", "kind", "status", "last_collected", "collect_ms"
    ):
        yield (
            (name, kind),
            (
                1.0 if status == Broker.STATUS_UP else 0.0,
                collected.timestamp() if collected is not None else None,
                ms / 1000 if ms is not None else None,
            ),
        )


def incident_rows() -> Iterator[Row]:
    rows = (
        Incident.objects.filter(state=Incident.OPEN, broker__enabled=True)
        .values_list("broker__name", "cause", "severity")
        .annotate(n=Count("id"))
        .order_by("broker__name", "cause", "severity")
    )
    for broker, cause, severity, n in rows:
        yield (broker, cause, severity), (float(n),)


def _families() -> tuple[tuple[Iterator[Row], Any, tuple[str, ...]], ...]:
    return (
        (destination_rows(), METRICS, LABELS),
        (broker_rows(), BROKER_METRICS, BROKER_LABELS),
        (incident_rows(), INCIDENT_METRICS, INCIDENT_LABELS),
    )


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):  # a stored detail that is not a number
        return None


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_text() -> bytes:
    """The Prometheus text format (0.0.4), written here: through prometheus_client it costs
    about 0.1 ms a sample, 0.5 s for 5,000 destinations; this writes each destination's
    labels once. tests/test_metrics.py parses it with prometheus_client's parser."""
    out: list[str] = []
    for rows, metrics, labels in _families():
        lines: list[list[str]] = [[] for _ in metrics]
        for values_of, values in rows:
            inner = ",".join(
                f'{label}="{_escape(value)}"'
                for label, value in zip(labels, values_of, strict=True)
            )
            for i, value in enumerate(values):
                if value is not None:
                    lines[i].append(f"{{{inner}}} {floatToGoString(value)}\n")
        for (name, kind, text, *_), samples in zip(metrics, lines, strict=True):
            sample = f"{name}_total" if kind == "counter" else name
            out.append(f"# HELP {sample} {text}\n# TYPE {sample} {kind}\n")
            out.extend(sample + line for line in samples)
    return "".join(out).encode()


class StoredState:
    """The same figures as prometheus_client families, for the formats it writes (OpenMetrics)."""

    def collect(self) -> Iterator[Metric]:
        for rows, metrics, labels in _families():
            families = [
                (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                    name, text, labels=list(labels)
                )
                for name, kind, text, *_ in metrics
            ]
            for values_of, values in rows:
                for family, value in zip(families, values, strict=True):
                    if value is not None:
                        family.add_metric(list(values_of), value)
            yield from families


def _allowed(request: HttpRequest) -> bool:
    """A signed-in user or token with a role, or a client address SLUICE_METRICS_ALLOW names."""
    if role_of(request.user) is not None:
        return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(client in network for network in settings.SLUICE_METRICS_ALLOW)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse(
            "Send a Sluice API token (Authorization: Bearer <token>; any role), or scrape "
            "from an address in SLUICE_METRICS_ALLOW.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
            headers={"WWW-Authenticate": 'Bearer realm="sluice"'},
        )
    accept = request.headers.get("Accept", "")
    if "application/openmetrics-text" in accept:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoredState())
        encode, content_type = choose_encoder(accept)
        return HttpResponse(encode(registry), content_type=content_type)
    return HttpResponse(render_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer and every enabled broker was collected within
    three of its intervals (answered or not); 503 saying which is not so."""
    problems: list[str] = []
    try:
        connection.ensure_connection()
        brokers = list(Broker.objects.filter(enabled=True).order_by("name"))
    except DatabaseError as exc:
        # The answer is open to anyone: the details (hosts, users) go to the log only.
        log.warning("readyz: the database does not answer: %s", exc)
        problems = [f"database: does not answer ({type(exc).__name__})"]
        return JsonResponse({"ready": False, "problems": problems}, status=503)
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        log.warning("readyz: Redis does not answer: %s", exc)
        problems.append(f"redis: does not answer ({type(exc).__name__})")
    now = time.time()
    for broker in brokers:
        limit = 3 * broker.effective_interval
        if broker.last_collected is None:
            problems.append(f"{broker.name}: not collected yet")
        elif now - broker.last_collected.timestamp() > limit:
            ago = now - broker.last_collected.timestamp()
            problems.append(f"{broker.name}: last collected {ago:.0f} s ago (more than {limit} s)")
    status = 503 if problems else 200
    return JsonResponse({"ready": not problems, "problems": problems}, status=status)
