"""The broker file named by SLUICE_CONFIG: read, checked, and kept in step with the DB.

    [[broker]]
    name = "rabbit-prod"
    kind = "rabbitmq"
    management_url = "http://127.0.0.1:15672"
    amqp_url = "amqp://ops:${RABBIT_PASSWORD}@127.0.0.1:5672/%2F"
    interval = 5

    [[alert_rule]]
    name = "orders-backlog"
    metric = "backlog"
    threshold = 10000
    destination = "orders.*"

    [[alert_channel]]
    name = "ops-hook"
    type = "webhook"
    url = "https://hooks.example.com/sluice"
    secret = "${SLUICE_HOOK_SECRET}"

`${VAR}` is expanded from the environment when connecting (or sending), not when
storing. Whoever wrote this file has the shell, so its entries may name any
variable; brokers and channels added or changed in the admin only those in
SLUICE_ADMIN_ENV_ALLOWLIST, so that an admin account cannot send the worker's
environment to a host of its choosing.

Entries from the file are marked source="file" and follow it: changed when it
changes, and when removed from it, a broker or channel is turned off and a rule
deleted. Entries made in the admin are left alone.
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
from django.db import models, transaction

from brokers.base import OPTIONS
from dashboard import masking
from dashboard.models import AlertChannel, AlertRule, Broker
from dashboard.models.alerts import CHANNEL_TYPES, EMAIL, METRICS, THRESHOLD, WEBHOOK
from dashboard.models.incidents import SEVERITIES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DETECTOR_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TABLES = ("broker", "alert_rule", "alert_channel", "mask")


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


@dataclass(frozen=True)
class AlertEntry:
    """An [[alert_rule]] or [[alert_channel]]: its name and the other fields of its row."""

    name: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class FileConfig:
    brokers: list[BrokerEntry]
    rules: list[AlertEntry]
    channels: list[AlertEntry]


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

    The whole file is checked, its alert rules and channels too. With
    `check_variables`, every `${VAR}` it names must be set.
    """
    return read(path, check_variables).brokers


