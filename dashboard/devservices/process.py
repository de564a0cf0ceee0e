"""Processes started here: spawned with their logs, waited for, stopped.

The part of devservices every service shares: where state and logs go
(`.sluice/`, or `$SLUICE_STATE_DIR`), free ports, starting a server on fresh
ports with a scratch data directory, waiting until it answers, and stopping
everything started here at exit (children also get SIGTERM if this process
dies, even by SIGKILL). Plain Python: no Django.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import functools
import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
STATE_DIR = Path(os.environ.get("SLUICE_STATE_DIR", ROOT / ".sluice"))
LOG_DIR = STATE_DIR / "logs"


class ServiceError(RuntimeError):
    """A service could not be found, installed or started; the message says which and where."""


@dataclass
class Process:
    """A process started here: its output goes to log; cleanup is removed once it stops."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    cleanup: list[Path] = field(default_factory=list)


_running: list[Process] = []
_cache: dict[str, Any] = {}
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _say(message: str) -> None:
    print(f"devservices: {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when we die, even by SIGKILL.
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text)


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    """Start argv in its own process group, output to log, stopped by `stop_all()`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # PR_SET_PDEATHSIG follows the thread that forked, so only the main thread uses it.
    main = threading.current_thread() is threading.main_thread()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if main else None,
            )
        except OSError as exc:
            raise ServiceError(f"could not start {name} ({argv[0]}): {exc}") from exc
    started = Process(name, proc, log)
    _running.append(started)
    return started


def _stop(p: Process) -> None:
    if p.proc.poll() is None:
        p.proc.terminate()
        try:
            p.proc.wait(10)
        except subprocess.TimeoutExpired:
            _say(f"{p.name} did not stop within 10 s; killing it")
    # Also reaps what the leader left behind in its process group.
    try:
        os.killpg(p.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.proc.wait()
    for path in p.cleanup:
        shutil.rmtree(path, ignore_errors=True)


def stop(p: Process) -> None:
    """Stop one process started here: SIGTERM, 10 s, then SIGKILL its process group."""
    if p in _running:
        _running.remove(p)
    _stop(p)


def stop_all() -> None:
    """Stop every process started here, newest first. RabbitMQ is left running."""
    while _running:
        _stop(_running.pop())
    _cache.clear()


atexit.register(stop_all)


def _wait(what: str, ready: Callable[[], bool], timeout: float, p: Process | None = None) -> None:
    """Poll ready() until it is true; fail if p exits or timeout passes."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if p is not None and p.proc.poll() is not None:
            raise ServiceError(
                f"{p.name} exited with code {p.proc.returncode} while starting; "
                f"log: {p.log}\n{_tail(p.log)}"
            )
        try:
            if ready():
                return
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = f" (last error: {exc})"
        if time.monotonic() > deadline:
            where = f"; log: {p.log}\n{_tail(p.log)}" if p else ""
            raise ServiceError(f"{what} was not ready within {timeout:.0f} s{last}{where}")
        time.sleep(0.2)


def _start(
    name: str,
    argv_for: Callable[[list[int], Path], list[str]],
    nports: int,
    ready: Callable[[list[int]], bool],
    timeout: float = 60,
) -> list[int]:
    """Start a server on fresh free ports with a scratch data dir, retrying port races."""
    for attempt in range(3):
        ports: list[int] = []
        while len(ports) < nports:
            port = free_port()
            if port not in ports:
                ports.append(port)
        data = STATE_DIR / f"{name}-{ports[0]}"
        data.mkdir(parents=True, exist_ok=True)
        p = spawn(name, argv_for(ports, data), LOG_DIR / f"{name}-{ports[0]}.log")
        p.cleanup.append(data)
        try:
            _wait(f"{name} on port {ports[0]}", functools.partial(ready, ports), timeout, p)
        except ServiceError:
            in_use = "in use" in p.log.read_text(errors="replace").lower()
            stop(p)
            if in_use and attempt < 2:
                continue
            raise
        return ports
    raise AssertionError("unreachable")


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        # Refused, reset or timed out (the plugin not enabled yet, the node
        # starting), or an HTTP error status: not ready.
        return False


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _executable(path: Path) -> str:
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # wheels do not always keep the exec bit
    return str(path)
