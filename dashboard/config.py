"""The broker file named by SLUICE_CONFIG: read, checked, and kept in step with the DB.

    [[broker]]
    name = "rabbit-prod"
    kind = "rabbitmq"
    management_url = "http://127.0.0.1:15672"
    amqp_url = "amqp://ops:${RABBIT_PASSWORD}@127.0.0.1:5672/%2F"
    interval = 5

`${VAR}` is expanded from the environment when connecting, not when storing.
Whoever wrote this file has the shell, so its brokers may name any variable;
brokers added or changed in the admin only those in SLUICE_ADMIN_ENV_ALLOWLIST,
so that an admin account cannot send the worker's environment to a host of its
choosing.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from brokers.base import OPTIONS
from dashboard.models import Broker

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ImproperlyConfigured):
    def __init__(self, path: str | Path, entry: str, message: str) -> None:
        self.path, self.entry, self.message = str(path), entry, message
        super().__init__(f"{path}: {entry}: {message}")


@dataclass(frozen=True)
class BrokerEntry:
    name: str
    kind: str
    options: dict[str, Any]
    interval: int | None


def expand(value: Any, where: str = "", allowed: Collection[str] | None = None) -> Any:
    """Replace `${VAR}` in strings with the environment's value; only `allowed` names if given."""
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if allowed is not None and name not in allowed:
            raise ImproperlyConfigured(f"{where or 'broker option'} {refusal(name)}")
        if name not in os.environ:
            raise ImproperlyConfigured(
                f"{where or 'broker option'} uses ${{{name}}}, which is not set"
            )
        return os.environ[name]

    return VAR_RE.sub(sub, value)


def expand_options(
    options: dict[str, Any], broker: str = "", allowed: Collection[str] | None = None
) -> dict[str, Any]:
    return {
        key: expand(value, f"broker {broker!r} option {key!r}", allowed)
        for key, value in options.items()
    }


def admin_allowlist() -> frozenset[str]:
    from django.conf import settings

    return frozenset(settings.SLUICE_ADMIN_ENV_ALLOWLIST)


def connect_options(broker: Any) -> dict[str, Any]:
    """The options `broker` (a Broker row) connects with, `${VAR}`s expanded as its origin allows.

    ImproperlyConfigured names the variable that is unset or not allowed.
    """
    if not isinstance(broker.options, dict):  # a row written by hand or by an older version
        raise ImproperlyConfigured(
            f"broker {broker.name!r}: the stored options are not a JSON object; fix them in "
            "the admin"
        )
    odd = sorted(key for key, value in broker.options.items() if not isinstance(value, str))
    if odd:
        raise ImproperlyConfigured(f"broker {broker.name!r}: {', '.join(odd)} must be text")
    allowed = None if broker.source == "file" else admin_allowlist()
    return expand_options(broker.options, broker.name, allowed)


def refused_variables(options: dict[str, Any]) -> list[str]:
    """The `${VAR}` names in `options` that a broker from the admin may not expand."""
    allowed = admin_allowlist()
    found = {n for v in options.values() if isinstance(v, str) for n in VAR_RE.findall(v)}
    return sorted(found - allowed)


def refusal(name: str) -> str:
    return (
        f"uses ${{{name}}}, which brokers added in the admin may not read: only variables "
        "named in SLUICE_ADMIN_ENV_ALLOWLIST are expanded for them"
    )