def read(path: str | Path, check_variables: bool = True) -> FileConfig:
    """Everything the file declares, or ConfigError naming the file, the entry and the problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "file", "not found") from None
    except OSError as exc:
        raise ConfigError(path, "file", f"cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "file", f"not valid TOML: {exc}") from None

    unknown = set(data) - set(TABLES)
    if unknown:
        raise ConfigError(
            path,
            "file",
            f"unknown table(s) {', '.join(sorted(unknown))}; expected [[broker]], "
            "[[alert_rule]], [[alert_channel]] or [[mask]]",
        )
    # Mask rules are read by dashboard.masking when used; a bad one fails here, at start.
    for label, raw in _tables(path, data, "mask"):
        try:
            masking.rule_from(raw, label)
        except masking.MaskError as exc:
            raise ConfigError(path, label, str(exc).removeprefix(f"{label}: ")) from None
    brokers = [
        _entry(path, label, raw, check_variables) for label, raw in _tables(path, data, "broker")
    ]
    rules = [_rule(path, label, raw) for label, raw in _tables(path, data, "alert_rule")]
    channels = [
        _channel(path, label, raw, check_variables)
        for label, raw in _tables(path, data, "alert_channel")
    ]
    return FileConfig(brokers, rules, channels)


def _tables(path: Path, data: dict[str, Any], table: str) -> list[tuple[str, Any]]:
    """The [[table]] entries, each with its label for errors; names must not repeat."""
    raw_entries = data.get(table, [])
    what = table.replace("alert_", "")
    if not isinstance(raw_entries, list):
        raise ConfigError(path, "file", f"write each {what} as a [[{table}]] table")
    found = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_entries, start=1):
        label = f"[[{table}]] #{index}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            label += f" ({raw['name']!r})"
            if raw["name"] in seen:
                raise ConfigError(path, label, f"another {what} already has this name")
            seen.add(raw["name"])
        found.append((label, raw))
    return found


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


RULE_KEYS = (
    "name",
    "detector",
    "metric",
    "threshold",
    "broker",
    "destination",
    "severity",
    "enabled",
)
CHANNEL_KEYS = (
    "name", "type", "url", "recipients", "secret", "min_severity", "repeat_seconds", "enabled",
)  # fmt: skip
SEVERITY_NAMES = [name for name, _ in SEVERITIES]


def _fields(path: Path, label: str, raw: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(path, label, "expected a table")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(
            path, label, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}"
        )
    if not isinstance(raw.get("name"), str) or not NAME_RE.match(raw["name"]):
        raise ConfigError(path, label, "name must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(raw.get("enabled", True), bool):
        raise ConfigError(path, label, "enabled must be true or false")
    return dict(raw)


def _text(path: Path, label: str, raw: dict[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(path, label, f"{key} must be a string")
    return value


def _severity(path: Path, label: str, raw: dict[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if value not in SEVERITY_NAMES and not (value == "" and default == ""):
        raise ConfigError(
            path, label, f"{key} must be one of {', '.join(SEVERITY_NAMES)}, not {value!r}"
        )
    return str(value)


def _rule(path: Path, label: str, raw: Any) -> AlertEntry:
    raw = _fields(path, label, raw, RULE_KEYS)
    detector = _text(path, label, raw, "detector", THRESHOLD)
    if not DETECTOR_RE.match(detector):
        raise ConfigError(
            path, label, f'detector must be "{THRESHOLD}" or a built-in detector\'s name'
        )
    metric = _text(path, label, raw, "metric")
    threshold = raw.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool)
    ):
        raise ConfigError(path, label, "threshold must be a number")
    if detector == THRESHOLD:
        if metric not in METRICS:
            raise ConfigError(
                path, label, f"metric must be one of {', '.join(METRICS)}, not {metric!r}"
            )
        if threshold is None:
            raise ConfigError(path, label, "threshold is required for a threshold rule")
    elif metric:
        raise ConfigError(path, label, "metric is for threshold rules only")
    fields = {
        "detector": detector,
        "metric": metric,
        "threshold": None if threshold is None else float(threshold),
        "broker": _text(path, label, raw, "broker", "*"),
        "destination": _text(path, label, raw, "destination", "*"),
        "severity": _severity(path, label, raw, "severity", ""),
        "enabled": raw.get("enabled", True),
    }
    return AlertEntry(raw["name"], fields)


def _channel(path: Path, label: str, raw: Any, check_variables: bool = True) -> AlertEntry:
    raw = _fields(path, label, raw, CHANNEL_KEYS)
    types = [name for name, _ in CHANNEL_TYPES]
    kind = raw.get("type")
    if kind not in types:
        raise ConfigError(path, label, f"type must be one of {', '.join(types)}, not {kind!r}")
    url = _text(path, label, raw, "url")
    secret = _text(path, label, raw, "secret")
    recipients = raw.get("recipients", [])
    if isinstance(recipients, str):
        recipients = [r.strip() for r in recipients.split(",") if r.strip()]
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ConfigError(path, label, "recipients must be a list of email addresses")
    if kind == EMAIL:
        if not recipients:
            raise ConfigError(path, label, "recipients is required for email")
        odd = [r for r in recipients if "@" not in r or "," in r]
        if odd:
            raise ConfigError(path, label, f"not an email address: {', '.join(odd)}")
        if url or secret:
            raise ConfigError(path, label, "url and secret are for webhook and slack channels")
    else:
        if not url:
            raise ConfigError(path, label, f"url is required for {kind}")
        if not url.startswith(("http://", "https://", "${")):
            raise ConfigError(path, label, "url must start with http:// or https:// (or be ${VAR})")
        if recipients:
            raise ConfigError(path, label, "recipients are for email channels")
    if secret and kind != WEBHOOK:
        raise ConfigError(path, label, "only webhook channels are signed; remove the secret")
    if secret and not VAR_RE.fullmatch(secret):
        raise ConfigError(
            path,
            label,
            "secret must be written as ${VAR}, naming the environment variable that holds it, "
            "so that the file and the database never hold it",
        )
    repeat = raw.get("repeat_seconds", 0)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 0:
        raise ConfigError(
            path, label, "repeat_seconds must be a whole number of seconds (0: never)"
        )
    if check_variables:
        for key, value in (("url", url), ("secret", secret)):
            try:
                expand(value, key)
            except ImproperlyConfigured as exc:
                raise ConfigError(path, label, str(exc)) from None
    fields = {
        "type": kind,
        "url": url,
        "recipients": ", ".join(recipients),
        "secret": secret,
        "min_severity": _severity(path, label, raw, "min_severity", "warning"),
        "repeat_seconds": repeat,
        "enabled": raw.get("enabled", True),
    }
    return AlertEntry(raw["name"], fields)


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
    """Make the DB's file-sourced brokers, alert rules and channels match the file; True if
    it read the file."""
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
        found = read(path)
    except ConfigError:
        _synced = (str(path), mtime)  # say so once per change of the file, not every tick
        raise
    names = []
    for entry in found.brokers:
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
    sync_alerts(found)
    _synced = (str(path), mtime)
    return True


def sync_alerts(found: FileConfig) -> None:
    """Make the DB's file-sourced alert rules and channels match the file's."""
    with transaction.atomic():
        for rule in found.rules:
            _put(AlertRule, rule)
        # A rule is a setting, not a record: gone from the file, gone. (Turned off, a
        # rule on a built-in detector would turn that detector off.)
        rules = [r.name for r in found.rules]
        AlertRule.objects.filter(source="file").exclude(name__in=rules).delete()
        for channel in found.channels:
            _put(AlertChannel, channel)
        # Kept with what was sent through it, but no longer used.
        channels = [c.name for c in found.channels]
        AlertChannel.objects.filter(source="file", enabled=True).exclude(name__in=channels).update(
            enabled=False
        )


def _put(model: type[models.Model], entry: AlertEntry) -> None:
    """Create or update the row named `entry.name` to the file's fields (and source)."""
    wanted = {**entry.fields, "source": "file"}
    row, created = model.objects.get_or_create(name=entry.name, defaults=wanted)
    if not created and any(getattr(row, k) != v for k, v in wanted.items()):
        for key, value in wanted.items():
            setattr(row, key, value)
        row.save()
