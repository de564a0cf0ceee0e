"""No request makes Sluice answer 5xx: every route, every role, a corpus of hostile input.

The brokers are real and reachable (RabbitMQ, Kafka, NATS each hold a destination with
messages), so input reaches the code that talks to them. Each route is first asked with
nothing while the parameters its view reads are recorded (`tests.hostile.recording`);
then each of those is sent every hostile value, one at a time, by GET and POST (form and
JSON body), and each path segment is replaced by odd names. Every answer must be below
500, and a 4xx must say something. The websocket routes get the same treatment: a
connection is accepted or closed, never an exception.

Admins reach every branch, so they get the whole corpus; operators get the whole
corpus on the routes that change things, viewers on those that read, and anonymous and
role-less users one hostile request per route.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pika
import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from dashboard.models import Broker, Destination, Job, OffsetReset, Search
from tests import hostile
from tests.nats_fixtures import JetStream

pytestmark = pytest.mark.django_db

JOB_ID = "0c4f6a8e-1d2b-4c3a-9e8f-7a6b5c4d3e2f"
SEARCH_ID = "5b1d2c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
RESET_ID = "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928"
NAME = "fz5x"  # in every name this module makes on the shared brokers
QUEUE, DLQ = f"{NAME}.orders", f"{NAME}.orders.dlq"
TOPIC, GROUP, STREAM = f"{NAME}-events", f"{NAME}-billing", f"{NAME.upper()}_JOBS"

# Routes that are not Sluice's own pages: Django's admin has its own tests.
SKIP = re.compile(r"^admin/")
# Where a 503 with its reasons is the answer: a readiness probe's "not ready".
NOT_READY = {"/readyz"}
# Routes that belong to one kind of broker, by URL name; the rest are asked of all three.
KAFKA_NAMES = re.compile(r"(^|-)(kafka|search|reset)(-|$)")
NATS_NAMES = re.compile(r"(^|-)nats(-|$)")


@dataclass
class World:
    brokers: dict[str, Broker]  # by kind
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> path parameter


def _rabbit(rabbitmq: dict[str, str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = connection.channel()
    channel.queue_declare(DLQ, durable=True)
    channel.queue_declare(
        QUEUE,
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DLQ},
    )
    for i in range(3):
        channel.basic_publish("", QUEUE, f'{{"n": {i}}}'.encode())
    for i in range(2):
        death = {"count": 1, "reason": "rejected", "queue": QUEUE, "exchange": ""}
        props = pika.BasicProperties(headers={"x-death": [death]})
        channel.basic_publish("", DLQ, f"dead {i}".encode(), props)
    connection.close()


def _unrabbit(rabbitmq: dict[str, str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = connection.channel()
    for queue in (QUEUE, DLQ):
        channel.queue_delete(queue)
    connection.close()


def _kafka(kafka: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka["bootstrap_servers"])
    existing = set(admin.list_topics())
    if TOPIC not in existing:
        admin.create_topics([NewTopic(TOPIC, 2, 1), NewTopic(f"{TOPIC}.DLT", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka["bootstrap_servers"], acks="all")
    for i in range(4):
        producer.send(TOPIC, f'{{"n": {i}}}'.encode(), key=b"k", headers=[("h", b"v")])
        producer.send(f"{TOPIC}.DLT", b"dead", headers=[("x-original-topic", TOPIC.encode())])
    producer.flush()
    producer.close()


def _nats(nats: dict[str, str]) -> JetStream:
    js = JetStream(nats["url"])
    js.add_stream(STREAM, [f"{NAME}.jobs.>"])
    js.add_consumer(STREAM, "worker", ack_policy="explicit", max_deliver=2)
    js.publish(f"{NAME}.jobs.a", b'{"n": 1}', count=3)
    return js


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, rabbitmq, kafka, nats):
    from dashboard.collection import collector

    _rabbit(rabbitmq)
    _kafka(kafka)
    js = _nats(nats)
    with django_db_blocker.unblock():
        brokers = {
            "rabbitmq": Broker.objects.create(
                name=f"{NAME}-rabbit",
                kind="rabbitmq",
                options={
                    "management_url": rabbitmq["management_url"],
                    "amqp_url": rabbitmq["amqp_url"],
                },
            ),
            "kafka": Broker.objects.create(
                name=f"{NAME}-kafka",
                kind="kafka",
                options={"bootstrap_servers": kafka["bootstrap_servers"]},
            ),
            "nats": Broker.objects.create(
                name=f"{NAME}-nats",
                kind="nats",
                options={"monitoring_url": nats["monitoring_url"], "url": nats["url"]},
            ),
        }
        for broker in brokers.values():
            assert collector.collect(broker), broker.error
        _rows(brokers)
        world = World(brokers, _path_params(brokers))
        try:
            yield world
        finally:
            mine = [b.pk for b in brokers.values()]
            for model in (Job, Search, OffsetReset):
                model.objects.filter(broker__in=mine).delete()
            Broker.objects.filter(pk__in=mine).delete()
            js.close()
            _unrabbit(rabbitmq)


def _rows(brokers: dict[str, Broker]) -> None:
    Job.objects.create(
        public_id=JOB_ID,
        broker=brokers["rabbitmq"],
        action="replay",
        source=f"//{DLQ}",
        selection={"all": True},
        created_by="bob",
        state=Job.PREVIEW,
    )
    Search.objects.create(
        public_id=SEARCH_ID, broker=brokers["kafka"], topic=TOPIC, created_by="bob"
    )
    OffsetReset.objects.create(
        public_id=RESET_ID,
        broker=brokers["kafka"],
        group=GROUP,
        spec={"to": "earliest"},
        changes=[],
        created_by="bob",
    )


def _path_params(brokers: dict[str, Broker]) -> dict[str, dict[str, str]]:
    def key(kind: str, like: str) -> str:
        row = Destination.objects.filter(broker=brokers[kind], key__contains=like).first()
        assert row is not None, (kind, like, list(Destination.objects.values_list("key")))
        return quote(row.key, safe="")

    common = {"job_id": JOB_ID, "search_id": SEARCH_ID, "reset_id": RESET_ID, "seq": "1"}
    return {
        "rabbitmq": {**common, "name": brokers["rabbitmq"].name, "key": key("rabbitmq", DLQ)},
        "kafka": {
            **common,
            "name": brokers["kafka"].name,
            "key": key("kafka", TOPIC),
            "topic": TOPIC,
            "group": GROUP,
        },
        "nats": {
            **common,
            "name": brokers["nats"].name,
            "key": key("nats", STREAM),
            "stream": STREAM,
        },
    }


# -- the routes -------------------------------------------------------------------


def _walk(patterns: list[Any], prefix: str = "", name_prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{p.namespace}:" if p.namespace else name_prefix
            found += _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            found.append((prefix + str(p.pattern), name_prefix + (p.name or "")))
    return found


ROUTES = sorted({r for r in _walk(get_resolver().url_patterns) if not SKIP.match(r[0])})
PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _kinds(name: str) -> list[str]:
    bare = name.split(":")[-1]
    if KAFKA_NAMES.search(bare):
        return ["kafka"]
    if NATS_NAMES.search(bare):
        return ["nats"]
    return ["rabbitmq", "kafka", "nats"]


VERBS = {"start", "cancel", "resume", "apply", "undo"}


def _urls(world: World, route: str, kind: str) -> list[tuple[str, str]]:
    """(url, what was odd) for the route: first the real one, then odd path segments."""
    values = dict(world.params[kind])
    names = [m.group(2) for m in PARAM.finditer(route)]
    verbs = sorted(VERBS) if "verb" in names else [""]

    def fill(overrides: dict[str, str], verb: str) -> str:
        def one(m: re.Match[str]) -> str:
            pname = m.group(2)
            return overrides.get(pname, verb if pname == "verb" else values.get(pname, "x"))

        return "/" + PARAM.sub(one, route)

    urls = [(fill({}, verb), f"verb={verb}" if verb else "") for verb in verbs]
    for pname in names:
        for odd in hostile.PATH_VALUES:
            urls.append((fill({pname: odd}, verbs[0]), f"{pname}={odd[:20]}"))
    return urls


# -- asking -----------------------------------------------------------------------


@dataclass
class Asker:
    client: Client
    failures: list[str]

    def ask(self, method: str, url: str, what: str, data: Any = None, body: bytes | None = None):
        try:
            if method == "GET":
                response = self.client.get(url, data or {})
            elif body is not None:
                response = self.client.post(url, body, content_type="application/json")
            else:
                response = self.client.post(url, data or {})
        except Exception as exc:  # noqa: BLE001 -- an exception here is what the test looks for
            self.failures.append(f"{method} {url} [{what}]: raised {type(exc).__name__}: {exc}")
            return None
        status = response.status_code
        text = b"" if getattr(response, "streaming", False) else response.content
        if status == 503 and url.split("?")[0] in NOT_READY and b'"problems"' in text:
            pass  # /readyz saying why it is not ready is its answer, not a failure
        elif status >= 500:
            self.failures.append(f"{method} {url} [{what}]: {status} {text[:200]!r}")
        elif 400 <= status < 500 and not text.strip():
            self.failures.append(f"{method} {url} [{what}]: {status} with no message")
        return response


def _discover(asker: Asker, method: str, url: str) -> tuple[set[str], set[str]]:
    """The query/form names and JSON keys the view reads when asked with nothing
    (none for a method the route refuses: a 405 reads no parameter)."""
    with hostile.recording() as rec:
        response = asker.ask(method, url, "nothing")
        if response is not None and response.status_code == 405:
            return set(), set()
        if method == "POST":
            rec.body = b"{}"
            asker.ask(method, url, "empty JSON", body=b"{}")
    # CSRF and the login redirect read these; they are not the view's.
    return rec.names - {"csrfmiddlewaretoken", "next"}, rec.json_keys


def _fuzz(asker: Asker, method: str, url: str, values: list[str], json_values: list[Any]):
    names, keys = _discover(asker, method, url)
    for name in sorted(names):
        for value in values:
            asker.ask(method, url, f"{name}={value[:20]!r}", data={name: value})
    if method == "POST":
        for body in hostile.JSON_BODIES if json_values else []:
            asker.ask(method, url, f"body {body[:20]!r}", body=body)
        for key in sorted(keys):
            for value in json_values:
                payload = json.dumps({key: value}).encode()
                asker.ask(method, url, f"json {key}={str(value)[:20]}", body=payload)


# For the roles whose branches differ little from the admin's: one of each sort.
SOME = [hostile.TEXT_VALUES[i] for i in (0, 3, 11, 14, 16, 19, 22, 28)]
ROLE_PLAN = {
    # persona: (GET values, POST values, JSON values)
    "alice": (hostile.TEXT_VALUES, hostile.TEXT_VALUES, hostile.JSON_VALUES),
    "bob": (SOME, SOME, hostile.JSON_VALUES[::3]),
    "carol": (SOME, SOME[:2], hostile.JSON_VALUES[:2]),
    "dave": (["-1"], ["-1"], [None]),
    None: (["-1"], ["-1"], [None]),
}


@pytest.mark.parametrize("route,name", ROUTES, ids=[r[0] or "/" for r in ROUTES])
def test_no_route_answers_5xx_to_hostile_input(world, personas, route, name):
    failures: list[str] = []
    for persona, (get_values, post_values, json_values) in ROLE_PLAN.items():
        client = Client()
        if persona:
            client.force_login(personas[persona])
        asker = Asker(client, failures)
        for kind in _kinds(name):
            urls = _urls(world, route, kind)
            real = [u for u, odd in urls if "=" not in odd or odd.startswith("verb=")]
            for url in real:
                _fuzz(asker, "GET", url, get_values, [])
                _fuzz(asker, "POST", url, post_values, json_values)
            if persona == "alice":
                for url, odd in urls:
                    if url not in real:
                        asker.ask("GET", url, odd)
                        asker.ask("POST", url, odd)
    assert not failures, f"{len(failures)} answers ≥ 500 or without a message:\n" + "\n".join(
        failures[:40]
    )


# -- websockets -----------------------------------------------------------------------

WS_PATHS = [
    "/ws/live/",
    "/ws/live/?views=" + quote(hostile.TEXT_VALUES[22][:2000]),
    f"/ws/tail/{NAME}-ws-kafka/{TOPIC}",
    f"/ws/tail/{NAME}-ws-kafka/{TOPIC}?partition=-1&from=" + quote(str(10**30)),
    f"/ws/tail/{NAME}-ws-kafka/no%20such%20topic",
    f"/ws/tail/{NAME}-ws-nats/{TOPIC}",
    "/ws/tail/no-such-broker/x",
    f"/ws/nats/tail/{NAME}-ws-nats?subject=" + quote(f"{NAME}.jobs.>"),
    f"/ws/nats/tail/{NAME}-ws-nats?subject=",
    f"/ws/nats/tail/{NAME}-ws-nats?subject=" + quote("a b\r\nPUB x"),
    f"/ws/nats/tail/{NAME}-ws-kafka?subject=x",
    "/ws/no-such-path/",
    "/ws/",
]


@pytest.fixture
def ws_brokers(kafka, nats):
    # Websocket consumers read the database from another thread: these rows are
    # committed (transaction=True), so the module's world is not used here.
    Broker.objects.create(
        name=f"{NAME}-ws-kafka",
        kind="kafka",
        options={"bootstrap_servers": kafka["bootstrap_servers"]},
    )
    Broker.objects.create(
        name=f"{NAME}-ws-nats",
        kind="nats",
        options={"monitoring_url": nats["monitoring_url"], "url": nats["url"]},
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", WS_PATHS)
@pytest.mark.parametrize("persona", ["alice", "carol", None])
def test_no_websocket_route_raises(ws_brokers, personas, persona, path):
    from django.contrib.auth.models import AnonymousUser

    from dashboard.asgi import application

    async def run() -> None:
        communicator = WebsocketCommunicator(
            application, path, headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
        )
        communicator.scope["user"] = personas[persona] if persona else AnonymousUser()
        connected, _ = await communicator.connect(timeout=10)
        if connected:
            await communicator.send_json_to({"views": [{"name": "overview"}], "x": "²" * 10})
            await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    async_to_sync(run)()


def test_the_corpus_covers_what_the_probe_sent():
    sent = set(hostile.TEXT_VALUES)
    for probe in ("-1", str(10**23), "²", "99999999999999999999", "a{4294967296}", "(a+)+$"):
        assert probe in sent
    assert any(v.startswith("[" * 100) for v in sent)
