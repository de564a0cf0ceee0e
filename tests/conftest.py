"""Shared fixtures: the real services the tests talk to.

`make test` runs pytest under `python -m dashboard.devservices test`, which
starts every service first and names them in the environment (`REDIS_URL`,
`SLUICE_TEST_*`); the fixtures below then just read those. Run bare, pytest
starts what a test asks for itself. Django settings read `REDIS_URL` before
any conftest is imported, so a bare run leaves Django on its default Redis.

Fixture modules named `tests/fixtures_*.py` or `tests/*_fixtures.py` are
loaded as plugins, so each owner can keep theirs in their own file.
"""

from __future__ import annotations

import os
from pathlib import Path
from uuid import uuid4

import dj_database_url
import pytest
from django.conf import settings
from django.db import connections

from dashboard import devservices

# Cached page fragments and triage memory are this run's own: another run on the same Redis
# has other rows.
settings.SLUICE_FRAGMENT_SCOPE = f"test-{uuid4().hex[:12]}"

# A second database for tests/test_postgres_indexes.py (its tests ask for "pg");
# every other test stays on SQLite. The name is this run's own: runs share the server.
if os.environ.get("SLUICE_TEST_POSTGRES_URL"):
    connections.settings["pg"] = dj_database_url.parse(os.environ["SLUICE_TEST_POSTGRES_URL"]) | {
        "TEST": {"NAME": f"test_sluice_{uuid4().hex[:12]}"}
    }
    # Django has read DATABASES already: fill in the new alias's defaults as it did the others'.
    connections.configure_settings(connections.settings)

pytest_plugins = sorted(
    f"tests.{path.stem}"
    for pattern in ("fixtures_*.py", "*_fixtures.py")
    for path in Path(__file__).parent.glob(pattern)
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return devservices.redis()


@pytest.fixture(scope="session")
def rabbitmq() -> dict[str, str]:
    """management_url, amqp_url, username, password of a RabbitMQ with management and shovel."""
    return devservices.rabbitmq(install=True)


@pytest.fixture(scope="session")
def nats() -> dict[str, str]:
    """url and monitoring_url of a NATS server with JetStream."""
    return devservices.nats()


@pytest.fixture(scope="session")
def kafka() -> dict[str, str]:
    """bootstrap_servers of a Kafka-protocol broker."""
    return devservices.kafka()


@pytest.fixture
def unique_name() -> str:
    """A short suffix no other test uses, for names on the shared brokers."""
    return f"t{uuid4().hex[:8]}"
