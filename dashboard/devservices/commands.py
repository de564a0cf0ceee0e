"""The two commands: `run` (Sluice with demo brokers) and `test -- CMD` (CMD with every service).

`start_sluice` is also what the end-to-end tests and benchmarks use to run
Sluice's web server, Celery worker and beat against their own settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashboard.devservices.chromium_browser import chromium
from dashboard.devservices.kafka_server import kafka
from dashboard.devservices.nats_server import nats
from dashboard.devservices.postgres_server import postgres
from dashboard.devservices.process import (
    LOG_DIR,
    ROOT,
    STATE_DIR,
    Process,
    ServiceError,
    _die_with_parent,
    _port_open,
    _running,
    _say,
    _tail,
    _wait,
    spawn,
)
from dashboard.devservices.rabbitmq_server import _rabbitmq_installed, rabbitmq
from dashboard.devservices.redis_server import redis


def _timed(name: str, start: Callable[[], Any]) -> Any:
    began = time.monotonic()
    result = start()
    _say(f"{name} ready in {time.monotonic() - began:.1f} s")
    return result


def _test_env() -> dict[str, str]:
    """Start everything the test suite needs; return the variables that name it."""
    env = {"REDIS_URL": _timed("redis", redis)}
    n = _timed("nats", nats)
    env["SLUICE_TEST_NATS_URL"] = n["url"]
    env["SLUICE_TEST_NATS_MONITORING_URL"] = n["monitoring_url"]
    env["SLUICE_TEST_KAFKA_BOOTSTRAP"] = _timed("kafka", kafka)["bootstrap_servers"]
    r = _timed("rabbitmq", lambda: rabbitmq(install=True))
    env["SLUICE_TEST_RABBITMQ_MANAGEMENT_URL"] = r["management_url"]
    env["SLUICE_TEST_RABBITMQ_AMQP_URL"] = r["amqp_url"]
    env["SLUICE_TEST_CHROMIUM"] = _timed("chromium", chromium)
    env["SLUICE_TEST_POSTGRES_URL"] = _timed("postgres", postgres)
    return env


def cmd_test(command: list[str]) -> int:
    """Run command with every service up and named in its environment."""
    if not command:
        raise ServiceError("usage: python -m dashboard.devservices test -- CMD [ARGS...]")
    os.environ.update(_test_env())
    try:
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise ServiceError(f"could not run {command[0]}: {exc}") from exc
    # Ctrl-C from the terminal reaches the child too; let it finish its report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    code = child.wait()
    return code if code >= 0 else 128 - code


def _write_demo_config() -> tuple[Path, list[str]]:
    """Start the demo brokers, write .sluice/demo.toml naming them; return it and their names."""
    brokers: list[dict[str, Any]] = []
    if not _rabbitmq_installed():
        _say("RabbitMQ demo skipped: rabbitmq-server is not installed (apt-get install it)")
    else:
        try:
            r = rabbitmq(install=False)
        except ServiceError as exc:
            _say(f"RabbitMQ demo skipped: {exc}")
        else:
            # The file shows ${VAR} expansion; the password lives in the environment.
            os.environ["SLUICE_DEMO_RABBIT_PASSWORD"] = r["password"]
            parts = urlsplit(r["amqp_url"])
            host = parts.netloc.rsplit("@", 1)[-1]
            amqp = f"{parts.scheme}://{r['username']}:${{SLUICE_DEMO_RABBIT_PASSWORD}}@{host}{parts.path}"
            brokers.append(
                {"name": "rabbit-demo", "kind": "rabbitmq", "management_url": r["management_url"]}
                | {"amqp_url": amqp, "interval": 5}
            )
    brokers.append({"name": "kafka-demo", "kind": "kafka", **kafka()})
    brokers.append({"name": "nats-demo", "kind": "nats", **nats()})
    path = STATE_DIR / "demo.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON's string and integer syntax is valid TOML.
    path.write_text(
        "".join(
            "[[broker]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in b.items())
            for b in brokers
        )
    )
    return path, [b["name"] for b in brokers]


def start_sluice(port: int, env: dict[str, str], log_dir: Path) -> list[Process]:
    """Migrate, ensure the admin, then start the web tier (uvicorn with SLUICE_WEB_WORKERS
    workers, dashboard/webserver.py), a Celery worker and beat with env."""
    python = sys.executable
    for step in (["migrate", "--noinput"], ["ensure_admin"], ["sync_brokers"]):
        if subprocess.run([python, "manage.py", *step], cwd=ROOT, env=env).returncode:
            raise ServiceError(f"`manage.py {' '.join(step)}` failed (output above)")
    venv_bin = Path(python).parent
    celery = str(venv_bin / "celery")
    schedule = str(Path(env.get("SLUICE_STATE_DIR", STATE_DIR)) / "celerybeat-schedule")
    commands = {
        "web": [python, "-m", "dashboard.webserver", "--host", "127.0.0.1", "--port", str(port)],
        "worker": [celery, "-A", "dashboard", "worker", "--loglevel=INFO", "--concurrency=4"],
        "beat": [celery, "-A", "dashboard", "beat", "--loglevel=INFO", "--schedule", schedule],
    }
    return [spawn(name, argv, log_dir / f"{name}.log", env) for name, argv in commands.items()]


def cmd_run() -> int:
    """Start Redis, the demo brokers and traffic, then Sluice's web, worker and beat."""
    port = int(os.environ.get("PORT", "8000"))
    if _port_open(port):
        raise ServiceError(f"port {port} is already in use; set PORT to another one")
    os.environ["REDIS_URL"] = redis()
    demo: list[str] = []
    if not os.environ.get("SLUICE_CONFIG"):
        config, demo = _write_demo_config()
        os.environ["SLUICE_CONFIG"] = str(config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if demo:
        spawn("demo", [sys.executable, "-m", "dashboard.demo"], LOG_DIR / "demo.log", env)
    web = start_sluice(port, env, LOG_DIR)[0]
    _wait(f"the web server on port {port}", lambda: _port_open(port), 60, web)

    admin = os.environ.get("SLUICE_ADMIN_USER", "admin")
    logs = os.path.relpath(LOG_DIR)
    print(
        f"\nSluice is running at http://127.0.0.1:{port}/\n"
        f"  admin user   {admin} (password: $SLUICE_ADMIN_PASSWORD, or as printed above "
        "when it was created)\n"
        f"  brokers      {', '.join(demo) + ' (demo traffic)' if demo else os.environ['SLUICE_CONFIG']}\n"
        f"  logs         {logs}/ ({', '.join(p.log.name for p in _running)})\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    while True:
        for p in _running:
            if p.proc.poll() is not None:
                _say(
                    f"{p.name} exited unexpectedly (code {p.proc.returncode}); last lines of {p.log}:"
                )
                print(_tail(p.log, 20), file=sys.stderr)
                return 1
        time.sleep(0.5)
