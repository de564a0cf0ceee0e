"""apt-get install, for what the machine must provide (RabbitMQ, Chromium).

Needs root or password-less sudo; refreshes stale package lists once and
retries; one install at a time. Output goes to `.sluice/logs/apt.log`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from dashboard.devservices.process import LOG_DIR, ServiceError, _say, _tail

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
