"""RabbitMQ message jobs: a queue's head read through AMQP, each copy confirmed, then acked.

Replay sends each dead letter back where its `x-death` says it came from;
move sends to an exchange and routing key (or a queue, through the default
exchange); discard acknowledges without sending.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings

from brokers.base import BrokerError, Message, Transfer
from brokers.rabbitmq.management import quote_path
from dashboard.collection.collector import adapter_for
from dashboard.jobs import deadletters
from dashboard.jobs import engine as jobs
from dashboard.jobs.guard import Invalid
from dashboard.kinds.rabbitmq import deadletters as discovery
from dashboard.models import Broker, Destination, Job

ACTIONS = ("replay", "move", "discard")
REPLAY_MODES = ("auto", "exchange", "queue")


def source_of(broker: Broker, key: str) -> Destination:
    dest = Destination.objects.filter(broker=broker, key=key).first()
    if dest is None or dest.kind not in ("queue", "stream"):
        raise Invalid(f"no queue {key!r} on broker {broker.name!r}")
    return dest


def router(job: Job) -> Any:
    """The function that says where each message of `job` goes: (exchange, routing key) or None."""
    if job.action == "move":
        where = (job.target.get("exchange", ""), job.target.get("routing_key", ""))
        return lambda message: where
    if job.action == "replay":
        adapter = adapter_for(job.broker)
        mode = job.target.get("mode", "auto")
        return lambda message: adapter.replay_target(message, mode)  # type: ignore[attr-defined]
    return lambda message: None


def transfer_for(job: Job) -> Transfer:
    try:
        dest = source_of(job.broker, job.source)
    except Invalid as exc:
        raise BrokerError(str(exc), retryable=False) from None
    adapter = adapter_for(job.broker)
    transfer: Transfer = adapter.transfer(  # type: ignore[attr-defined]
        dest.vhost, dest.name, prefetch=max(job.batch_size * 2, 100)
    )
    # Every run, first or resumed, takes what the queue holds now. A resumed
    # run may meet again a batch that was recorded but not acknowledged when
    # the last one stopped: counting from `done` alone would end it short.
    pending = transfer.pending()
    total = job.done + (pending if pending is not None else dest.backlog)
    Job.objects.filter(pk=job.pk).update(total=total)
    job.total = total
    return transfer


def _target(action: str, data: dict[str, Any], dest: Destination) -> dict[str, Any]:
    if action == "replay":
        mode = data.get("mode", "auto")
        if mode not in REPLAY_MODES:
            raise Invalid(f"mode must be one of {', '.join(REPLAY_MODES)}")
        return {"mode": mode}
    if action != "move":
        return {}
    where = data.get("destination")
    if isinstance(where, str):
        where = {"queue": where}
    if not isinstance(where, dict) or not (where.get("queue") or "exchange" in where):
        raise Invalid(
            'move needs a destination: {"queue": name} or {"exchange": name, "routing_key": key}'
        )
    if where.get("queue"):
        target = {"exchange": "", "routing_key": str(where["queue"])}
    else:
        target = {
            "exchange": str(where["exchange"]),
            "routing_key": str(where.get("routing_key", "")),
        }
    if target == {"exchange": "", "routing_key": dest.name}:
        raise Invalid("the destination is the source itself")
    if any(len(value.encode()) > 255 for value in target.values()):
        # AMQP carries both as short strings: no publish could name them.
        raise Invalid("exchange names and routing keys are at most 255 bytes")
    return target


def check(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """The job's fields from request data, or Invalid saying what is wrong."""
    action = data.get("action")
    if action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise Invalid("source must name a queue (its key, e.g. '//payments.dlq')")
    dest = source_of(broker, source)
    try:
        selection, edit = deadletters.check_choice(data)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    target = _target(action, data, dest)
    try:
        rate, batch = jobs.check_pace(data, 500, 5000)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return {
        "action": action,
        "source": dest.key,
        "selection": selection,
        "target": target,
        "edit": edit,
        "rate": rate,
        "batch_size": batch,
    }


def preview(broker: Broker, fields: dict[str, Any]) -> dict[str, Any]:
    """How many messages the job would take, and where they would go, from a look at the head."""
    dest = source_of(broker, fields["source"])
    adapter = adapter_for(broker)
    limit = settings.SLUICE_PEEK_LIMIT
    messages: list[Message] = adapter.browse(dest.vhost, dest.name, dest.type, limit, truncate=256)  # type: ignore[attr-defined]
    route = router(Job(broker=broker, **fields))
    selected = deadletters.selector(fields["selection"], discovery.death_info)
    chosen = [m for m in messages if selected(m)]
    targets: Counter[str] = Counter()
    unknown = 0
    for m in chosen:
        if fields["action"] == "discard":
            targets["(removed)"] += 1
            continue
        where = route(m)
        if where is None:
            unknown += 1
        else:
            targets[f"{where[0] or '(default exchange)'} → {where[1]}"] += 1
    complete = len(messages) < limit
    return {
        "queue_length": dest.backlog,
        "looked_at": len(messages),
        "complete": complete,
        "selected": len(chosen),
        "estimate": len(chosen)
        if complete or not messages
        else round(len(chosen) * dest.backlog / len(messages)),
        "targets": targets.most_common(20),
        "origin_unknown": unknown,
    }


def removes_originals(broker: Broker, fields: dict[str, Any]) -> bool:
    source = Destination.objects.filter(broker=broker, key=fields["source"]).first()
    # A stream is read from an offset; acknowledging a read removes nothing.
    return source is None or source.type != "stream"


# -- imports (dashboard.jobs.imports) ---------------------------------------------------


def import_target(broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
    """{"vhost", "exchange", "routing_key"} from `vhost` (default "/") and `queue`, or
    `exchange` and `routing_key` (none: each message's own); the vhost and exchange
    must exist."""
    vhost = str(data.get("vhost") or "/")
    exchange, key = data.get("exchange"), data.get("routing_key")
    if data.get("queue"):
        exchange, key = "", str(data["queue"])
    if exchange is None:
        raise Invalid(
            'say where to publish: a "queue", or an "exchange" (with a "routing_key", '
            "or none for each message's own)"
        )
    target = {"vhost": vhost, "exchange": str(exchange), "routing_key": key}
    if key is not None:
        target["routing_key"] = str(key)
    if any(len(str(v).encode()) > 255 for v in (target["exchange"], key or "")):
        raise Invalid("exchange names and routing keys are at most 255 bytes")
    adapter = adapter_for(broker)
    try:
        adapter.api.get("/api/vhosts" + quote_path(vhost))  # type: ignore[attr-defined]
        if target["exchange"]:
            adapter.api.get("/api/exchanges" + quote_path(vhost, target["exchange"]))  # type: ignore[attr-defined]
    except BrokerError as exc:
        raise Invalid(f"cannot publish to {import_label(target)}: {exc}") from None
    return target


def import_route(target: dict[str, Any]) -> Any:
    exchange, key = target["exchange"], target["routing_key"]
    if key is None:
        return lambda message: (exchange, message.routing_key)
    return lambda message: (exchange, key)


def import_sender(broker: Broker, target: dict[str, Any], job: Job) -> Any:
    return adapter_for(broker).sender(target["vhost"])  # type: ignore[attr-defined]


def import_label(target: dict[str, Any]) -> str:
    where = f"exchange {target['exchange']!r}" if target["exchange"] else "the default exchange"
    key = target["routing_key"]
    keyed = "each message's own routing key" if key is None else f"routing key {key!r}"
    return f"{where} of vhost {target['vhost']!r}, {keyed}"
