"""The machine's RabbitMQ with the management, shovel and Prometheus plugins, started if needed.

RabbitMQ is a system service, not a private process: `$SLUICE_TEST_RABBITMQ_*`
name one to use; otherwise the local node on its fixed ports is used, installed
with apt-get when asked, started with `rabbitmq-server -detached` and left
running afterwards so that the next run finds it ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dashboard.devservices.apt import _apt_install
from dashboard.devservices.process import (
    LOG_DIR,
    ServiceError,
    _cache,
    _http_ok,
    _port_open,
    _say,
    _tail,
    _wait,
)

RABBITMQ_MANAGEMENT_URL = "http://127.0.0.1:15672"
RABBITMQ_AMQP_PORT = 5672
RABBITMQ_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_PROMETHEUS_URL = "http://127.0.0.1:15692"
RABBITMQ_PLUGINS = (
    "rabbitmq_management",
    "rabbitmq_shovel",
    "rabbitmq_shovel_management",
    "rabbitmq_prometheus",  # the cheap counts (brokers.rabbitmq.prometheus)
)


def _rabbitmq_installed() -> bool:
    return bool(shutil.which("rabbitmq-server") or Path("/usr/sbin/rabbitmq-server").exists())


def _rabbit_cli(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path = shutil.which(tool) or f"/usr/sbin/{tool}"
    log = LOG_DIR / "rabbitmq.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [path, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"`{tool} {' '.join(args)}` timed out after {timeout:.0f} s") from exc
    with open(log, "a") as out:
        out.write(f"$ {tool} {' '.join(args)} -> {result.returncode}\n")
        out.write(result.stdout + result.stderr)
    return result


def rabbitmq(install: bool = False) -> dict[str, str]:
    """Return URLs and credentials of the machine's RabbitMQ, started if needed."""
    management = os.environ.get("SLUICE_TEST_RABBITMQ_MANAGEMENT_URL")
    if management:
        amqp = os.environ.get("SLUICE_TEST_RABBITMQ_AMQP_URL", RABBITMQ_AMQP_URL)
        parts = urlsplit(amqp)
        return {
            "management_url": management.rstrip("/"),
            "amqp_url": amqp,
            "username": unquote(parts.username or "guest"),
            "password": unquote(parts.password or "guest"),
        }
    if "rabbitmq" in _cache:
        return dict(_cache["rabbitmq"])
    auth = ("guest", "guest")
    log = LOG_DIR / "rabbitmq.log"
    # Fast path: a node with the management, shovel and Prometheus plugins answering already.
    ready = (
        _port_open(RABBITMQ_AMQP_PORT)
        and _http_ok(f"{RABBITMQ_MANAGEMENT_URL}/api/shovels", auth)
        and _http_ok(f"{RABBITMQ_PROMETHEUS_URL}/metrics/detailed?family=queue_consumer_count")
    )
    if not ready:
        if not _rabbitmq_installed():
            if not install:
                raise ServiceError(
                    "RabbitMQ is not installed (apt-get install rabbitmq-server, "
                    "or run `make test`, which installs it)"
                )
            _apt_install("rabbitmq-server")
        if os.geteuid() != 0:
            raise ServiceError(
                "RabbitMQ with the management, shovel and Prometheus plugins is not answering on "
                f"{RABBITMQ_MANAGEMENT_URL} and {RABBITMQ_PROMETHEUS_URL}, and starting or "
                "configuring it needs root"
            )
        # A fresh install may have started the node already (invoke-rc.d).
        if (
            not _port_open(RABBITMQ_AMQP_PORT)
            and _rabbit_cli("rabbitmqctl", "-q", "status").returncode != 0
        ):
            _say("starting RabbitMQ (rabbitmq-server -detached); it stays running afterwards")
            result = _rabbit_cli("rabbitmq-server", "-detached")
            if result.returncode != 0 and "already running" not in result.stdout + result.stderr:
                raise ServiceError(f"rabbitmq-server -detached failed; log: {log}\n{_tail(log)}")
        _wait(
            f"RabbitMQ (rabbitmqctl await_startup; see /var/log/rabbitmq/ and {log})",
            lambda: _rabbit_cli("rabbitmqctl", "await_startup", "--timeout", "20").returncode == 0,
            120,
        )
        listed = _rabbit_cli("rabbitmq-plugins", "list", "-E", "-m").stdout.split()
        missing = [name for name in RABBITMQ_PLUGINS if name not in listed]
        if missing:
            _say(f"enabling RabbitMQ plugins: {' '.join(missing)}")
            if _rabbit_cli("rabbitmq-plugins", "enable", *missing, timeout=120).returncode:
                raise ServiceError(f"rabbitmq-plugins enable failed; log: {log}\n{_tail(log)}")
        _wait(
            f"RabbitMQ management API ({RABBITMQ_MANAGEMENT_URL}/api/overview as guest)",
            lambda: _http_ok(f"{RABBITMQ_MANAGEMENT_URL}/api/overview", auth),
            60,
        )
        _wait(
            f"RabbitMQ Prometheus plugin ({RABBITMQ_PROMETHEUS_URL}/metrics/detailed)",
            lambda: _http_ok(
                f"{RABBITMQ_PROMETHEUS_URL}/metrics/detailed?family=queue_consumer_count"
            ),
            60,
        )
    _cache["rabbitmq"] = {
        "management_url": RABBITMQ_MANAGEMENT_URL,
        "amqp_url": RABBITMQ_AMQP_URL,
        "username": "guest",
        "password": "guest",
    }
    return dict(_cache["rabbitmq"])
