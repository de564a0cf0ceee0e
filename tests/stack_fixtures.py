"""The whole of Sluice as `make run` starts it: web tier, Celery worker and beat, on real brokers.

The stack gets its own SQLite file, its own Redis database and a broker file
naming the test RabbitMQ, Kafka and NATS plus one broker on a closed port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from dashboard import devservices
from tests.app_fixtures import closed_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 2  # seconds between collections in the stack


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    admin_password: str
    brokers: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, Any] = field(default_factory=dict)
    logs: Path | None = None

    def kill_worker(self) -> None:
        """kill -9 the Celery worker and every process of its group, mid-whatever."""
        worker = self.processes.pop("worker")
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()

    def start_worker(self) -> None:
        assert self.logs is not None
        celery = str(Path(sys.executable).parent / "celery")
        self.processes["worker"] = devservices.spawn(
            "worker",
            [celery, "-A", "dashboard", "worker", "--loglevel=INFO", "--concurrency=4"],
            self.logs / "worker-restarted.log",
            self.env,
        )

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def token(self, user: str, role: str) -> str:
        return (
            self.manage("create_api_token", "--user", user, "--role", role).strip().splitlines()[-1]
        )

    def api_client(self, user: str, role: str) -> Callable[..., Any]:
        """`api(method, path, body=None)`: one call to /api/v1 with a new token for
        `user`; it asserts success and returns the JSON."""
        headers = {
            "Authorization": f"Bearer {self.token(user, role)}",
            "Content-Type": "application/json",
        }

        def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            r = requests.request(
                method,
                f"{self.url}/api/v1{path}",
                headers=headers,
                data=json.dumps(body) if body else None,
                timeout=30,
            )
            assert r.status_code < 300, r.text[:300]
            return r.json()

        def collected(broker: str, key: str, timeout: float = 30) -> None:
            """Wait until the stack has collected destination `key` of `broker`."""
            url = f"{self.url}/api/v1/brokers/{broker}/destinations/{quote(key, safe='')}"
            wait_for(lambda: requests.get(url, headers=headers, timeout=10).ok, timeout=timeout)

        api.collected = collected  # type: ignore[attr-defined]
        return api

    def kill_and_resume(self, api: Callable[..., Any], job_id: str) -> tuple[Any, Any]:
        """Kill the worker mid-job, wait for the job to show as interrupted, start a
        worker, resume it and wait for its end: (the job at the kill, the job at the end)."""
        self.kill_worker()
        at_kill = api("GET", f"/jobs/{job_id}")
        assert at_kill["state"] != "done", "the job finished before the kill; nothing was tested"
        # The dead worker stops reporting; the job shows as interrupted, and can be resumed.
        wait_for(lambda: api("GET", f"/jobs/{job_id}")["state"] == "interrupted", timeout=30)
        self.start_worker()
        api("POST", f"/jobs/{job_id}/resume")
        final = wait_for(
            lambda: (j := api("GET", f"/jobs/{job_id}"))["state"] in ("done", "failed") and j,
            timeout=300,
            every=0.5,
        )
        assert final["state"] == "done", final
        return at_kill, final

    def login(self, user: str = "admin", password: str | None = None) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the login page"
        response = session.post(
            f"{self.url}/login/",
            data={
                "username": user,
                "password": password or self.admin_password,
                "csrfmiddlewaretoken": token.group(1),
            },
            headers={"Referer": f"{self.url}/login/"},
            timeout=10,
        )
        assert response.url.rstrip("/") == self.url, f"login failed: {response.status_code}"
        return session


def _redis_db(url: str, db: int) -> str:
    return re.sub(r"(/\d+)?$", f"/{db}", url.rstrip("/"), count=1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, rabbitmq, kafka, nats, redis_url) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), rabbitmq, kafka, nats, redis_url) as s:
        yield s


@contextmanager
def running_stack(
    state: Path,
    rabbitmq: dict[str, str],
    kafka: dict[str, str],
    nats: dict[str, str],
    redis_url: str,
    redis_db: int = 3,
    **settings: str,
) -> Iterator[Stack]:
    """A stack in state (its own SQLite) on Redis database redis_db, with settings added
    to its environment; a second stack at once needs a database of its own."""
    config = state / "brokers.toml"
    config.write_text(
        f"""
[[broker]]
name = "rabbit"
kind = "rabbitmq"
management_url = "{rabbitmq["management_url"]}"
amqp_url = "{rabbitmq["amqp_url"].replace(rabbitmq["password"], "${SLUICE_STACK_RABBIT_PASSWORD}", 1)}"
interval = {INTERVAL}

[[broker]]
name = "kafka"
kind = "kafka"
bootstrap_servers = "{kafka["bootstrap_servers"]}"
interval = {INTERVAL}

[[broker]]
name = "nats"
kind = "nats"
url = "{nats["url"]}"
monitoring_url = "{nats["monitoring_url"]}"
interval = {INTERVAL}

[[broker]]
name = "gone"
kind = "rabbitmq"
management_url = "http://127.0.0.1:{closed_port()}"
interval = {INTERVAL}
"""
    )
    port = devservices.free_port()
    password = "stack-admin-pw-7781"
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(state),
        "DATABASE_URL": f"sqlite:///{state / 'sluice.sqlite3'}",
        "REDIS_URL": _redis_db(redis_url, redis_db),
        "SLUICE_CONFIG": str(config),
        "SLUICE_STACK_RABBIT_PASSWORD": rabbitmq["password"],
        "SLUICE_ADMIN_PASSWORD": password,
        "SLUICE_TOPOLOGY_INTERVAL": "10",
        "SLUICE_JOB_STALL_SECONDS": "4",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started = devservices.start_sluice(port, env, state / "logs")
    stack = Stack(
        url=f"http://127.0.0.1:{port}",
        env=env,
        admin_password=password,
        brokers={"rabbitmq": rabbitmq, "kafka": kafka, "nats": nats},
        processes={p.name: p for p in started},
        logs=state / "logs",
    )
    try:
        wait_for(lambda: _healthy(stack.url), timeout=60)
        yield stack
    finally:
        for process in stack.processes.values():
            devservices.stop(process)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
