"""Publishing one message to a Kafka topic: the page and the API.

`dashboard.views.publish.publish` and `api_publish` hand Kafka brokers over to
here (through `Kind.publish_page` and `Kind.api_publish`), so the URLs, roles
(operator to send) and audit records ("message.publish") are every kind's. Nothing is sent unless every check passes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from brokers.base import BrokerError
from brokers.kafka.browse import NotFound, Rejected
from brokers.kafka.publish import produce
from dashboard.auth import OPERATOR, audit_publish, forbidden, has_role, publish_failure_audited
from dashboard.jobs.deadletters import text_of
from dashboard.kinds.kafka.search import TOPIC_NAME, kafka_adapter
from dashboard.kinds.kafka.views.messages import open_reader
from dashboard.models import Broker, Destination
from dashboard.views.api import error
from dashboard.views.params import MAX_BODY, BadInput, header_pairs, json_object, parse_body, typed


def parse_kafka_headers(raw: Any) -> list[tuple[str, bytes]]:
    """Headers as text (see `header_pairs`), encoded as UTF-8."""
    out = []
    for name, value in header_pairs(raw):
        if not isinstance(name, str) or not name:
            raise BadInput("header names must be non-empty text")
        if not isinstance(value, str):
            raise BadInput(f"header {name!r} must have a text value")
        out.append((name, value.encode("utf-8")))
    return out


def _partition_choice(raw: Any) -> int | None:
    if raw in (None, "", "auto"):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadInput("partition must be a whole number, or empty to let the key choose") from None
    if value < 0:
        raise BadInput("partition must be 0 or more")
    return value


def send(user: Any, broker: Broker, data: Any) -> dict[str, Any]:
    """Check a publish request, produce it with acks=all, audit it; where it landed."""
    topic = str(data.get("topic") or "").strip()
    if not TOPIC_NAME.fullmatch(topic):
        raise BadInput("topic must be a Kafka topic name (letters, digits, . _ -)")
    value = parse_body(str(data.get("body_kind") or "text"), str(data.get("body") or ""))
    if len(value) > MAX_BODY:
        raise BadInput(f"the body is {len(value):,} bytes; the limit here is {MAX_BODY:,}")
    key_text = data.get("key")
    key = str(key_text).encode("utf-8") if key_text not in (None, "") else None
    headers = parse_kafka_headers(data.get("headers"))
    partition = _partition_choice(data.get("partition"))
    where = f"topic/{topic}"
    with publish_failure_audited(user, broker, where, len(value)):
        produced = produce(kafka_adapter(broker), topic, value, key, headers, partition)
    audit_publish(
        user,
        broker,
        where,
        len(value),
        partition=produced.partition,
        offset=produced.offset,
        key=key_text or None,
        # Sent from "Re-produce…": the record it copies.
        **({"copied_from": f"{data.get('from_topic')} {data['from']}"} if data.get("from") else {}),
    )
    return {
        "confirmed": True,
        "routed": True,
        "topic": produced.topic,
        "partition": produced.partition,
        "offset": produced.offset,
        "timestamp": produced.timestamp,
    }


def copy_of(broker: Broker, data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The publish form's fields holding a copy of the record `from` ("partition:offset")
    of `from_topic` (or `topic`), and what the copy could not carry."""
    source = str(data.get("from_topic") or data.get("topic") or "")
    try:
        partition, offset = (int(part) for part in str(data["from"]).split(":"))
    except ValueError:
        raise BadInput("from must be partition:offset, e.g. 0:42") from None
    with open_reader(broker, source) as reader:
        reader.check_partition(partition)
        record = reader.record(partition, offset)
    if record is None:
        raise NotFound(
            f"There is no record at offset {offset} of partition {partition} of {source}."
        )
    lost: list[str] = []
    key = text_of(record.key) if record.key is not None else ""
    if key is None:
        key = ""
        lost.append("its key is binary (a text key only here), so the copy has none")
    kept = []
    for name, value in record.headers:
        text = text_of(value)
        if text is None:
            lost.append(f"header {name!r} is binary or null")
        else:
            kept.append([name, text])
    value = record.value
    if value is None:
        lost.append("it is a tombstone (a null value); the copy's value is empty")
    text = text_of(value or b"")
    bare = (text or "").replace("\r\n", "")
    if "\r" in bare or ("\n" in bare and "\r\n" in (text or "")):
        # A bare CR, or CRLF and bare LF both: a textarea sends its line breaks back
        # as one kind only, so that value comes as base64.
        text = None
    form = {
        "topic": str(data.get("topic") or source),
        "key": key,
        "headers": json.dumps(kept, ensure_ascii=False) if kept else "",
        "body_kind": "text" if text is not None else "base64",
        "body": text if text is not None else base64.b64encode(value or b"").decode(),
        # The textarea shows CRLF as it is; the form says so, to get it back (params.typed).
        "body_crlf": "1" if text and "\r\n" in text else "",
    }
    return form, {"topic": source, "partition": partition, "offset": offset, "lost": lost}


def publish(request: HttpRequest, broker: Broker) -> HttpResponse:
    """The publish page of a Kafka broker (reached through messages.publish)."""
    data = request.POST if request.method == "POST" else request.GET
    topics = list(
        Destination.objects.filter(broker=broker, kind="topic", gone_since__isnull=True)
        .order_by("name")
        .values_list("name", flat=True)
    )
    ctx: dict[str, Any] = {"broker": broker, "form": data, "topics": topics}
    status = 200
    if request.method == "GET" and data.get("from"):
        # "Re-produce…" on a record: the form filled in with a copy of it, to change and send.
        try:
            ctx["form"], ctx["copied"] = copy_of(broker, data)
        except (BadInput, NotFound) as exc:
            ctx["error"], status = str(exc), 404 if isinstance(exc, NotFound) else 400
        except BrokerError as exc:
            ctx["error"], status = f"Could not read the record: {exc}", 502
    if request.method == "POST":
        if not has_role(request.user, OPERATOR):
            return forbidden(request, OPERATOR)
        try:
            ctx["result"] = send(request.user, broker, typed(data))
        except (BadInput, ValueError) as exc:
            ctx["error"], status = str(exc), 400
        except Rejected as exc:
            ctx["error"], status = f"Not sent: {exc}", 400
        except BrokerError as exc:
            ctx["error"], status = f"The broker refused: {exc}", 502
    return render(request, "dashboard/kafka/publish.html", ctx, status=status)


def api_publish(request: HttpRequest, broker: Broker) -> JsonResponse:
    """POST {"topic", "key", "headers", "partition", "body", "body_kind"} (via messages.api_publish)."""
    try:
        return JsonResponse(send(request.user, broker, json_object(request)))
    except NotFound as exc:
        return error(str(exc), 404)
    except Rejected as exc:
        return error(str(exc), 400)
    except ValueError as exc:  # BadInput, a bad body, JSON that does not parse
        return error(str(exc), 400)
    except BrokerError as exc:
        return error(str(exc), 502)
