"""Fixtures for the Django side: personas, brokers pointed at the real services, clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

# Django is imported inside the fixtures: this module is loaded before Django is set up.

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    # PBKDF2 is slow on purpose; tests sign in hundreds of times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def mask_rules(tmp_path: Any, settings: Any) -> Callable[[str], Any]:
    """`write(toml)`: a broker file holding `toml` ([[mask]] tables), the one Sluice reads."""

    def write(text: str) -> Any:
        path = tmp_path / "brokers.toml"
        path.write_text(text)
        settings.SLUICE_CONFIG = str(path)
        return path

    return write


@pytest.fixture
def personas(db: Any) -> dict[str, Any]:
    """alice is an admin, bob an operator, carol a viewer, dave has no role."""
    from dashboard.auth import ADMIN, OPERATOR, VIEWER, ensure_user

    people = {
        "alice": ensure_user("alice", ADMIN, PASSWORD)[0],
        "bob": ensure_user("bob", OPERATOR, PASSWORD)[0],
        "carol": ensure_user("carol", VIEWER, PASSWORD)[0],
    }
    from django.contrib.auth import get_user_model

    dave = get_user_model().objects.create_user("dave", password=PASSWORD)
    people["dave"] = dave
    return people


@pytest.fixture
def client_for(personas: dict[str, Any]) -> Callable[[str | None], Any]:
    """A test client signed in as a persona (None: anonymous), with CSRF checks on."""
    from django.test import Client

    def make(name: str | None) -> Client:
        client = Client(enforce_csrf_checks=True)
        if name:
            client.force_login(personas[name])
        return client

    return make


@pytest.fixture
def token_for(personas: dict[str, Any]) -> Callable[[str], str]:
    from dashboard.models import ApiToken

    def make(name: str) -> str:
        return ApiToken.issue(personas[name])[1]

    return make


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rabbit_broker(db: Any, rabbitmq: dict[str, str]) -> Any:
    from dashboard.models import Broker

    return Broker.objects.create(
        name="rabbit",
        kind="rabbitmq",
        options={"management_url": rabbitmq["management_url"], "amqp_url": rabbitmq["amqp_url"]},
    )


@pytest.fixture
def amqp(rabbitmq: dict[str, str]) -> Iterator[Any]:
    """A pika channel on the real RabbitMQ; queues it declares are deleted afterwards."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq["amqp_url"]))
    channel = connection.channel()
    declared: list[str] = []
    original = channel.queue_declare

    def declare(queue: str, **kwargs: Any) -> Any:
        declared.append(queue)
        return original(queue, **kwargs)

    channel.queue_declare = declare
    yield channel
    for queue in declared:
        if connection.is_open:
            cleanup = connection.channel()
            cleanup.queue_delete(queue)
    if connection.is_open:
        connection.close()


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")


# -- collections stamped at chosen times (the status windows judge over them) ---------

STEP = 15  # seconds between the stamped collections


def collect_at(broker: Any, now: float) -> None:
    """One collection of `broker`, as if at Unix time `now`; it must succeed."""
    from dashboard.collection import collector

    broker.refresh_from_db()
    assert collector.collect(broker, now=now), broker.error


def collect_series(broker: Any, start: float, count: int = 3) -> float:
    """`count` collections STEP apart from `start`; returns the last one's time."""
    for i in range(count):
        collect_at(broker, start + i * STEP)
    return start + (count - 1) * STEP


def collect_and_triage(broker: Any, now: float) -> Any:
    """One collection stamped `now`, then triage at the same time; returns its Outcome."""
    from dashboard.triage import evaluate as triage

    collect_at(broker, now)
    broker.refresh_from_db()
    return triage.evaluate(broker, now=now)


@pytest.fixture
def fresh_triage(db: Any) -> Iterator[None]:
    """Each Broker row starts with no triage memory (the cache outlives test databases,
    and a row's id comes back in the next test) and gets its own adapter."""
    from django.core.cache import cache
    from django.db.models.signals import post_save

    from dashboard.collection import collector
    from dashboard.models import Broker
    from dashboard.triage import evaluate as triage

    def forget(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        if created:
            cache.delete(triage.memo_key(instance))

    for broker in Broker.objects.all():  # made by fixtures set up before this one
        cache.delete(triage.memo_key(broker))
    post_save.connect(forget, sender=Broker, dispatch_uid="fresh-triage")
    yield
    post_save.disconnect(sender=Broker, dispatch_uid="fresh-triage")
    for broker in Broker.objects.all():
        collector.forget_adapter(broker)
        cache.delete(triage.memo_key(broker))
