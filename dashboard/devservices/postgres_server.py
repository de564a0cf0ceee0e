"""PostgreSQL for the tests: `$SLUICE_TEST_POSTGRES_URL`, or a private cluster.

The private cluster runs Debian's binaries (the newest
`/usr/lib/postgresql/<major>/bin/`, `postgresql` installed with apt-get when
none is) with its data in `.sluice/postgres/`, trust authentication on
127.0.0.1 and a unix socket in that directory only, and durability off (it
holds test data). The machine's own PostgreSQL is never used. Like RabbitMQ it
is left running, so the next run reuses it (the port is read from its
`postmaster.pid`) instead of paying for initdb and start-up again. The
superuser is `postgres`, without a password. Root cannot run PostgreSQL, so
as root the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

from dashboard.devservices.apt import _apt_install
from dashboard.devservices.process import (
    LOG_DIR,
    STATE_DIR,
    ServiceError,
    _cache,
    _say,
    _tail,
    _wait,
    free_port,
)

DEBIAN_ROOT = Path("/usr/lib/postgresql")
DATA_DIR = STATE_DIR / "postgres"
LOG = LOG_DIR / "postgres.log"
# Test data only: no fsync, no full-page writes, no waiting for the WAL.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "'.'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}


def _bindir(install: bool) -> Path:
    """The bin directory of the newest Debian PostgreSQL, installing it if allowed."""

    def newest() -> Path | None:
        found = [
            path.parent
            for path in DEBIAN_ROOT.glob("*/bin/postgres")
            if path.parent.parent.name.isdigit()
        ]
        return max(found, key=lambda b: int(b.parent.name), default=None)

    found = newest()
    if found is None and install:
        _apt_install("postgresql")
        found = newest()
    if found is None:
        raise ServiceError(
            f"PostgreSQL is not installed under {DEBIAN_ROOT} (apt-get install postgresql)"
        )
    return found


def _server_user() -> dict[str, Any]:
    """subprocess arguments that run the server as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "PostgreSQL cannot run as root and there is no `postgres` user"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _run(argv: list[str], as_server: dict[str, Any], timeout: float = 120) -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                timeout=timeout,
                **as_server,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"`{Path(argv[0]).name}` failed: {exc}; log: {LOG}") from exc
    if done.returncode:
        raise ServiceError(f"`{Path(argv[0]).name}` failed; log: {LOG}\n{_tail(LOG)}")


def _give(path: Path, as_server: dict[str, Any]) -> None:
    if as_server:
        os.chown(path, as_server["user"], as_server["group"])


def _initdb(bindir: Path, as_server: dict[str, Any]) -> None:
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    DATA_DIR.mkdir(parents=True, mode=0o700)
    _give(DATA_DIR, as_server)
    _say(f"creating a PostgreSQL {bindir.parent.name} cluster in {DATA_DIR}")
    _run(
        [str(bindir / "initdb"), "-D", str(DATA_DIR), "-U", "postgres", "--auth=trust"]
        + ["--encoding=UTF8", "--no-locale", "--no-sync"],
        as_server,
    )
    with open(DATA_DIR / "postgresql.conf", "a") as conf:
        conf.write("\n# devservices\n")
        conf.writelines(f"{key} = {value}\n" for key, value in SERVER_SETTINGS.items())


def _url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def _answers(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(_url(port), connect_timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def _running_port() -> int | None:
    """The port of the server running on DATA_DIR, from its postmaster.pid, if it is alive."""
    try:
        lines = (DATA_DIR / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # stale: pg_ctl start replaces it
    except PermissionError:
        pass  # alive, under the postgres user
    return port


def _start(bindir: Path, as_server: dict[str, Any]) -> int:
    """Start the cluster on a free port, retrying if another process takes the port first."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.touch()
    _give(LOG, as_server)
    for attempt in range(3):
        port = free_port()
        try:
            _run(
                [str(bindir / "pg_ctl"), "start", "-D", str(DATA_DIR), "-l", str(LOG)]
                + ["-w", "-t", "60", "-o", f"-p {port}"],
                as_server,
            )
        except ServiceError:
            if attempt < 2 and "in use" in _tail(LOG, 20).lower():
                continue
            raise
        return port
    raise AssertionError("unreachable")


def postgres(install: bool = True) -> str:
    """Return a PostgreSQL URL: $SLUICE_TEST_POSTGRES_URL, or the private cluster's."""
    if os.environ.get("SLUICE_TEST_POSTGRES_URL"):
        return os.environ["SLUICE_TEST_POSTGRES_URL"]
    if "postgres" in _cache:
        return str(_cache["postgres"])
    bindir = _bindir(install)
    as_server = _server_user()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # Two runs starting at once would both initdb or start the same directory.
    with open(STATE_DIR / "postgres.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        port = _running_port()
        if port is not None:
            _wait(
                f"the running PostgreSQL on port {port} ({DATA_DIR})",
                functools.partial(_answers, port),
                30,
            )
        else:
            version = DATA_DIR / "PG_VERSION"
            if not version.exists() or version.read_text().strip() != bindir.parent.name:
                _initdb(bindir, as_server)
            _say(f"starting PostgreSQL ({DATA_DIR}); it stays running afterwards")
            port = _start(bindir, as_server)
            _wait(f"PostgreSQL on port {port}", functools.partial(_answers, port), 30)
    _cache["postgres"] = _url(port)
    return str(_cache["postgres"])