def load(path: str | Path, check_variables: bool = True) -> list[BrokerEntry]:
    """The brokers the file declares, or ConfigError naming the file and entry.

    With `check_variables`, every `${VAR}` it names must be set.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "file", "not found") from None
    except OSError as exc:
        raise ConfigError(path, "file", f"cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "file", f"not valid TOML: {exc}") from None

    unknown = set(data) - {"broker"}
    if unknown:
        raise ConfigError(
            path, "file", f"unknown table(s) {', '.join(sorted(unknown))}; expected [[broker]]"
        )
    raw_entries = data.get("broker", [])
    if not isinstance(raw_entries, list):
        raise ConfigError(path, "file", "write each broker as a [[broker]] table")

    entries: list[BrokerEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_entries, start=1):
        label = f"[[broker]] #{index}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            label += f" ({raw['name']!r})"
        entries.append(_entry(path, label, raw, check_variables))
        if entries[-1].name in seen:
            raise ConfigError(path, label, "another broker already has this name")
        seen.add(entries[-1].name)
    return entries


def _entry(path: Path, label: str, raw: Any, check_variables: bool = True) -> BrokerEntry:
    if not isinstance(raw, dict):
        raise ConfigError(path, label, "expected a table")
    raw = dict(raw)
    name, kind, interval = raw.pop("name", None), raw.pop("kind", None), raw.pop("interval", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(path, label, "name must be 1-64 letters, digits, '-' or '_'")
    if kind not in OPTIONS:
        raise ConfigError(
            path, label, f"kind must be one of {', '.join(sorted(OPTIONS))}, not {kind!r}"
        )
    if interval is not None and (
        not isinstance(interval, int) or isinstance(interval, bool) or interval < 1
    ):
        raise ConfigError(path, label, "interval must be a whole number of seconds, at least 1")
    allowed = OPTIONS[kind]
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(
                path, label, f"unknown option {key!r} for {kind}; allowed: {', '.join(allowed)}"
            )
        if not isinstance(value, str):
            raise ConfigError(path, label, f"{key} must be a string")
    for key, required in allowed.items():
        if required and not raw.get(key):
            raise ConfigError(path, label, f"{key} is required for {kind}")
    if check_variables:
        for key, value in raw.items():
            try:
                expand(value, f"option {key!r}")
            except ImproperlyConfigured as exc:
                raise ConfigError(path, label, str(exc)) from None
    return BrokerEntry(name=name, kind=kind, options=raw, interval=interval)


def variables_check(**kwargs: Any) -> list[Any]:
    """System check: every `${VAR}` the broker file names is set.

    A check rather than part of start-up, so that commands that touch no broker
    (create_api_token, ensure_admin) opt out with `requires_system_checks = []`;
    migrate, check and runserver still stop on it, and a worker started without
    it shows that broker as down, naming the variable.
    """
    from django.conf import settings
    from django.core import checks

    if not settings.SLUICE_CONFIG:
        return []
    try:
        load(settings.SLUICE_CONFIG)
    except ConfigError as exc:
        return [checks.Error(str(exc), id="sluice.E001")]
    return []


_synced: tuple[str, float] | None = None


def sync(path: str | Path | None = None, force: bool = False) -> bool:
    """Make the DB's file-sourced brokers match the file; True if it read the file."""
    global _synced

    if path is None:
        from django.conf import settings

        path = settings.SLUICE_CONFIG
    if not path:
        return False
    mtime = Path(path).stat().st_mtime
    if not force and _synced == (str(path), mtime):
        return False
    try:
        entries = load(path)
    except ConfigError:
        _synced = (str(path), mtime)  # say so once per change of the file, not every tick
        raise
    names = []
    for entry in entries:
        names.append(entry.name)
        broker, created = Broker.objects.get_or_create(
            name=entry.name,
            defaults={
                "kind": entry.kind,
                "options": entry.options,
                "interval": entry.interval,
                "source": "file",
            },
        )
        changed = (broker.kind, broker.options, broker.interval, broker.source) != (
            entry.kind,
            entry.options,
            entry.interval,
            "file",
        )
        if not created and changed:
            broker.kind, broker.options, broker.interval, broker.source = (
                entry.kind,
                entry.options,
                entry.interval,
                "file",
            )
            broker.enabled = True
            broker.save()
    # A broker removed from the file stops being collected; its history stays.
    Broker.objects.filter(source="file", enabled=True).exclude(name__in=names).update(enabled=False)
    _synced = (str(path), mtime)
    return True
