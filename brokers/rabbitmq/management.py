"""The RabbitMQ management HTTP API: one session, short timeouts, errors as BrokerError.

Used by `brokers.rabbitmq.adapter`; kept apart so that the adapter module stays about
what the broker's answers mean, and this one about how they are fetched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import requests

from brokers.base import BrokerError
from brokers.redact import redact_url

PAGE_SIZE = 500  # the management API's maximum


class _PageOutOfRange(BrokerError):
    """The listing shrank while it was being paged."""


class _NotFound(BrokerError):
    """A 404: the object asked for does not exist (or no longer does)."""


def http_base(url: str, option: str) -> tuple[SplitResult, str, str]:
    """`url` split, its base URL without credentials, and host:port; a clear error for a
    URL that is not http(s)://host:port (`option` names the setting).

    Credentials travel in the Authorization header only, so that URLs in exceptions
    and urllib3's debug log never carry them.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        parts, port = urlsplit(""), 0
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokerError(
            f"{option} must be http(s)://host:port, not {redact_url(url)!r}", retryable=False
        )
    hostport = parts.netloc.rpartition("@")[2]
    base_url = urlunsplit((parts.scheme, hostport, parts.path.rstrip("/"), "", ""))
    return parts, base_url, f"{parts.hostname}:{port}"


class ManagementAPI:
    """Authenticated requests to one management API, each with `timeout` seconds."""

    def __init__(
        self,
        management_url: str,
        amqp_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        parts, self.base_url, self.host = http_base(management_url, "management_url")
        amqp = urlsplit(amqp_url) if amqp_url else None
        self.username = _first(username, parts.username, amqp and amqp.username)
        password = _first(password, parts.password, amqp and amqp.password)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (self.username, password)
        self.requests_made = 0  # since construction; Snapshot.requests is per collection

    def close(self) -> None:
        self.session.close()

    def paged(self, path: str, columns: str) -> list[dict[str, Any]]:
        """Every item of a pageable listing, PAGE_SIZE at a time.

        No `sort`: the default order (vhost, name) lets the broker cut the page
        before computing statistics. An explicit `sort=name` should too, but in
        3.10 (fixed in current releases) the parameter reaches `column_strategy`
        as a bare string that never matches a basic column, so the broker
        computes statistics for every queue on every page ("slow query mode"):
        on 3.10.8 with 5,000 queues, 300 ms a page instead of 120 ms.
        """
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"page": page, "page_size": PAGE_SIZE, "columns": columns}
            try:
                body = self.get(path, params)
            except _PageOutOfRange:
                break
            if isinstance(body, list):  # a broker that does not page answers with everything
                return body
            items.extend(body["items"])
            if page >= body["page_count"]:
                break
            page += 1
        return items

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def get_or_none(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """`get`, with None for a 404 (a queue deleted since it was listed)."""
        try:
            return self._request("GET", path, params=params)
        except _NotFound:
            return None

    def post(self, path: str, json: Any) -> Any:
        """POST `json` to `path` (e.g. a queue's `/get`) and return the JSON answer."""
        return self._request("POST", path, json=json)

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        self.requests_made += 1
        try:
            resp = self.session.request(method, self.base_url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            raise self._refused(resp, path)
        try:
            return resp.json()
        except RecursionError:
            # RabbitMQ keeps a header nested thousands of levels deep; Python's JSON cannot read it.
            raise BrokerError(
                f"{self.host} answered {path} with JSON nested too deeply to read"
                " (a message with headers nested thousands of levels deep?)",
                retryable=False,
            ) from None
        except ValueError:
            raise BrokerError(
                f"{self.host} answered {path} with something that is not JSON;"
                " is management_url the management API's address?",
                retryable=False,
            ) from None

    def _unreachable(self, exc: requests.RequestException) -> BrokerError:
        # requests' own messages are long and name the URL; say what happened.
        if isinstance(exc, requests.exceptions.SSLError):
            return BrokerError(f"TLS with {self.host} failed: {_cause(exc)}", retryable=False)
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return BrokerError(f"cannot reach {self.host}: no answer within {self.timeout:g} s")
        if isinstance(exc, requests.exceptions.Timeout):
            return BrokerError(f"{self.host} did not answer within {self.timeout:g} s")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return BrokerError(f"cannot reach {self.host}: {_cause(exc)}")
        return BrokerError(f"request to {self.host} failed: {type(exc).__name__}")

    def _refused(self, resp: requests.Response, path: str) -> BrokerError:
        try:
            body = resp.json()
            error, reason = str(body.get("error", "")), str(body.get("reason", ""))[:200]
        except (ValueError, AttributeError):
            error, reason = "", resp.reason or ""
        status = resp.status_code
        if status == 400 and error == "page_out_of_range":
            return _PageOutOfRange(reason)
        if status == 401:
            return BrokerError(
                f"management API refused the credentials of {self.username!r} ({status}: {reason})",
                retryable=False,
            )
        if status == 403:
            return BrokerError(
                f"user {self.username!r} may not read {path} ({status}: {reason})", retryable=False
            )
        if status == 404:
            return _NotFound(f"not found: {self.base_url}{path} (404)", retryable=False)
        return BrokerError(
            f"management API failed on {path} ({status}: {reason or error})",
            retryable=status >= 500 or status == 429,
        )


def _first(given: str | None, from_management: str | None, from_amqp: str | None) -> str:
    """The explicit value, else the management URL's, else the AMQP URL's, else guest."""
    if given is not None:
        return given
    for v in (from_management, from_amqp):
        if v is not None:
            return unquote(v)  # URLs carry them percent-encoded
    return "guest"


def _cause(exc: BaseException) -> str:
    """A short reason for a connection failure, found in requests' nested message."""
    text = str(exc).lower()
    for needle, said in (
        ("refused", "connection refused"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("reset by peer", "connection reset"),
        ("remotedisconnected", "connection closed without an HTTP answer (is this the AMQP port?)"),
        ("badstatusline", "not an HTTP server (is this the AMQP port?)"),
        ("certificate verify failed", "certificate verify failed"),
        ("wrong version number", "the port does not speak TLS"),
    ):
        if needle in text:
            return said
    return type(exc).__name__


def quote_path(*segments: str) -> str:
    """`/seg/seg` with each segment fully escaped: vhost "/" is %2F, "a/b" is a%2Fb."""
    return "".join("/" + quote(s, safe="") for s in segments)
