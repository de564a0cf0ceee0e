"""A message's form and its sending, one function per channel type.

- webhook: a JSON body, POSTed; with a secret, signed `X-Sluice-Signature:
  sha256=<hex>`, the HMAC-SHA256 of the raw body keyed with the secret. Every
  retry of one notification carries the same `X-Sluice-Delivery`, so receivers
  can drop duplicates; `X-Sluice-Timestamp` (also in the signed body) lets them
  refuse old ones.
- slack: Slack's incoming-webhook form, `{"text": ..., "blocks": [...]}`.
- email: plain text through Django's mail backend (SLUICE_EMAIL_*).

`send` never raises for a failure of the far end: it returns a `Result`. The
channel's `${VAR}`s are expanded here, only for the send; no error text carries
the channel's address or secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from brokers.redact import MASK, VAR_REF
from dashboard import config
from dashboard.models import AlertChannel
from dashboard.models.alerts import EMAIL, SLACK, WEBHOOK

# Seconds to connect, then to wait for the answer: a slow receiver must not hold up the rest.
TIMEOUT = (3.0, 10.0)
SIGNATURE = "X-Sluice-Signature"
DELIVERY = "X-Sluice-Delivery"
TIMESTAMP = "X-Sluice-Timestamp"


@dataclass(frozen=True)
class Message:
    """What one notification says, whatever the channel."""

    delivery: str  # the notification's id: the same on every retry
    event: str  # firing, repeat, resolved (or "test")
    severity: str
    broker: str
    cause: str
    summary: str
    since: datetime  # when the incident started
    at: datetime  # when it opened, resolved or was still open
    link: str
    incident: str = ""  # the incident's public id
    destination: str = ""  # the destination's name; "" for the broker itself
    key: str = ""
    seq: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def place(self) -> str:
        return f"{self.destination} on {self.broker}" if self.destination else self.broker

    @property
    def superseded_by(self) -> str:
        """The cause of the incident that took over from this one at the same place, if any."""
        return str(self.evidence.get("superseded_by") or "") if self.event == "resolved" else ""

    @property
    def headline(self) -> str:
        if self.superseded_by:
            return f"Superseded by {self.superseded_by} [{self.severity}]: {self.cause} on {self.place}"
        verb = {
            "firing": "Firing",
            "repeat": "Still firing",
            "resolved": "Resolved",
            "test": "Test",
        }.get(self.event, self.event)
        return f"{verb} [{self.severity}]: {self.cause} on {self.place}"

    @property
    def when(self) -> str:
        if self.superseded_by:
            return (
                f"since {stamp(self.since)}, superseded {stamp(self.at)}: "
                f"the {self.superseded_by} incident on the same place goes on from here"
            )
        if self.event == "resolved":
            return f"since {stamp(self.since)}, resolved {stamp(self.at)}"
        return f"since {stamp(self.since)}"

    def payload(self, timestamp: int) -> dict[str, Any]:
        return {
            "delivery": self.delivery,
            "event": self.event,
            "seq": self.seq,
            "timestamp": timestamp,
            "incident": self.incident,
            "broker": self.broker,
            "destination": self.destination,
            "key": self.key,
            "cause": self.cause,
            "severity": self.severity,
            "summary": self.summary,
            "evidence": self.evidence,
            "since": self.since.isoformat(),
            "at": self.at.isoformat(),
            "link": self.link,
            "superseded_by": self.superseded_by or None,
        }

    def text(self) -> str:
        lines = [self.headline, "", self.summary, "", self.when.capitalize() + "."]
        if self.evidence:
            lines += ["", "Evidence:"]
            lines += [f"  {k}: {v}" for k, v in evidence_items(self.evidence)]
        lines += ["", self.link]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None = None  # the HTTP status, when there was an answer
    error: str = ""
    duration_ms: int = 0


class ChannelError(Exception):
    """The channel cannot be used as stored: a `${VAR}` unset or not allowed, a bad secret."""


def stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def evidence_items(evidence: dict[str, Any], most: int = 12) -> list[tuple[str, str]]:
    items = []
    for key, value in list(evidence.items())[:most]:
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        items.append((str(key), shown if len(shown) <= 200 else shown[:199] + "…"))
    return items


def sign(secret: str, body: bytes) -> str:
    """The X-Sluice-Signature value of `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def expand(channel: AlertChannel, value: str, what: str) -> str:
    """`value` with its `${VAR}`s from the environment, as the channel's origin allows."""
    allowed = None if channel.source == "file" else config.admin_allowlist()
    for name in config.VAR_RE.findall(value):
        if allowed is not None and name not in allowed:
            raise ChannelError(
                f"channel {channel.name!r}: the {what} uses ${{{name}}}, which channels added in "
                "the admin may not read: only variables named in SLUICE_ADMIN_ENV_ALLOWLIST"
            )
    try:
        return str(config.expand(value, f"channel {channel.name!r}: the {what}"))
    except ImproperlyConfigured as exc:
        raise ChannelError(str(exc)) from None


def secret_of(channel: AlertChannel) -> str:
    if not channel.secret:
        return ""
    if not VAR_REF.fullmatch(channel.secret):
        raise ChannelError(
            f"channel {channel.name!r}: the secret must be written as ${{VAR}}, naming the "
            "environment variable that holds it"
        )
    return expand(channel, channel.secret, "secret")


def send(channel: AlertChannel, message: Message) -> Result:
    """Send `message` through `channel`; the outcome, never an exception for a failed send."""
    started = time.monotonic()
    hidden: list[str] = []
    try:
        sender = SENDERS[channel.type]
    except KeyError:
        return Result(False, error=f"unknown channel type {channel.type!r}")
    try:
        result = sender(channel, message, hidden)
    except ChannelError as exc:
        result = Result(False, error=str(exc))
    error = result.error
    for value in hidden:
        if value:
            error = error.replace(value, MASK)
    ms = int((time.monotonic() - started) * 1000)
    return Result(result.ok, result.status, error[:1000], ms)


def _webhook(channel: AlertChannel, message: Message, hidden: list[str]) -> Result:
    url = expand(channel, channel.url, "url")
    secret = secret_of(channel)
    hidden += [url, secret]
    timestamp = int(time.time())
    body = json.dumps(message.payload(timestamp), separators=(",", ":"), default=str).encode()
    headers = {DELIVERY: message.delivery, TIMESTAMP: str(timestamp)}
    if secret:
        headers[SIGNATURE] = sign(secret, body)
    return _post(url, body, headers)


def _slack(channel: AlertChannel, message: Message, hidden: list[str]) -> Result:
    url = expand(channel, channel.url, "url")
    hidden.append(url)
    body = json.dumps(slack_body(message)).encode()
    return _post(url, body, {})


def slack_body(message: Message) -> dict[str, Any]:
    """Slack's incoming-webhook form: `text` for notifications, `blocks` for the channel."""

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.headline[:150]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{esc(message.summary)[:2900]}\n_{message.when}_"},
        },
    ]
    if message.evidence:
        lines = [f"*{esc(k)}*: {esc(v)}" for k, v in evidence_items(message.evidence)]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<{message.link}|Open in Sluice>"}],
        }
    )
    return {"text": f"{message.headline}: {message.summary}"[:3000], "blocks": blocks}


def _post(url: str, body: bytes, headers: dict[str, str]) -> Result:
    if not url.startswith(("http://", "https://")):
        return Result(False, error="the url must start with http:// or https://")
    headers = {"Content-Type": "application/json", "User-Agent": "Sluice", **headers}
    try:
        # No redirects: a signed body goes to the address given, nowhere else.
        response = requests.post(
            url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as exc:
        return Result(False, error=network_error(exc))
    if 200 <= response.status_code < 300:
        return Result(True, response.status_code)
    said = " ".join(response.text[:200].split())
    error = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    return Result(False, response.status_code, f"{error}: {said}" if said else error)


ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"\)\]]+)")


def network_error(exc: requests.RequestException) -> str:
    """What went wrong, in words that carry no URL (a webhook's address can be its secret)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, requests.ConnectionError):
        found = ERRNO.search(str(exc))
        return f"cannot connect: {found.group(1).strip()}" if found else "cannot connect"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.URLRequired)):
        return "the url is not valid"
    return f"the request failed ({type(exc).__name__})"


def _email(channel: AlertChannel, message: Message, hidden: list[str]) -> Result:
    to = channel.recipient_list
    if not to:
        return Result(False, error="no recipients")
    email = EmailMessage(
        subject=f"[Sluice] {message.headline}"[:250],
        body=message.text(),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        headers={DELIVERY: message.delivery},
    )
    try:
        email.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{who} ({code})" for who, (code, _) in exc.recipients.items())
        return Result(False, error=f"SMTP refused the recipients: {refused}")
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        return Result(False, error=f"SMTP {exc.smtp_code}: {said}".strip())
    except smtplib.SMTPException as exc:
        return Result(False, error=f"SMTP error: {exc}")
    except OSError as exc:  # refused, unreachable, timed out
        return Result(False, error=f"cannot reach the mail server: {exc.strerror or exc}")
    return Result(True)


SENDERS: dict[str, Callable[[AlertChannel, Message, list[str]], Result]] = {
    WEBHOOK: _webhook,
    SLACK: _slack,
    EMAIL: _email,
}
