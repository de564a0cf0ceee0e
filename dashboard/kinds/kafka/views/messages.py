"""A Kafka topic's messages: browse and filter them, download one; the JSON API alike.

Reading uses a consumer with no group and commits nothing, so viewers may
browse, and nothing is audited. Whole-topic searches are in `kafka_searches`
and publishing in `kafka_publish`; the URLs of the first are listed here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from brokers.base import BrokerError
from brokers.kafka.browse import NotFound, Page, Record, Rejected, TopicReader
from brokers.kafka.filters import FilterError, Matcher, compile_filters
from brokers.schemas import Schema
from dashboard import decoding, masking
from dashboard.auth import VIEWER, require_role
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.kafka.search import TOPIC_NAME, kafka_adapter
from dashboard.kinds.kafka.views import searches as kafka_searches
from dashboard.kinds.kafka.views.searches import when
from dashboard.models import Broker, Destination
from dashboard.views import messageview
from dashboard.views.api import error
from dashboard.views.messageview import shown_bytes
from dashboard.views.pages import get_broker_or_404
from dashboard.views.params import BadInput, parse_time, whole

MAX_COUNT = 200  # messages one read shows
DEFAULT_COUNT = 20
# Records one filtered read looks at before it stops and offers to go on; a
# whole topic is the search's job.
SCAN_BUDGET = 10_000
READ_FROM = ("newest", "offset", "time")


# -- parameters ---------------------------------------------------------------


def read_options(params: Any) -> dict[str, Any]:
    """How to read, from query parameters: from, partition, offset, time, count."""
    start = params.get("from") or "newest"
    if start not in READ_FROM:
        raise BadInput(f"from must be one of {', '.join(READ_FROM)}")
    opts: dict[str, Any] = {
        "from": start,
        "count": whole(params, "count", DEFAULT_COUNT, 1, MAX_COUNT),
        "partition": whole(params, "partition", None, 0, 2**31 - 1),
    }
    if start == "offset":
        opts["partition"] = opts["partition"] or 0
        opts["offset"] = whole(params, "offset", 0, 0, 2**63 - 1)
    elif start == "time":
        if not params.get("time"):
            raise BadInput("reading from a time needs the time")
        opts["time"] = parse_time(params["time"])
    return opts


def read(reader: TopicReader, opts: dict[str, Any], matcher: Matcher) -> Page:
    filtering = None if matcher.empty else matcher
    if opts["from"] == "offset":
        return reader.from_offset(
            opts["partition"], opts["offset"], opts["count"], filtering, SCAN_BUDGET
        )
    if opts["partition"] is not None:
        reader.check_partition(opts["partition"])
    if opts["from"] == "time":
        return reader.from_time(
            opts["time"], opts["count"], opts["partition"], filtering, SCAN_BUDGET
        )
    return reader.newest(opts["count"], opts["partition"], filtering, SCAN_BUDGET)


def open_reader(broker: Broker, topic: str) -> TopicReader:
    if not TOPIC_NAME.fullmatch(topic):
        raise NotFound(f"{topic[:80]!r} is not a Kafka topic name")
    return TopicReader(kafka_adapter(broker), topic, body_limit=settings.SLUICE_BODY_LIMIT)


# -- showing records ----------------------------------------------------------


def record_view(
    record: Record, schemas: Sequence[Schema] = (), masker: masking.Masker = masking.NONE
) -> dict[str, Any]:
    """What the template needs of one record, masked for its reader; all of it is escaped
    on output."""
    record = masked_record(record, masker)
    return {
        "r": record,
        "when": when(record.timestamp),
        "key": shown_bytes(record.key, 1000),
        "headers": [(name, shown_bytes(value, 1000)) for name, value in record.headers],
        "body": messageview.body_parts(
            record.value, (record.topic,), record.headers, schemas, masker.mask
        ),
    }


def masked_record(record: Record, masker: masking.Masker) -> Record:
    if not masker:
        return record
    return replace(
        record,
        key=masker.raw("key", record.key),
        value=None if record.value is None else masker.body(record.value),
        headers=tuple((name, masker.raw(name, value)) for name, value in record.headers),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def record_json(record: Record) -> dict[str, Any]:
    """A record for the API: text where the bytes are UTF-8, base64 always."""
    return {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": record.timestamp_type,
        "key": text_of(record.key),
        "key_base64": _b64(record.key),
        "headers": [
            {"name": name, "value": text_of(value), "value_base64": _b64(value)}
            for name, value in record.headers
        ],
        "value": text_of(record.value),
        "value_base64": _b64(record.value),
        "size": record.size,
        "truncated": record.truncated,
    }


def get_kafka_broker_or_404(name: str) -> Broker:
    broker = get_broker_or_404(name)
    if broker.kind != "kafka":
        raise Http404(f"{name} is not a Kafka broker: it has no topics.")
    return broker


def _topic_dest(broker: Broker, topic: str) -> Destination | None:
    return Destination.objects.filter(broker=broker, key=f"topic/{topic}").first()


# -- views --------------------------------------------------------------------


@require_GET
@require_role(VIEWER)
def messages(request: HttpRequest, name: str, topic: str) -> HttpResponse:
    """Browse: the newest messages, or from an offset, or from a time; filtered if asked."""
    broker = get_kafka_broker_or_404(name)
    params = request.GET
    dest = _topic_dest(broker, topic)
    ctx: dict[str, Any] = {
        "broker": broker,
        "topic": topic,
        "dest": dest,
        "form": params,
        "read_from": params.get("from") or "newest",
        "max_count": MAX_COUNT,
        "budget": SCAN_BUDGET,
        "search_query": urlencode({k: v for k, v in params.items() if k in FILTER_FIELDS}),
    }
    status = 200
    try:
        opts = read_options(params)
        matcher = compile_filters(params)
        ctx.update(opts=opts, filtered=not matcher.empty, filter_text=matcher.describe())
        with open_reader(broker, topic) as reader:
            ctx["partitions"] = reader.partitions
            page = read(reader, opts, matcher)
        ctx["page"] = page
        schemas = decoding.schemas()
        masker = masking.for_request(request, broker.name, topic)
        ctx["shown"] = [record_view(r, schemas, masker) for r in page.records]
        ctx["next_url"] = _next_url(params, opts, page)
    except (BadInput, FilterError, Rejected) as exc:
        ctx["error"], status = str(exc), 404 if isinstance(exc, NotFound) else 400
    except BrokerError as exc:
        ctx["error"], ctx["unreachable"] = str(exc), True
    if "partitions" not in ctx and dest is not None:
        count = (dest.details or {}).get("extra", {}).get("partitions") or 0
        ctx["partitions"] = list(range(count))
    return render(request, "dashboard/kafka/messages.html", ctx, status=status)


FILTER_FIELDS = ("key", "key_mode", "header", "header_value", "body", "mode")


def _next_url(params: Any, opts: dict[str, Any], page: Page) -> str:
    """The query string of the next page, when reading one partition by offset."""
    if opts["from"] != "offset":
        return ""
    p = opts["partition"]
    if page.next.get(p, 0) >= page.bounds[p][1]:
        return ""
    query = {k: v for k, v in params.items() if k != "offset"}
    query["offset"] = str(page.next[p])
    return "?" + urlencode(query)


@require_GET
@require_role(VIEWER)
def body(request: HttpRequest, name: str, topic: str) -> HttpResponse:
    """The whole value of one record, as a download."""
    broker = get_kafka_broker_or_404(name)
    try:
        partition = whole(request.GET, "partition", None, 0, 2**31 - 1)
        offset = whole(request.GET, "offset", None, 0, 2**63 - 1)
        if partition is None or offset is None:
            raise BadInput("give the partition and the offset")
        with open_reader(broker, topic) as reader:
            reader.check_partition(partition)
            record = reader.record(partition, offset)
    except BadInput as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    except NotFound as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain")
    except BrokerError as exc:
        return HttpResponse(
            f"Could not read the message: {exc}", status=502, content_type="text/plain"
        )
    if record is None:
        return HttpResponse(
            f"There is no message at offset {offset} of partition {partition}.",
            status=404,
            content_type="text/plain",
        )
    value = masking.for_request(request, broker.name, topic).download(record.value or b"")
    if value is None:
        return HttpResponse(masking.WITHHELD, status=403, content_type="text/plain")
    response = HttpResponse(value, content_type="application/octet-stream")
    filename = quote(f"{topic}-{partition}-{offset}.bin", safe="")
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{filename}"
    return response


@require_GET
@require_role(VIEWER)
def api_messages(request: HttpRequest, name: str, topic: str) -> JsonResponse:
    """GET ?from=newest|offset|time&partition=&offset=&time=&count= plus filters."""
    broker = Broker.objects.filter(name=name).first()
    if broker is None or broker.kind != "kafka":
        return error(f"No Kafka broker named {name!r}.", 404)
    try:
        opts = read_options(request.GET)
        matcher = compile_filters(request.GET)
        with open_reader(broker, topic) as reader:
            page = read(reader, opts, matcher)
        masker = masking.for_request(request, broker.name, topic)
    except NotFound as exc:
        return error(str(exc), 404)
    except (BadInput, FilterError, Rejected) as exc:
        return error(str(exc), 400)
    except BrokerError as exc:
        return error(str(exc), 502)
    return JsonResponse(
        {
            "topic": topic,
            "records": [record_json(masked_record(r, masker)) for r in page.records],
            "bounds": {str(p): list(b) for p, b in page.bounds.items()},
            "next": {str(p): o for p, o in page.next.items()},
            "scanned": page.scanned,
            "complete": page.complete,
        }
    )


# Under /brokers/<name>/
urlpatterns: list = [
    path("topics/<str:topic>/messages", messages, name="kafka-messages"),
    path("topics/<str:topic>/search", kafka_searches.search, name="kafka-search"),
    path("topics/<str:topic>/body", body, name="kafka-body"),
]
# Under /searches/
search_urlpatterns: list = [
    path("<str:search_id>/", kafka_searches.search_detail, name="search-detail"),
    path("<str:search_id>/cancel", kafka_searches.search_cancel, name="search-cancel"),
    path("<str:search_id>/export", kafka_searches.search_export, name="search-export"),
]
# Under /api/v1/brokers/<name>/
api_urlpatterns: list = [
    path("topics/<str:topic>/messages", api_messages, name="api-kafka-messages"),
    path("topics/<str:topic>/searches", kafka_searches.api_start, name="api-kafka-search"),
    path("searches/<str:search_id>", kafka_searches.api_detail, name="api-kafka-search-detail"),
    path(
        "searches/<str:search_id>/export",
        kafka_searches.api_export,
        name="api-kafka-search-export",
    ),
]
