"""Broker kinds on the Django side: one package per kind, behind the `Kind` interface.

Kind-neutral code (the collector, the job service, the pages, the live push)
asks `kind_of(broker)` and never tests `broker.kind`. Each kind's package holds
its views and urls, status rules, job routing and checks, dead-letter
discovery, templates and template tags; it is a Django app (see its apps.py)
so that Django finds those.

The registry maps short names to dotted paths, imported on first use: loading
this module imports no kind, so models and settings may read it.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.http import HttpRequest, HttpResponse
    from django.urls import URLPattern, URLResolver

    from brokers.base import Destination as Dest
    from brokers.base import Message, Sender, Transfer
    from dashboard.models import Broker, Destination, Job
    from dashboard.triage.findings import Limit

    Route: TypeAlias = URLPattern | URLResolver

# Short name: (label, the Kind class). The order is the order of the broker form's choices.
KINDS: dict[str, tuple[str, str]] = {
    "rabbitmq": ("RabbitMQ", "dashboard.kinds.rabbitmq.kind.RabbitMQ"),
    "kafka": ("Kafka", "dashboard.kinds.kafka.kind.Kafka"),
    "nats": ("NATS", "dashboard.kinds.nats.kind.Nats"),
}

# The kind packages, as Django apps.
APPS = [dotted.rsplit(".", 2)[0] for _, dotted in KINDS.values()]


class UnknownKind(LookupError):
    pass


class Judged:
    """A destination's status from its kind's rules: shown on its page, ranked in the listing."""

    def __init__(self, status: dict[str, Any], trouble: int) -> None:
        self.status = status  # stored as details["status"]: status, rule, since...
        self.trouble = trouble  # 0-3, as Destination.trouble


class JobRouting(Protocol):
    """A kind's jobs module (dashboard/kinds/<kind>/jobs.py); mypy checks that each conforms."""

    def check(self, broker: Broker, data: dict[str, Any]) -> dict[str, Any]: ...

    def preview(self, broker: Broker, fields: dict[str, Any]) -> dict[str, Any]: ...

    def router(self, job: Job) -> Any: ...

    def transfer_for(self, job: Job) -> Transfer: ...

    def import_target(self, broker: Broker, data: dict[str, Any]) -> dict[str, Any]: ...

    def import_route(self, target: dict[str, Any]) -> Callable[[Message], tuple[str, str]]: ...

    def import_sender(self, broker: Broker, target: dict[str, Any], job: Job) -> Sender: ...

    def import_label(self, target: dict[str, Any]) -> str: ...


class KindUrls(Protocol):
    """A kind's urls module (dashboard/kinds/<kind>/urls.py), mounted by dashboard/urls.py."""

    broker_urls: list[Route]  # under /brokers/<name>/
    api_urls: list[Route]  # under /api/v1/brokers/<name>/


