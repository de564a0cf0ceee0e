"""Debian's Chromium, for the browser tests: found on PATH or installed with apt-get."""

from __future__ import annotations

import shutil

from dashboard.devservices.apt import _apt_install
from dashboard.devservices.process import ServiceError


def chromium(install: bool = True) -> str:
    """Return the path of Debian's Chromium, installing it with apt-get if allowed."""
    found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if not found and install:
        _apt_install("chromium")
        found = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if not found:
        raise ServiceError("Chromium is not installed (apt-get install chromium)")
    return found
