"""What of a broker's options may be shown: passwords masked, URL passwords redacted.

A `${VAR}` reference names a secret without revealing it, so it is shown as written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The options of any kind (brokers.base.OPTIONS) that hold a secret.
SECRET_OPTIONS = {"password", "sasl_password", "token"}

VAR_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def redact_url(url: str) -> str:
    """`url` with any password replaced: amqp://guest:•••@host/."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "•••"
    if parts.password is None and "@" not in parts.netloc:
        return url
    if parts.password and VAR_REF.fullmatch(parts.password):
        return url  # a ${VAR} reference names the secret without revealing it
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:•••@{hostport}" if user else f"•••@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


MASK = "•••"


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options fit to show: passwords masked, URL passwords redacted, ${VAR} kept."""
    if not isinstance(options, dict):  # a row written by hand or by an older version
        return {"unreadable": "the stored options are not a JSON object"}
    shown: dict[str, Any] = {}
    for key, value in options.items():
        if key in SECRET_OPTIONS and isinstance(value, str) and not VAR_REF.fullmatch(value):
            shown[key] = MASK
        elif isinstance(value, str) and "://" in value:
            shown[key] = redact_url(value)
        else:
            shown[key] = value
    return shown