class Kind:
    """What kind-neutral code may ask of a broker kind. The defaults are "this kind has none"."""

    name: ClassVar[str]
    label: ClassVar[str]
    # Its message jobs: checks, preview, routing and the transfer (dashboard/kinds/<kind>/jobs.py).
    jobs: JobRouting
    # Its pages and JSON endpoints.
    urls: KindUrls
    # The kinds of destination its monitor reports (Destination.kind), as the listing filters them.
    destination_kinds: ClassVar[tuple[str, ...]] = ()
    # Those whose readers are destinations of their own, so "no consumers" means nothing.
    unconsumed: ClassVar[tuple[str, ...]] = ()
    # Status names this kind's rules give a destination in trouble, as shown in listings.
    status_labels: ClassVar[dict[str, str]] = {}
    # Parts of a destination's page (templates/dashboard/destination.html); "" for none.
    actions_template: ClassVar[str] = ""  # the buttons beside its name
    live_template: ClassVar[str] = ""  # below its figures, pushed live
    panel_template: ClassVar[str] = ""  # a card of the kind's own, pushed live
    more_template: ClassVar[str] = ""  # cards below the charts
    # Parts of a broker's page (templates/dashboard/broker.html).
    broker_actions_template: ClassVar[str] = ""  # the buttons beside its name
    broker_panel_template: ClassVar[str] = ""  # a card of the kind's own, pushed live
    # The dead-letter edit page (templates/dashboard/deadletter_edit.html).
    edit_target_template: ClassVar[str] = ""  # fields saying where the copy goes
    edit_note_template: ClassVar[str] = ""  # what else the kind refuses in an edit
    # The import page's fields saying where the messages go (templates/dashboard/import.html).
    import_fields_template: ClassVar[str] = ""
    x_headers_owner: ClassVar[str] = "the broker"  # who writes the x- headers it keeps
    # The URL name of the page listing its dead letters, under /brokers/<name>/.
    dead_letters_page: ClassVar[str] = "dashboard:deadletters"
    # Its own triage detectors (dashboard/kinds/<kind>/detectors.py), functions of a
    # dashboard.triage.detectors.Context yielding Findings: on the broker (run even
    # when it is down), and on its destinations (run after a successful collection).
    broker_detectors: ClassVar[tuple[Any, ...]] = ()
    destination_detectors: ClassVar[tuple[Any, ...]] = ()

    # -- urls ------------------------------------------------------------------

    def broker_urls(self) -> list[Route]:
        """Pages under /brokers/<name>/."""
        return self.urls.broker_urls

    def api_urls(self) -> list[Route]:
        """JSON endpoints under /api/v1/brokers/<name>/."""
        return self.urls.api_urls

    def site_urls(self) -> list[Route]:
        """Pages at the top level (each with its own prefix)."""
        return []

    def websocket_urls(self) -> list[Route]:
        """Websocket routes of its own (dashboard/live/routing.py mounts them)."""
        return []

    # -- collection ------------------------------------------------------------

    def after_collect(self, broker: Broker) -> None:
        """Anything to do after a successful collection."""

    def status_rules(self, broker: Broker, since: float, now: float) -> Any:
        """A function judging each collected destination: (Dest, out_rate, now) -> Judged | None.

        None when this kind has no status rules.
        """
        return None

    def panel(self, dest: Destination) -> dict[str, Any]:
        """What `panel_template` shows of `dest`."""
        return {}

    def settle(self, broker: Broker, destinations: tuple[Dest, ...]) -> tuple[Dest, ...]:
        """The collected destinations with backlog, consumers and lag as this kind defines them.

        The one place those meanings are set: the pages, the API, /metrics and the
        detectors all read what the collector stores from here. By default, the
        monitor's figures as they are.
        """
        return destinations

    # -- triage ------------------------------------------------------------------

    def limits(self, dest: Destination) -> list[Limit]:
        """The limits `dest`'s backlog runs into (a maximum length, a stream's max_msgs)."""
        return []

    def dead_letter_keys(self, broker: Broker, among: list[Destination] | None = None) -> set[str]:
        """The keys of the broker's dead-letter queues, topics and streams, `among` its
        destinations as triage loaded them (so that finding them costs no query of its own)."""
        return set()

    def links(self, dest: Destination) -> dict[str, str]:
        """URLs of the kind's pages for an incident's actions on `dest`: "browse", "reset"."""
        return {}

    def lag_seconds(self, dest: Destination) -> float | None:
        """How far behind `dest`'s readers are, in seconds, where the kind can tell."""
        return None

    # -- dead letters and message jobs -------------------------------------------

    def death_info(self, message: Message) -> dict[str, Any]:
        """Where a dead letter came from, in the terms filters and groups use:
        reason, queue, exchange, routing_key, count, time (Unix s), deaths."""
        raise NotImplementedError

    def check_job(self, broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
        """The job's fields from request data; jobguard.Invalid saying what is wrong."""
        return self.jobs.check(broker, data)

    def preview(self, broker: Broker, fields: dict[str, Any]) -> dict[str, Any]:
        """How many messages the job would take, and where they would go."""
        return self.jobs.preview(broker, fields)

    def router(self, job: Job) -> Any:
        """The function saying where each message of `job` goes, or None for "keep it"."""
        return self.jobs.router(job)

    def transfer_for(self, job: Job) -> Transfer:
        """The broker session `job` reads its source through."""
        return self.jobs.transfer_for(job)

    # -- imports (dashboard.jobs.imports) -------------------------------------------

    def import_target(self, broker: Broker, data: dict[str, Any]) -> dict[str, Any]:
        """Where an import publishes, from the request's fields (text); jobguard.Invalid
        saying what is wrong. Stored as the job's `target`."""
        return self.jobs.import_target(broker, data)

    def import_route(self, target: dict[str, Any]) -> Callable[[Message], tuple[str, str]]:
        """(exchange, topic or subject; routing key or record key) of each imported message."""
        return self.jobs.import_route(target)

    def import_sender(self, broker: Broker, target: dict[str, Any], job: Job) -> Sender:
        """The confirmed publishing session an import of `job` sends through."""
        return self.jobs.import_sender(broker, target, job)

    def import_label(self, target: dict[str, Any]) -> str:
        """Where an import goes, in words, for its page."""
        return self.jobs.import_label(target)

    # -- exports (dashboard.jobs.export) --------------------------------------------

    def export_reader(self, job: Job) -> Transfer:
        """What an export of `job`'s source and selection reads (`job` is never saved):
        by default the job's own read pass, of which the export only fetches."""
        return self.transfer_for(job)

    def export_effect(self, broker: Broker, key: str) -> str:
        """What reading all of `key` does to it, "" for nothing. An export of a source
        that reading changes needs the operator role, and its audit record says this."""
        return ""

    def removes_originals(self, broker: Broker, fields: dict[str, Any]) -> bool:
        """True if the job would take messages off its source for good."""
        return False

    def is_dead_letter_source(self, broker: Broker, key: str) -> bool:
        """Whether dead-letter discovery lists `key` as a dead-letter source."""
        return False

    # -- pages the URL names share across kinds ----------------------------------

    def publish_page(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        """The page dashboard:publish shows for this kind."""
        raise NotImplementedError

    def api_publish(self, request: HttpRequest, broker: Broker) -> HttpResponse:
        """POST /api/v1/brokers/<name>/publish for this kind."""
        raise NotImplementedError

    def dead_letters(self) -> Any:
        """The handlers of the dead-letters page (dashboard:deadletters*), or None."""
        return None


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, KINDS, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


@cache
def kind_named(name: str) -> Kind:
    """The Kind registered as `name`; UnknownKind naming the known ones if there is none."""
    try:
        dotted = KINDS[name][1]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise UnknownKind(
            f"unknown broker kind {name!r} (known: {known}).{_did_you_mean(name)}"
        ) from None
    module, cls = dotted.rsplit(".", 1)
    kind: Kind = getattr(importlib.import_module(module), cls)()
    return kind


def kind_of(broker: Broker) -> Kind:
    return kind_named(broker.kind)


def all_kinds() -> list[Kind]:
    return [kind_named(name) for name in KINDS]


@cache
def destination_kinds() -> list[str]:
    """Every kind's destination kinds, once each, in the registry's order."""
    return list(dict.fromkeys(d for kind in all_kinds() for d in kind.destination_kinds))


@cache
def unconsumed_kinds() -> frozenset[str]:
    return frozenset(d for kind in all_kinds() for d in kind.unconsumed)


@cache
def status_labels() -> dict[str, str]:
    """Every kind's status labels, for listings that mix kinds."""
    return {k: v for kind in all_kinds() for k, v in kind.status_labels.items()}


def judge_all(broker: Broker, since: float, now: float) -> Any:
    """The broker kind's status rules, or a judge that judges nothing."""
    rules = kind_of(broker).status_rules(broker, since, now)
    return rules if rules is not None else _no_status


def _no_status(dest: Dest, out_rate: float | None, now: float) -> Judged | None:
    return None
